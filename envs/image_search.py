"""The `image_search` tool: the trajectory's input image in, the top k results out, each a thumbnail
and a title, put into the conversation as images plus text.

Backends: `serpapi_lens` (SerpAPI's Google Lens API, key from SERPAPI_API_KEY; needs the image's URL),
`cache` (results computed earlier, keyed by data_id, in the folder `agentrl import-cache` writes), and
`local` (an offline index over a folder of images with titles; the demo's is generated).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from agentrl.envs.tool import IMAGE_MARKER, Observation, Tool, TrajectoryState, register_tool

from agentrl.config import ImageSearchConfig, ToolsConfig
from agentrl.data.synthetic import demo_image_index
from agentrl.web.http import Backend, BackendError

HEADER = ("[Image Search Results] Web pages related to the image in the question, most relevant first; "
          "each with its main image and title:")


def resize_png(data: bytes, max_pixels: int) -> bytes:
    """Decode, shrink to at most max_pixels, re-encode as PNG (raises on corrupt bytes)."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    if w * h > max_pixels:
        scale = (max_pixels / (w * h)) ** 0.5
        img = img.resize((max(1, int(w * scale)), max(1, int(h * scale))))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _signature(data: bytes) -> list[float]:
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB").resize((8, 8))
    return [c / 255.0 for c in img.tobytes()]  # row-major RGB, as getdata() (deprecated) gave


class LocalImageIndex:
    """Nearest images by an 8x8 colour signature (enough for generated demo data; swap in embeddings)."""

    def __init__(self, folder: Path) -> None:
        self.entries = []
        for line in (folder / "index.jsonl").read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                data = (folder / e["image"]).read_bytes()
                self.entries.append((e["title"], data, _signature(data)))

    def search(self, image: bytes, k: int) -> list[tuple[str, bytes]]:
        q = _signature(image)
        dist = [(sum((a - b) ** 2 for a, b in zip(q, sig, strict=True)), title, data)
                for title, data, sig in self.entries]
        return [(title, data) for _, title, data in sorted(dist, key=lambda x: x[0])[:k]]


@register_tool
class ImageSearchTool(Tool):
    """Searches the web with the input image: top-k thumbnails and titles (serpapi_lens, cache, local)."""

    name = "image_search"
    cacheable = True

    def __init__(self, cfg: ImageSearchConfig, tools: ToolsConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backend = cfg.backend
        self.http = Backend(f"image-{cfg.backend}", cfg.http)
        self._index: LocalImageIndex | None = None
        self._fetch_cfg = (tools or ToolsConfig()).fetch

    @classmethod
    def from_config(cls, cfg: Any) -> Tool:
        tools = cfg.tools if cfg is not None else ToolsConfig()
        return cls(tools.image_search, tools)

    def parse_args(self, action_text: str) -> dict[str, Any]:
        return {}  # the input image is the query

    async def results(self, state: TrajectoryState) -> list[tuple[str, bytes | None]]:
        c = self.cfg
        if c.backend == "local":
            if not state.images:
                raise BackendError("image search needs an input image")
            if self._index is None:
                folder = Path(c.local_dir) if c.local_dir else demo_image_index()
                self._index = LocalImageIndex(folder)
            return list(self._index.search(state.images[0], c.top_k))
        if c.backend == "cache":
            folder = Path(c.cache_dir) / state.data_id
            meta = folder / "meta.json"
            if not state.data_id or not meta.exists():
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
            return [(m.get("title", ""), await self._thumbnail(m.get("thumbnail", ""))) for m in matches]
        raise BackendError(f"unknown image search backend '{c.backend}'")

    async def _thumbnail(self, url: str) -> bytes | None:
        from agentrl.web.safe_fetch import check_url

        if not url:
            return None
        try:
            await check_url(url, self._fetch_cfg)
            resp, body = await self.http.request("GET", url, parse="raw", max_bytes=self._fetch_cfg.max_bytes)
            return body if resp.headers.get("Content-Type", "").startswith("image/") else None
        except BackendError:
            return None  # the title still helps

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        lines, images = [HEADER], []
        for i, (title, thumb) in enumerate(await self.results(state), 1):
            png = None
            if thumb:
                try:
                    png = resize_png(thumb, self.cfg.thumbnail_max_pixels)
                except Exception:
                    png = None  # a corrupt thumbnail: keep the title, drop the image
            if png is not None:
                images.append(png)
                lines.append(f"{i}. image: {IMAGE_MARKER}\ntitle: {title}")
            else:
                lines.append(f"{i}. title: {title}")
        return Observation("\n".join(lines), images=images)

    async def close(self) -> None:
        await self.http.close()
