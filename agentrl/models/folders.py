"""Model folders agentrl makes itself (built or converted), each made once under a file lock."""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from pathlib import Path


def made_once(out: Path, make: Callable[[Path], object]) -> str:
    """`out`, made by `make(out)` unless it already holds a model. Several actors may ask at once: one makes
    it, the others wait for it (a lock file beside it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").exists():
            make(out)
    return str(out)
