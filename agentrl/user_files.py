"""Files a user names (configs, data, images, model files): regular files only, bounded in size.

A device (`/dev/zero` reads for ever), a FIFO (opening it waits for a writer), a socket or a kernel
pseudo-file under /proc or /sys (`/proc/self/mem` claims to be a regular file of 0 bytes) is refused with
one line before anything is read, as is a file over the reader's cap.
"""

from __future__ import annotations

import os
import stat

PSEUDO_FILE_ROOTS = ("/proc/", "/sys/", "/dev/")


def check_user_file(path: str, max_bytes: int | None = None) -> int:
    """The size of `path` if it is a regular file within `max_bytes`; ValueError (one line, without the path:
    the caller names it) otherwise."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValueError(e.strerror or type(e).__name__) from None
    real = os.path.realpath(path)
    if not stat.S_ISREG(st.st_mode) or real.startswith(PSEUDO_FILE_ROOTS):
        raise ValueError("not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ValueError(f"{st.st_size} bytes, over the {max_bytes} allowed")
    return st.st_size


def read_user_file(path: str, max_bytes: int) -> bytes:
    """The bytes of a checked file (never more than `max_bytes`, even if it grew since the check)."""
    check_user_file(path, max_bytes)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"over the {max_bytes} bytes allowed")
    return data
