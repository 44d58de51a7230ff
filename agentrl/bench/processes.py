"""The processes of one run, found by a tag in their environment.

A driver started with `tagged_env(tag)` passes the tag to everything it starts: Ray's GCS and raylets,
the workers they fork, vLLM's engine processes. The tag survives re-parenting (a killed driver's cluster
lives on under init), so a run's processes can be counted and killed without touching any other Ray
cluster on the machine — another test, another user's job.
"""

from __future__ import annotations

import os
import signal
import uuid

PROCESS_TAG_VAR = "AGENTRL_PROCESS_TAG"


def new_tag() -> str:
    """A tag no other run has."""
    return uuid.uuid4().hex


def tagged_env(tag: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the tag added."""
    return {**(os.environ if base is None else base), PROCESS_TAG_VAR: tag}


def tagged_processes(tag: str) -> set[int]:
    """PIDs of the live processes whose environment holds `tag` (this process excluded)."""
    needle = f"{PROCESS_TAG_VAR}={tag}".encode()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:  # empty for a zombie: not counted
                environ = f.read().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if needle in environ:
            found.add(int(name))
    return found


def kill_tagged(tag: str) -> set[int]:
    """SIGKILL every process of the run (a node lost at once); the PIDs signalled."""
    pids = tagged_processes(tag)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids
