"""A simulated search web on loopback for `agentrl bench async --workload search`.

It speaks the documented JSON of SerpAPI's Google search (`organic_results`) and Google Lens
(`visual_matches`) and serves the result pages (kilobytes of HTML) and thumbnails (JPEG photos-like
noise) those results link to. Every request waits a delay drawn from a seeded log-normal distribution
of its stage (search API, page, thumbnail) and fails (HTTP 500) at a set rate: the k-th request of a
stage draws the k-th delay after each `reset()`, so two modes of the bench see the same latencies.
Runs in a thread with its own event loop; pages and images are made once, at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agentrl.envs.latency_tool import LatencyModel

PAGES, THUMBNAILS, RESULTS_PER_SEARCH = 48, 48, 5
WORDS = ("the of and in to a is was for on by with as from at that which museum river tower bridge city "
         "century built designed opened station island mountain lake harbour cathedral library market "
         "square garden palace castle festival painting painter architect colour stone glass north south "
         "east west old new famous visitors history local people during years since known largest").split()


@dataclass(frozen=True)
class StageLatency:
    """One stage's delay distribution: log-normal with this median and 99th percentile (seconds)."""

    median_s: float
    p99_s: float


# The workload: search API median 1 s / p99 10 s, pages 0.5 / 8, thumbnails 0.3 / 3.
DEFAULT_LATENCY = {"search": StageLatency(1.0, 10.0), "page": StageLatency(0.5, 8.0),
                   "thumbnail": StageLatency(0.3, 3.0)}


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def html_page(n: int) -> bytes:
    """A result page: a head, navigation, an article of several paragraphs, a table and a footer (~6 KB)."""
    rng = random.Random(n)
    title = _words(rng, 4).title()
    nav = "".join(f'<li><a href="/page/{rng.randrange(PAGES)}.html">{_words(rng, 2)}</a></li>' for _ in range(12))
    paras = "".join(f"<p>{_words(rng, rng.randint(60, 110)).capitalize()}.</p>" for _ in range(6))
    rows = "".join(f"<tr><td>{_words(rng, 2)}</td><td>{rng.randint(1200, 2024)}</td></tr>" for _ in range(8))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>body{{font-family:serif}} nav li{{display:inline}}</style></head><body>"
            f"<nav><ul>{nav}</ul></nav><article><h1>{title}</h1>{paras}<table>{rows}</table></article>"
            f"<footer>{_words(rng, 30)}</footer></body></html>").encode()


def jpeg_image(n: int, width: int = 240, height: int = 180) -> bytes:
    """A photo-sized JPEG of blurred noise with a few shapes (~10-20 KB; decoding it is real work)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(n)
    img = Image.frombytes("RGB", (width // 4, height // 4), rng.randbytes(3 * (width // 4) * (height // 4)))
    img = img.resize((width, height)).filter(ImageFilter.GaussianBlur(2))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x, y = rng.randrange(width), rng.randrange(height)
        draw.ellipse((x, y, x + rng.randint(10, 60), y + rng.randint(10, 60)),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _pick(text: str, k: int, pool: int) -> list[int]:
    """k distinct items of a pool, the same for the same text (a query's results do not change)."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    return rng.sample(range(pool), k)


class SearchWeb:
    """The simulated web: start(), `url`, reset() between runs, stop(). `counters` counts requests and
    injected failures per stage."""

    def __init__(self, seed: int = 0, failure_rate: float = 0.02,
                 latency: dict[str, StageLatency] | None = None) -> None:
        self.seed, self.failure_rate = seed, failure_rate
        self.latency = {**DEFAULT_LATENCY, **(latency or {})}
        self.pages = [html_page(i) for i in range(PAGES)]
        self.snippets = [re.search(rb"<p>(.*?)</p>", p).group(1)[:160].decode() for p in self.pages]  # type: ignore[union-attr]
        self.thumbnails = [jpeg_image(i) for i in range(THUMBNAILS)]
        self.counters: Counter = Counter()
        self.port = 0
        self._models: dict[str, LatencyModel] = {}
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Start every stage's delay sequence again, and the counters."""
        self._models = {stage: LatencyModel(s.median_s, s.p99_s, self.failure_rate, seed=self.seed * 1000 + i)
                        for i, (stage, s) in enumerate(sorted(self.latency.items()))}
        self.counters = Counter()

    def draw(self, stage: str) -> tuple[float, bool]:
        """The next request of `stage`: (its delay in seconds, whether it fails)."""
        return self._models[stage].draw()

    async def _delay(self, stage: str) -> None:
        latency, fails = self.draw(stage)
        self.counters[f"{stage}/requests"] += 1
        await asyncio.sleep(latency)
        if fails:
            self.counters[f"{stage}/failures_injected"] += 1
            raise web.HTTPInternalServerError(text='{"error": "simulated failure"}', content_type="application/json")

    async def search(self, req: web.Request) -> web.Response:
        """SerpAPI: engine=google (`q`) -> organic_results; engine=google_lens (`url`) -> visual_matches."""
        await self._delay("search")
        q = req.query
        if q.get("engine") == "google_lens":
            picks = _pick(q.get("url", ""), RESULTS_PER_SEARCH, THUMBNAILS)
            return web.json_response({"search_metadata": {"status": "Success"}, "visual_matches": [
                {"position": i + 1, "title": f"{' '.join(WORDS[(n + j) % len(WORDS)] for j in range(5))}",
                 "link": f"{self.url}/page/{n % PAGES}.html", "source": "simulated",
                 "thumbnail": f"{self.url}/thumb/{n}.jpg"} for i, n in enumerate(picks)]})
        query = q.get("q", "")
        picks = _pick(query, RESULTS_PER_SEARCH, PAGES)
        return web.json_response({"search_metadata": {"status": "Success"}, "organic_results": [
            {"position": i + 1, "title": f"{query} - {' '.join(WORDS[(n + j) % len(WORDS)] for j in range(4))}",
             "link": f"{self.url}/page/{n}.html", "snippet": self.snippets[n]}
            for i, n in enumerate(picks)]})

    async def page(self, req: web.Request) -> web.Response:
        await self._delay("page")
        n = int(req.match_info["n"]) % PAGES
        return web.Response(body=self.pages[n], content_type="text/html", charset="utf-8")

    async def thumbnail(self, req: web.Request) -> web.Response:
        await self._delay("thumbnail")
        return web.Response(body=self.thumbnails[int(req.match_info["n"]) % THUMBNAILS], content_type="image/jpeg")

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/search", self.search)
        app.router.add_get(r"/page/{n:\d+}.html", self.page)
        app.router.add_get(r"/thumb/{n:\d+}.jpg", self.thumbnail)
        return app

    def start(self) -> SearchWeb:
        ready = threading.Event()

        async def serve() -> None:
            self._runner = web.AppRunner(self._app(), access_log=None)
            await self._runner.setup()
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            await web.SockSite(self._runner, sock).start()
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="search-web", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the simulated search web did not start")
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self) -> SearchWeb:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
