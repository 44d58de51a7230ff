"""The failures the command line tells apart (a leaf: imports nothing of agentrl).

`agentrl` prints a `UserError` as one line on stderr, `agentrl: <message>`, and exits 2; an `ActorFailure`
exits 1 after its message (which carries the remote traceback). Anything else is a bug: a traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix: a bad config, data file or row, argument, or a missing file.

    The message is one line and names the bad thing. A ValueError, so callers that catch ValueError
    (and tests that expect one) keep working.
    """


class ActorFailure(RuntimeError):
    """An actor crashed; carries its name and the original traceback."""


class RunFailure(ActorFailure):
    """The run cannot go on though no actor crashed (every group it starts fails): exits 1, its message one line."""
