"""A local aiohttp server speaking the documented JSON shapes of the web APIs the tools call:
SerpAPI (Google search `organic_results`, Google Lens `visual_matches`), SearXNG, JINA Reader and
OpenAI chat completions, plus endpoints that fail or misbehave on purpose (chunked and oversized
bodies, a decompression-bomb PNG, an unknown charset, a header echo). Runs on loopback in a thread."""

from __future__ import annotations

import asyncio
import io
import random
import struct
import threading
import zlib
from collections import Counter
from typing import Any

from aiohttp import web


def png_bytes(colour=(200, 30, 30)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, format="PNG")
    return out.getvalue()


def noise_png(side: int, seed: int = 0) -> bytes:
    """A PNG of random pixels (incompressible: about 3 * side**2 bytes)."""
    from PIL import Image

    rng = random.Random(seed)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), rng.randbytes(3 * side * side)).save(out, format="PNG")
    return out.getvalue()


def bomb_png(side: int = 12_000) -> bytes:
    """A valid black-and-white PNG of side x side pixels that compresses to a few KB (144 MP: ~17 KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = bytes((1 + (side + 7) // 8) * side)  # filter byte 0 and all-black 1-bit pixels per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


SECRET = "sk-test-SECRET-9f8e7d"  # the tests' API keys: must never show in an output


def serp(apis: FakeAPIs, path: str = "serpapi/search") -> list[str]:
    """Config overrides: text search through the fake SerpAPI."""
    return ["tools.text_search.backend=serpapi", f"tools.text_search.base_url={apis.url}/{path}"]


def lens(apis: FakeAPIs) -> list[str]:
    """Config overrides: image search through the fake Google Lens, thumbnails from loopback allowed."""
    return ["tools.image_search.backend=serpapi_lens", f"tools.image_search.base_url={apis.url}/serpapi/search",
            "tools.fetch.allow_hosts=[127.0.0.1]"]


class LoopRunner:
    """One event loop for a test module: `run(coro)` on it, and the tools and backends `opened` on it
    closed on it at the end (`close_all`)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.opened: list = []

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def open(self, obj):
        self.opened.append(obj)
        return obj

    def tool(self, name: str, *overrides: str):
        """A built-in tool configured like the demo plus overrides, closed at the end."""
        from agentrl.config import load_config
        from agentrl.envs.registry import load_tool

        return self.open(load_tool(name, load_config("configs/demo.yaml", list(overrides))))

    def close_all(self) -> None:
        for obj in self.opened:
            self.run(obj.close())
        self.opened.clear()


class FakeAPIs:
    def __init__(self) -> None:
        self.hits: Counter = Counter()
        self.requests: list[dict] = []
        self.organic: list[dict] | None = None  # set: the serpapi search results, instead of the default two
        self.lens_matches: list[tuple[str, str]] | None = None  # set: the lens matches' (title, thumbnail URL)
        self.flaky_left = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application()
        for method, path, handler in (*self._search_routes(), *self._fault_routes(), *self._hostile_routes()):
            app.router.add_route(method, path, handler)
        return app

    def _search_routes(self) -> list[tuple[str, str, Any]]:
        """The search APIs, page reader, chat model and pages the tools call."""
        return [
            ("GET", "/serpapi/search", self.serpapi),
            ("GET", "/thumb/{n}", self.thumb),
            ("GET", "/searxng/search", self.searxng),
            ("GET", "/jina/{tail:.*}", self.jina),
            ("POST", "/v1/chat/completions", self.chat),
            ("GET", "/page.html", self.page),
        ]

    def _fault_routes(self) -> list[tuple[str, str, Any]]:
        """Endpoints that fail, stall or count concurrency: for retries, timeouts, breakers and slots."""
        return [
            ("GET", "/flaky/search", self.flaky),
            ("GET", "/slow/search", self.slow),
            ("GET", "/fail/search", self.fail),
            ("GET", "/status/{code}", self.status),
            ("GET", "/concurrent", self.concurrent),
        ]

    def _hostile_routes(self) -> list[tuple[str, str, Any]]:
        """Replies a safe fetcher must survive: redirects inward, oversize bodies, bombs, odd charsets, echoes."""
        return [
            ("GET", "/redirect", self.redirect_to_metadata),
            ("GET", "/chunked/{size}", self.chunked),
            ("GET", "/bomb.png", self.bomb),
            ("GET", "/square/{side}.png", self.square),
            ("GET", "/odd-charset", self.odd_charset),
            ("GET", "/charset/{name}/{size}", self.declared_charset),
            ("GET", "/hang/{name}", self.hang),
            ("GET", "/echo/{tail:.*}", self.echo),
            ("GET", "/no-choices", self.no_choices_page),
            ("GET", "/redirect-to", self.redirect_to),
        ]

    # ---- handlers ------------------------------------------------------------------------------
    async def serpapi(self, req: web.Request) -> web.Response:
        self.hits["serpapi"] += 1
        self.requests.append(dict(req.query))
        if req.query.get("engine") == "google_lens":
            matches = self.lens_matches or [(f"Match {i + 1}", f"{self.url}/thumb/{i}.png") for i in range(6)]
            return web.json_response({"visual_matches": [
                {"position": i + 1, "title": title, "link": f"https://example.com/{i}", "thumbnail": thumb}
                for i, (title, thumb) in enumerate(matches)]})
        if self.organic is not None:
            return web.json_response({"organic_results": self.organic})
        q = req.query.get("q", "")
        return web.json_response({"search_metadata": {"status": "Success"}, "organic_results": [
            {"position": 1, "title": "Eiffel Tower - Wikipedia", "link": f"{self.url}/page.html",
             "snippet": f"The Eiffel Tower ({q}) is in Paris."},
            {"position": 2, "title": "Tower facts", "link": "https://example.org/facts",
             "snippet": "It is 330 m tall."}]})

    async def thumb(self, req: web.Request) -> web.Response:
        self.hits["thumb"] += 1
        return web.Response(body=png_bytes(), content_type="image/png")

    async def searxng(self, req: web.Request) -> web.Response:
        self.hits["searxng"] += 1
        assert req.query.get("format") == "json"
        return web.json_response({"query": req.query["q"], "results": [
            {"title": "SearX result", "url": "https://example.net/a", "content": "Snippet from searx."}]})

    async def jina(self, req: web.Request) -> web.Response:
        self.hits["jina"] += 1
        self.requests.append({"auth": req.headers.get("Authorization", ""), "path": req.path})
        return web.Response(text="Title: Eiffel Tower\n\nThe tower is 330 metres tall and in Paris.")

    async def chat(self, req: web.Request) -> web.Response:
        self.hits["chat"] += 1
        body = await req.json()
        assert body["messages"][-1]["role"] == "user"
        if "no-choices-please" in body["messages"][-1]["content"]:
            return web.json_response({"id": "x", "object": "error", "message": "overloaded"})
        return web.json_response({"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "SUMMARY: 330 m tall, Paris."},
             "finish_reason": "stop"}]})

    async def page(self, req: web.Request) -> web.Response:
        self.hits["page"] += 1
        return web.Response(text="<html><body><article><h1>Eiffel</h1><p>The Eiffel Tower is a wrought-iron "
                                 "lattice tower in Paris, France, 330 metres tall.</p></article></body></html>",
                            content_type="text/html")

    async def redirect_to_metadata(self, req: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def flaky(self, req: web.Request) -> web.Response:
        self.hits["flaky"] += 1
        if self.flaky_left > 0:
            self.flaky_left -= 1
            return web.Response(status=503)
        return web.json_response({"organic_results": [{"title": "ok", "link": "", "snippet": "recovered"}]})

    async def slow(self, req: web.Request) -> web.Response:
        self.hits["slow"] += 1
        await asyncio.sleep(5)
        return web.json_response({})

    async def concurrent(self, req: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.2)
        self.in_flight -= 1
        return web.json_response({"ok": True})

    async def fail(self, req: web.Request) -> web.Response:
        self.hits["fail"] += 1
        return web.Response(status=500)

    async def status(self, req: web.Request) -> web.Response:
        self.hits[f"status-{req.match_info['code']}"] += 1
        return web.Response(status=int(req.match_info["code"]), text="no")

    async def chunked(self, req: web.Request) -> web.StreamResponse:
        """`size` bytes of text/plain, or of a 270 KB noise PNG for big.png, sent in 64 KB chunks."""
        big = req.match_info["size"] == "big.png"
        body = noise_png(300) if big else (b"word " * (int(req.match_info["size"]) // 5 + 1))[
            : int(req.match_info["size"])]
        resp = web.StreamResponse(headers={"Content-Type": "image/png" if big else "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        for i in range(0, len(body), 1 << 16):
            await resp.write(body[i: i + (1 << 16)])
            await asyncio.sleep(0)  # separate network chunks
        await resp.write_eof()
        return resp

    async def bomb(self, req: web.Request) -> web.Response:
        return web.Response(body=bomb_png(), content_type="image/png")

    async def square(self, req: web.Request) -> web.Response:
        return web.Response(body=bomb_png(int(req.match_info["side"])), content_type="image/png")

    async def odd_charset(self, req: web.Request) -> web.Response:
        return web.Response(body="Caf\u00e9 page in a made-up charset.".encode(),
                            headers={"Content-Type": "text/plain; charset=x-no-such-charset"})

    async def hang(self, req: web.Request) -> web.Response:
        """A page or thumbnail that stalls (past the 3 s call budget of the tests, within the server's 10 s stop)."""
        self.hits["hang"] += 1
        await asyncio.sleep(5)
        return web.Response(text="too late")

    async def declared_charset(self, req: web.Request) -> web.Response:
        """`size` bytes of a page (ASCII letters and a non-ASCII word) declaring charset `name`."""
        body = ("Caf\u00e9 " + "a" * int(req.match_info["size"])).encode("utf-8")
        return web.Response(body=body, headers={"Content-Type": f"text/plain; charset={req.match_info['name']}"})

    async def echo(self, req: web.Request) -> web.Response:
        """A page that shows the request's headers, as some misconfigured servers do."""
        return web.Response(text="Headers: " + "; ".join(f"{k}: {v}" for k, v in req.headers.items()))

    async def no_choices_page(self, req: web.Request) -> web.Response:
        return web.Response(text="A page whose summary request gets no choices: no-choices-please.")

    async def redirect_to(self, req: web.Request) -> web.Response:
        raise web.HTTPFound(req.query["to"])


    def start(self) -> FakeAPIs:
        def run() -> None:
            asyncio.set_event_loop(self._loop)
            runner = web.AppRunner(self._app())
            self._runner = runner
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            self._ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Close connections and handlers, then stop the loop (no pending tasks left at exit)."""
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


class BackendCaller:
    """A Ray actor that calls one backend, as tools inside environment actors do."""

    def __init__(self, cfg, name: str = "shared-test") -> None:
        from agentrl.web.http import Backend

        self.backend = Backend(name, cfg)

    async def call(self, url: str, n: int) -> int:
        await asyncio.gather(*[self.backend.request("GET", url) for _ in range(n)])
        return self.backend.calls

    async def call_with_timeout(self, url: str, n: int, timeout_s: float) -> int:
        """n concurrent calls, each abandoned after timeout_s (as the tool timeout does); how many timed out."""
        async def one() -> bool:
            try:
                async with asyncio.timeout(timeout_s):
                    await self.backend.request("GET", url)
            except TimeoutError:
                return True
            return False

        return sum(await asyncio.gather(*[one() for _ in range(n)]))
