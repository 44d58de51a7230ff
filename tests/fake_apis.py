"""A local aiohttp server speaking the documented JSON shapes of the web APIs the tools call:
SerpAPI (Google search `organic_results`, Google Lens `visual_matches`), SearXNG, JINA Reader and
OpenAI chat completions, plus endpoints that fail on purpose. Runs on loopback in a thread."""

from __future__ import annotations

import asyncio
import io
import threading
from collections import Counter

from aiohttp import web


def png_bytes(colour=(200, 30, 30)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, format="PNG")
    return out.getvalue()


class FakeAPIs:
    def __init__(self) -> None:
        self.hits: Counter = Counter()
        self.requests: list[dict] = []
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
        async def serpapi(req: web.Request) -> web.Response:
            self.hits["serpapi"] += 1
            self.requests.append(dict(req.query))
            if req.query.get("engine") == "google_lens":
                return web.json_response({"visual_matches": [
                    {"position": i + 1, "title": f"Match {i + 1}", "link": f"https://example.com/{i}",
                     "thumbnail": f"{self.url}/thumb/{i}.png"} for i in range(6)]})
            q = req.query.get("q", "")
            return web.json_response({"search_metadata": {"status": "Success"}, "organic_results": [
                {"position": 1, "title": "Eiffel Tower - Wikipedia", "link": f"{self.url}/page.html",
                 "snippet": f"The Eiffel Tower ({q}) is in Paris."},
                {"position": 2, "title": "Tower facts", "link": "https://example.org/facts",
                 "snippet": "It is 330 m tall."}]})

        async def thumb(req: web.Request) -> web.Response:
            self.hits["thumb"] += 1
            return web.Response(body=png_bytes(), content_type="image/png")

        async def searxng(req: web.Request) -> web.Response:
            self.hits["searxng"] += 1
            assert req.query.get("format") == "json"
            return web.json_response({"query": req.query["q"], "results": [
                {"title": "SearX result", "url": "https://example.net/a", "content": "Snippet from searx."}]})

        async def jina(req: web.Request) -> web.Response:
            self.hits["jina"] += 1
            self.requests.append({"auth": req.headers.get("Authorization", ""), "path": req.path})
            return web.Response(text="Title: Eiffel Tower\n\nThe tower is 330 metres tall and in Paris.")

        async def chat(req: web.Request) -> web.Response:
            self.hits["chat"] += 1
            body = await req.json()
            assert body["messages"][-1]["role"] == "user"
            return web.json_response({"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "SUMMARY: 330 m tall, Paris."},
                 "finish_reason": "stop"}]})

        async def page(req: web.Request) -> web.Response:
            self.hits["page"] += 1
            return web.Response(text="<html><body><article><h1>Eiffel</h1><p>The Eiffel Tower is a wrought-iron "
                                     "lattice tower in Paris, France, 330 metres tall.</p></article></body></html>",
                                content_type="text/html")

        async def redirect_to_metadata(req: web.Request) -> web.Response:
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

        async def flaky(req: web.Request) -> web.Response:
            self.hits["flaky"] += 1
            if self.flaky_left > 0:
                self.flaky_left -= 1
                return web.Response(status=503)
            return web.json_response({"organic_results": [{"title": "ok", "link": "", "snippet": "recovered"}]})

        async def slow(req: web.Request) -> web.Response:
            self.hits["slow"] += 1
            await asyncio.sleep(5)
            return web.json_response({})

        async def concurrent(req: web.Request) -> web.Response:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            await asyncio.sleep(0.2)
            self.in_flight -= 1
            return web.json_response({"ok": True})

        async def fail(req: web.Request) -> web.Response:
            self.hits["fail"] += 1
            return web.Response(status=500)

        app = web.Application()
        app.router.add_get("/serpapi/search", serpapi)
        app.router.add_get("/thumb/{n}", thumb)
        app.router.add_get("/searxng/search", searxng)
        app.router.add_get("/jina/{tail:.*}", jina)
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/page.html", page)
        app.router.add_get("/redirect", redirect_to_metadata)
        app.router.add_get("/flaky/search", flaky)
        app.router.add_get("/slow/search", slow)
        app.router.add_get("/fail/search", fail)
        app.router.add_get("/concurrent", concurrent)
        return app

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

    def __init__(self, cfg) -> None:
        from agentrl.web.http import Backend

        self.backend = Backend("shared-test", cfg)

    async def call(self, url: str, n: int) -> int:
        await asyncio.gather(*[self.backend.request("GET", url) for _ in range(n)])
        return self.backend.calls
