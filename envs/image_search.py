"""The `image_search` tool: the trajectory's input image in, the top k results out, each a thumbnail
and a title, put into the conversation as images plus text.

Backends: `serpapi_lens` (SerpAPI's Google Lens API, key from SERPAPI_API_KEY; needs the image's URL),
`cache` (results computed earlier, keyed by data_id, in the folder `agentrl import-cache` writes), and
`local` (an offline index over a folder of images with titles; the demo's is generated).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from agentrl.config import ImageSearchConfig, ToolsConfig
from agentrl.data.synthetic import demo_image_index
from agentrl.envs.cache_import import safe_folder
from agentrl.envs.tool import (
    IMAGE_MARKER,
    Observation,
    Tool,
    TrajectoryState,
    escape_text,
    register_tool,
    within_call_deadline,
)
from agentrl.errors import UserError
from agentrl.images import MAX_THUMBNAIL_PIXELS, ImageError, decode_image, readable_image
from agentrl.timing import StageClock
from agentrl.web.cache import content_hash
from agentrl.web.http import Backend, BackendError
from agentrl.web.safe_fetch import SafeFetcher

HEADER = ("[Image Search Results] Web pages related to the image in the question, most relevant first; "
          "each with its main image and title:")


def _signature(data: bytes) -> list[float]:
    img = decode_image(data).resize((8, 8))
    return [c / 255.0 for c in img.tobytes()]  # row-major RGB, as getdata() (deprecated) gave


def _index_entry(folder: Path, line: str, where: str) -> tuple[str, bytes, list[float]]:
    """One index line `{"title": ..., "image": file}` -> (title, image bytes, signature); UserError naming
    the file and line when the line or its image is unusable."""
    try:
        e = json.loads(line)
    except ValueError:
        raise UserError(f"{where}: not JSON (one {{title, image}} object a line)") from None
    if not isinstance(e, dict) or not isinstance(e.get("title"), str) or not isinstance(e.get("image"), str):
        raise UserError(f"{where}: expected {{\"title\": text, \"image\": file name}}")
    try:
        data = (folder / e["image"]).read_bytes()
        return e["title"], data, _signature(data)
    except OSError as err:
        raise UserError(f"{where}: cannot read image {folder / e['image']} ({err.strerror})") from None
    except ImageError as err:
        raise UserError(f"{where}: image {folder / e['image']}: {err}") from None


class LocalImageIndex:
    """Nearest images by an 8x8 colour signature (enough for generated demo data; swap in embeddings).

    `folder` holds `index.jsonl` (one `{"title", "image"}` a line, the image a file in the folder); a
    missing, empty or bad index, or an unreadable image, is a UserError naming the file (and line)."""

    def __init__(self, folder: Path) -> None:
        self.entries = []
        digest = hashlib.sha256()  # the index's identity for the cache: its titles and images
        path = folder / "index.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"image index {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
        for n, line in enumerate(lines, 1):
            if line.strip():
                title, data, signature = _index_entry(folder, line, f"image index {path} line {n}")
                self.entries.append((title, data, signature))
                digest.update(json.dumps(title).encode() + hashlib.sha256(data).digest())
        if not self.entries:
            raise UserError(f"image index {path}: no entries (the file is empty)")
        self.digest = digest.hexdigest()[:32]

    def search(self, image: bytes, k: int) -> list[tuple[str, bytes]]:
        q = _signature(image)
        dist = [(sum((a - b) ** 2 for a, b in zip(q, sig, strict=True)), title, data)
                for title, data, sig in self.entries]
        return [(title, data) for _, title, data in sorted(dist, key=lambda x: x[0])[:k]]


@register_tool
class ImageSearchTool(Tool):
    """Searches the web with the input image: top-k thumbnails and titles (serpapi_lens, cache, local).

    Thumbnails come from third-party hosts, so they are fetched through the SSRF-safe fetcher; one that
    cannot be fetched or decoded is left out and its title kept (`stats["thumbnails_dropped"]`).
    """

    name = "image_search"
    cacheable = True

    def __init__(self, cfg: ImageSearchConfig, tools: ToolsConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backend = cfg.backend
        self.http = Backend(f"image-{cfg.backend}", cfg.http)
        self.fetch_cfg = (tools or ToolsConfig()).fetch
        self.fetcher = SafeFetcher(cfg.http, self.fetch_cfg, name="thumbnails")
        self._index: LocalImageIndex | None = None
        self.stats: Counter = Counter(thumbnails_dropped=0)  # reported from the start, at 0
        self.stage_clock = StageClock()  # seconds per stage: search, each thumbnail, the thumbnails' checks

    @classmethod
    def from_config(cls, cfg: Any) -> Tool:
        tools = cfg.tools if cfg is not None else ToolsConfig()
        return cls(tools.image_search, tools)

    def parse_args(self, action_text: str) -> dict[str, Any]:
        return {}  # the input image is the query

    def check(self) -> None:
        """A local index (`tools.image_search.local_dir`) that cannot be read fails now, naming the key and file."""
        if self.cfg.backend == "local" and self.cfg.local_dir:
            try:
                self.index()
            except UserError as e:
                raise UserError(f"tools.image_search.local_dir: {e}") from None

    def index(self) -> LocalImageIndex:
        if self._index is None:
            self._index = LocalImageIndex(Path(self.cfg.local_dir) if self.cfg.local_dir else demo_image_index())
        return self._index

    def cache_identity(self, state: TrajectoryState) -> dict[str, Any]:
        """The backend and top_k, and per backend what the results come from: the local index's content
        and the image's bytes; the cache folder and the row's data_id; the API and the image's URL."""
        c = self.cfg
        identity: dict[str, Any] = {"backend": c.backend, "top_k": c.top_k}
        if c.backend == "local":
            identity.update(index=self.index().digest,
                            image=content_hash(state.images[0]) if state.images else "")
        elif c.backend == "cache":
            identity.update(cache_dir=os.path.abspath(c.cache_dir), data_id=state.data_id)
        else:
            identity.update(base_url=c.base_url, image_url=state.image_urls[0] if state.image_urls else "",
                            max_bytes=self.fetch_cfg.max_bytes)
        return identity

    async def results(self, state: TrajectoryState) -> list[tuple[str, bytes | None]]:
        c = self.cfg
        if c.backend == "local":
            if not state.images:
                raise BackendError("image search needs an input image")
            return list(self.index().search(state.images[0], c.top_k))
        if c.backend == "cache":
            folder = safe_folder(Path(c.cache_dir), state.data_id)  # a data_id never reads outside cache_dir
            meta = folder / "meta.json" if folder is not None else None
            if meta is None or not meta.exists():
                raise BackendError(f"no cached image search for data_id '{state.data_id}'")
            titles = json.loads(meta.read_text())["title_list"][: c.top_k]
            out = []
            for i, title in enumerate(titles):
                img = next((folder / f"img_{i:03d}.{ext}" for ext in ("png", "jpg")
                            if (folder / f"img_{i:03d}.{ext}").exists()), None)
                out.append((title, img.read_bytes() if img else None))
            return out
        if c.backend == "serpapi_lens":
            if not state.image_urls:
                raise BackendError("serpapi_lens needs the image's URL (the data row's image_urls)")
            key = os.environ.get("SERPAPI_API_KEY", "")
            if not key:
                raise BackendError("serpapi_lens needs the SERPAPI_API_KEY environment variable")
            async with self.stage_clock.timed("search"):
                data = await self.http.request("GET", c.base_url, params={
                    "engine": "google_lens", "url": state.image_urls[0], "api_key": key})
            matches = [m for m in (data.get("visual_matches") or []) if isinstance(m, dict)][: c.top_k]
            # all at once (the fetcher's per-host limits apply), each within the call's deadline
            thumbs = await asyncio.gather(*[self._thumbnail(str(m.get("thumbnail") or "")) for m in matches])
            return [(str(m.get("title") or ""), thumb) for m, thumb in zip(matches, thumbs, strict=True)]
        raise BackendError(f"unknown image search backend '{c.backend}'")

    async def _thumbnail(self, url: str) -> bytes | None:
        if not url:
            return None
        try:
            async with self.stage_clock.timed("thumbnail"):
                return await within_call_deadline(self.fetcher.fetch_image(url))
        except Exception:  # refused, dead, too large, too slow, a bad reply: the title still helps
            self.stats["thumbnails_dropped"] += 1
            return None

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        lines, images = [HEADER], []
        found = await self.results(state)
        # decoding is CPU work on web bytes: off the event loop, under the thumbnails' pixel cap
        async with self.stage_clock.timed("thumbnail_check"):
            readable = await asyncio.to_thread(lambda: [bool(t) and readable_image(t, MAX_THUMBNAIL_PIXELS)
                                                        for _, t in found])
        for i, ((title, thumb), ok) in enumerate(zip(found, readable, strict=True), 1):
            # the model's adapter resizes every image once, into model.vision's thumbnail budget; here an
            # unreadable thumbnail is dropped and its title kept. Titles are web text: escaped, so only
            # the marker written here places an image.
            title = escape_text(title)
            if thumb and ok:
                images.append(thumb)
                lines.append(f"{i}. image: {IMAGE_MARKER}\ntitle: {title}")
            else:
                self.stats["thumbnails_dropped"] += bool(thumb)
                lines.append(f"{i}. title: {title}")
        return Observation("\n".join(lines), images=images)

    async def close(self) -> None:
        await self.http.close()
        await self.fetcher.close()
