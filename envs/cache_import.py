"""`agentrl import-cache`: convert a pickled image-search cache (as FVQA ships it, keyed by data_id)
into a plain folder — `<data_id>/meta.json` with `title_list`, and `img_000.png`... — that the `cache`
backend reads without ever unpickling. Unpickling runs code from the file, so it is refused unless the
user says the file is trusted.

Nothing is written outside `--out`: an entry whose data_id is not a plain folder name (empty, `.` or
`..`, a path separator, a NUL byte, an absolute path, too long) is refused and counted, and the rest is
imported; so is an image that does not decode or claims more pixels than `agentrl.images` allows (its
title is kept, without the image).
"""

from __future__ import annotations

import json
import os
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrl.errors import UserError
from agentrl.images import ImageError, decode_image, encode_png, image_size

MAX_NAME_BYTES = 255  # the longest file name common file systems take


class UntrustedPickle(UserError):
    """The pickle was not declared trusted (`--trust-pickle`)."""


@dataclass
class ImportReport:
    """What one import did: entries written, and entries or images left out, by reason."""

    imported: int = 0
    skipped: Counter = field(default_factory=Counter)


def _to_png(obj: Any) -> bytes | None:
    """An image (encoded bytes or a PIL image) as PNG; None for no image; ImageError if it does not decode
    or claims more pixels than agentrl.images allows."""
    if obj is None:
        return None
    if isinstance(obj, (bytes, bytearray)):
        return encode_png(decode_image(bytes(obj)))  # the pixel cap, read from the header before decoding
    if not hasattr(obj, "save"):
        return None
    try:  # an object from the pickle: any exception means "not a usable image"
        png = encode_png(obj.convert("RGB"))
    except Exception as e:
        raise ImageError(f"unreadable image ({type(e).__name__})") from None
    image_size(png)  # the same pixel cap as for bytes
    return png


def _entries(value: Any) -> list[tuple[str, Any]]:
    """(title, image) pairs from the shapes seen in released caches."""
    if isinstance(value, dict):
        titles = value.get("title_list") or value.get("titles") or []
        images = value.get("image_list") or value.get("images") or value.get("thumbnails") or [None] * len(titles)
        if not isinstance(titles, (list, tuple)) or not isinstance(images, (list, tuple)):
            raise ValueError("titles and images must be lists")
        images = list(images) + [None] * (len(titles) - len(images))
        return [(str(t), image) for t, image in zip(titles, images, strict=False)]
    if isinstance(value, list):
        return [(str(r.get("title", "")), r.get("thumbnail", r.get("image"))) for r in value if isinstance(r, dict)]
    raise ValueError(f"unrecognised cache entry of type {type(value).__name__}")


def safe_folder(root: Path, data_id: Any) -> Path | None:
    """`root/<data_id>` when data_id names one plain folder directly inside `root`, else None."""
    name = str(data_id)
    if (not name or name in (".", "..") or "\0" in name or "/" in name or "\\" in name or os.path.isabs(name)
            or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES):
        return None
    folder = root / name
    # a folder already there may be a link out of `root`: follow it to be sure
    if folder.resolve().parent != root.resolve():
        return None
    return folder


def _write_entry(folder: Path, entries: list[tuple[str, Any]], report: ImportReport) -> None:
    folder.mkdir(exist_ok=True)
    for i, (_, image) in enumerate(entries):
        try:
            png = _to_png(image)
        except ValueError:
            report.skipped["unreadable image"] += 1
            continue
        if png:
            (folder / f"img_{i:03d}.png").write_bytes(png)
    (folder / "meta.json").write_text(json.dumps({"title_list": [t for t, _ in entries]}))


def _load(path: str) -> dict[Any, Any]:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)  # noqa: S301  the user declared the file trusted
    except OSError:
        raise
    except Exception as e:  # unpickling can fail in any way a garbled file makes it
        raise UserError(f"'{path}': not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise UserError(f"'{path}': expected a dict keyed by data_id, got {type(data).__name__}")
    return data


def import_pickle(path: str, out: str, trusted: bool = False) -> ImportReport:
    """Convert the pickled cache at `path` into the folder `out`; UserError for a file that is not one."""
    if not trusted:
        raise UntrustedPickle(f"refusing to unpickle '{path}': unpickling can run code from the file; "
                              "pass --trust-pickle if you trust its source")
    if not out:
        raise UserError("import-cache: --out must name a folder")
    data = _load(path)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    report = ImportReport()
    for data_id, value in data.items():
        try:
            entries = _entries(value)
        except ValueError as e:
            raise UserError(f"'{path}': data_id {str(data_id)!r}: {e}") from None
        folder = safe_folder(root, data_id)
        if folder is None:
            report.skipped["unsafe data_id"] += 1
            continue
        _write_entry(folder, entries, report)
        report.imported += 1
    return report
