"""`agentrl import-cache`: convert a pickled image-search cache (as FVQA ships it, keyed by data_id)
into a plain folder — `<data_id>/meta.json` with `title_list`, and `img_000.png`... — that the `cache`
backend reads without ever unpickling. Unpickling runs code from the file, so it is refused unless the
user says the file is trusted."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any


class UntrustedPickle(RuntimeError):
    pass


def _to_png(obj: Any) -> bytes | None:
    from PIL import Image

    if obj is None:
        return None
    if isinstance(obj, (bytes, bytearray)):
        img = Image.open(io.BytesIO(obj))
    elif hasattr(obj, "save"):
        img = obj
    else:
        return None
    out = io.BytesIO()
    img.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def _entries(value: Any) -> list[tuple[str, Any]]:
    """(title, image) pairs from the shapes seen in released caches."""
    if isinstance(value, dict):
        titles = value.get("title_list") or value.get("titles") or []
        images = value.get("image_list") or value.get("images") or value.get("thumbnails") or [None] * len(titles)
        return list(zip(titles, list(images) + [None] * (len(titles) - len(images)), strict=False))
    if isinstance(value, list):
        return [(str(r.get("title", "")), r.get("thumbnail", r.get("image"))) for r in value if isinstance(r, dict)]
    raise ValueError(f"unrecognised cache entry of type {type(value).__name__}")


def import_pickle(path: str, out: str, trusted: bool = False) -> int:
    if not trusted:
        raise UntrustedPickle(f"refusing to unpickle '{path}': unpickling can run code from the file; "
                              "pass --trust-pickle if you trust its source")
    with open(path, "rb") as f:
        data = pickle.load(f)  # noqa: S301  the user declared the file trusted
    if not isinstance(data, dict):
        raise ValueError(f"'{path}': expected a dict keyed by data_id, got {type(data).__name__}")
    root = Path(out)
    for data_id, value in data.items():
        folder = root / str(data_id)
        folder.mkdir(parents=True, exist_ok=True)
        entries = _entries(value)
        for i, (_, image) in enumerate(entries):
            png = _to_png(image)
            if png:
                (folder / f"img_{i:03d}.png").write_bytes(png)
        (folder / "meta.json").write_text(json.dumps({"title_list": [t for t, _ in entries]}))
    return len(data)
