"""`agentrl serve-retriever` (the Search-R1 retrieval API), served in-process: a malformed request gets a
4xx JSON error, never a 500 with a traceback; searches run off the event loop, so a large request does
not hold up a small one; a bad corpus fails at start-up in one line."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import threading
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentrl.envs.retriever import BM25Index, Document, RequestLimits, load_corpus, make_app
from agentrl.errors import UserError
from tests.conftest import ROOT, agentrl_cmd

DOCS = [Document("d1", "Eiffel Tower", "The Eiffel Tower is in Paris."),
        Document("d2", "Big Ben", "Big Ben is a clock tower in London.")]
LIMITS = RequestLimits(max_queries=4, max_topk=5, max_query_chars=100, max_body_bytes=4096)


@pytest.fixture
async def client():
    async with TestClient(TestServer(make_app(BM25Index(DOCS), LIMITS))) as c:
        yield c


async def test_a_good_request_gets_the_search_r1_answer(client):
    r = await client.post("/retrieve", json={"queries": ["clock tower london"], "topk": 1, "return_scores": True})
    hit = (await r.json())["result"][0][0]
    assert r.status == 200 and hit["score"] > 0
    assert hit["document"] == {"id": "d2", "contents": '"Big Ben"\nBig Ben is a clock tower in London.'}
    r = await client.post("/retrieve", json={"queries": ["eiffel", "nothing matches"]})
    eiffel = {"id": "d1", "contents": '"Eiffel Tower"\nThe Eiffel Tower is in Paris.'}
    assert (await r.json())["result"] == [[eiffel], []]


def q(**body) -> bytes:
    return json.dumps({"queries": ["eiffel"], **body}).encode()


MALFORMED = [
    ("not JSON", b"{queries:", 400, "the body is not JSON"),
    ("not UTF-8", b'{"queries": ["\xff"]}', 400, "the body is not UTF-8"),
    ("nested too deeply", b"[" * 3000, 400, "the body is not JSON"),
    ("not an object", b'["eiffel"]', 400, "must be a JSON object"),
    ("no queries", b"{}", 400, "'queries' must be a list of strings"),
    ("queries a string", q(queries="eiffel"), 400, "'queries' must be a list of strings"),
    ("a query a number", q(queries=["a", 3]), 400, "'queries' must be a list of strings"),
    ("too many queries", q(queries=["a"] * 5), 400, "too many queries: 5 (at most 4)"),
    ("a huge query", q(queries=["a" * 101]), 400, "longer than 100 characters"),
    ("negative topk", q(topk=-1), 400, "'topk' must be an integer from 1 to 5"),
    ("zero topk", q(topk=0), 400, "'topk'"),
    ("huge topk", q(topk=10**12), 400, "'topk'"),
    ("topk a string", q(topk="3"), 400, "'topk'"),
    ("topk a float", q(topk=2.5), 400, "'topk'"),
    ("topk a boolean", q(topk=True), 400, "'topk'"),
    ("return_scores a string", q(return_scores="yes"), 400, "'return_scores'"),
    ("a body over the limit", q(queries=["a" * 90] * 60), 413, "Maximum request body size 4096 exceeded"),
]


@pytest.mark.parametrize("body,status,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_a_malformed_request_gets_a_4xx_json_error(client, body, status, message):
    r = await client.post("/retrieve", data=body, headers={"Content-Type": "application/json"})
    assert r.status == status and r.content_type == "application/json"
    error = (await r.json())["error"]
    assert message in error and "Traceback" not in error


async def test_wrong_paths_and_methods_get_json_errors_too(client):
    for r in (await client.get("/retrieve"), await client.post("/search", json={})):
        assert r.status in (404, 405) and r.content_type == "application/json" and "error" in await r.json()


async def test_a_failing_search_is_a_500_without_its_traceback():
    class Broken:
        def search(self, query, k):
            raise RuntimeError("index file vanished at /secret/path")

    async with TestClient(TestServer(make_app(Broken()))) as c:
        r = await c.post("/retrieve", json={"queries": ["x"]})
        assert r.status == 500 and await r.json() == {"error": "internal error"}


class SlowIndex:
    """Each 'slow' query holds a worker thread for a while, as a search over a large corpus does."""

    def __init__(self) -> None:
        self.started = threading.Event()

    def search(self, query: str, k: int) -> list:
        if query == "slow":
            self.started.set()
            time.sleep(0.6)
        return [(DOCS[0], 1.0)]


async def test_a_large_request_does_not_hold_up_a_small_one():
    index = SlowIndex()
    async with TestClient(TestServer(make_app(index))) as c:
        large = asyncio.ensure_future(c.post("/retrieve", json={"queries": ["slow"] * 4}))  # 2.4 s of searching
        assert await asyncio.to_thread(index.started.wait, 10)
        t0 = time.perf_counter()
        small = await c.post("/retrieve", json={"queries": ["fast"]})
        assert small.status == 200 and time.perf_counter() - t0 < 1.0
        assert not large.done()  # still searching while the small one was answered
        assert (await large).status == 200


async def test_a_request_whose_reply_would_be_huge_is_refused_before_it_is_built():
    """512 queries x topk 100 over long documents once made a 96 MB reply and held 277 MB."""
    import tracemalloc

    docs = [Document(f"d{i}", f"T{i}", "word " * 2000) for i in range(200)]  # ~10 KB each
    limits = RequestLimits(max_reply_bytes=1 << 20)
    async with TestClient(TestServer(make_app(BM25Index(docs), limits))) as c:
        tracemalloc.start()
        r = await c.post("/retrieve", json={"queries": ["word"] * 512, "topk": 100})
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert r.status == 400 and "the reply would pass 1048576 bytes" in (await r.json())["error"]
        assert peak < 32 << 20


async def test_requests_past_the_concurrency_limit_get_503_at_once():
    index = SlowIndex()
    async with TestClient(TestServer(make_app(index, RequestLimits(max_concurrent=2)))) as c:
        slow = [asyncio.ensure_future(c.post("/retrieve", json={"queries": ["slow"]})) for _ in range(2)]
        assert await asyncio.to_thread(index.started.wait, 10)
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        busy = await c.post("/retrieve", json={"queries": ["fast"]})
        assert busy.status == 503 and busy.headers["Retry-After"] == "1" and time.perf_counter() - t0 < 0.5
        assert "busy" in (await busy.json())["error"]
        assert [r.status for r in await asyncio.gather(*slow)] == [200, 200]
        assert (await c.post("/retrieve", json={"queries": ["fast"]})).status == 200  # free again


@pytest.mark.parametrize("content,message", [
    (None, "is not a file"),
    (b"", "no documents (the file is empty)"),
    (b"\n  \n", "no documents"),
    (b"id,title,contents\n", "line 1: not JSON"),
    (b'{"id": "a", "contents": "x"}\n[1]\n', "line 2: expected an object"),
    (b'{"id": "a", "contents": "caf\xe9"}\n', "line 1: not UTF-8 text"),
    (b'{"id": "a"}\n', "line 1: 'contents' must be a string"),
    (b'{"id": null, "contents": "x"}\n', "line 1: 'id' must be a string or an integer"),
    (b'{"id": 1, "contents": "x", "title": 5}\n', "line 1: 'title' must be a string"),
])
def test_a_bad_corpus_fails_at_start_up_in_one_line(tmp_path, content, message):
    path = tmp_path / "corpus.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(message)) as e:
        load_corpus(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_port_in_use_fails_at_start_up_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([*agentrl_cmd(), "serve-retriever", "--port", str(port)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"agentrl: serve-retriever: cannot listen on 127.0.0.1:{port}")
