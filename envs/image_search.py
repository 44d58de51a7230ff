"""The `image_search` tool: the trajectory's input image in, the top k results out, each a thumbnail
and a title, put into the conversation as images plus text.

Backends: `serpapi_lens` (SerpAPI's Google Lens API, key from SERPAPI_API_KEY; needs the image's URL),
`cache` (results computed earlier, keyed by data_id, in the folder `agentrl import-cache` writes), and
`local` (an offline index over a folder of images with titles; the demo's is generated).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from agentrl.config import ImageSearchConfig, ToolsConfig
from agentrl.data.synthetic import demo_image_index
from agentrl.envs.cache_import import safe_folder
from agentrl.envs.tool import IMAGE_MARKER, Observation, Tool, TrajectoryState, escape_text, register_tool
from agentrl.models.base import ImageError, decode_image
from agentrl.web.cache import content_hash
from agentrl.web.http import Backend, BackendError
from agentrl.web.safe_fetch import SafeFetcher

HEADER = ("[Image Search Results] Web pages related to the image in the question, most relevant first; "
          "each with its main image and title:")


def _signature(data: bytes) -> list[float]:
    img = decode_image(data).resize((8, 8))
    return [c / 255.0 for c in img.tobytes()]  # row-major RGB, as getdata() (deprecated) gave


def readable_image(data: bytes) -> bool:
    """Whether the bytes decode as an image."""
    try:
        decode_image(data)
    except ImageError:
        return False
    return True


class LocalImageIndex:
    """Nearest images by an 8x8 colour signature (enough for generated demo data; swap in embeddings)."""

    def __init__(self, folder: Path) -> None:
        self.entries = []
        digest = hashlib.sha256()  # the index's identity for the cache: its titles and images
        for line in (folder / "index.jsonl").read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                data = (folder / e["image"]).read_bytes()
                self.entries.append((e["title"], data, _signature(data)))
                digest.update(json.dumps(e["title"]).encode() + hashlib.sha256(data).digest())
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
        self.stats: Counter = Counter()

    @classmethod
    def from_config(cls, cfg: Any) -> Tool:
        tools = cfg.tools if cfg is not None else ToolsConfig()
        return cls(tools.image_search, tools)

    def parse_args(self, action_text: str) -> dict[str, Any]:
        return {}  # the input image is the query

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
            data = await self.http.request("GET", c.base_url, params={
                "engine": "google_lens", "url": state.image_urls[0], "api_key": key})
            matches = (data.get("visual_matches") or [])[: c.top_k]
            return [(str(m.get("title") or ""), await self._thumbnail(str(m.get("thumbnail") or "")))
                    for m in matches]
        raise BackendError(f"unknown image search backend '{c.backend}'")

    async def _thumbnail(self, url: str) -> bytes | None:
        if not url:
            return None
        try:
            return await self.fetcher.fetch_image(url)
        except Exception:  # refused, dead, too large, a bad reply: the title still helps
            self.stats["thumbnails_dropped"] += 1
            return None

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        lines, images = [HEADER], []
        for i, (title, thumb) in enumerate(await self.results(state), 1):
            # the model's adapter resizes every image once, into model.vision's thumbnail budget; here an
            # unreadable thumbnail is dropped and its title kept. Titles are web text: escaped, so only
            # the marker written here places an image.
            title = escape_text(title)
            if thumb and readable_image(thumb):
                images.append(thumb)
                lines.append(f"{i}. image: {IMAGE_MARKER}\ntitle: {title}")
            else:
                self.stats["thumbnails_dropped"] += bool(thumb)
                lines.append(f"{i}. title: {title}")
        return Observation("\n".join(lines), images=images)

    async def close(self) -> None:
        await self.http.close()
        await self.fetcher.close()
