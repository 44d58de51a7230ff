"""Where agentrl keeps what it builds and caches: one root, `$AGENTRL_CACHE` or `~/.cache/agentrl`."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The root of every cache (tiny models, the demo image index, tool results, judgments)."""
    return Path(os.environ.get("AGENTRL_CACHE") or os.path.expanduser("~/.cache/agentrl"))
