"""The `text_search` tool: query -> search backend -> page reader -> summariser -> a numbered list of
summaries with their links, within a character budget.

Search backends: `serpapi` (Google via SerpAPI, key from SERPAPI_API_KEY), `searxng` (its JSON API),
`retriever` (the Search-R1 retrieval-server API), `local` (in-process BM25 over a JSONL corpus).
Readers: `jina` (JINA Reader, key from JINA_API_KEY), `direct` (our SSRF-safe fetch + text extraction),
`none` (snippets). Summarisers: `openai` (any OpenAI-compatible chat endpoint, key from
OPENAI_API_KEY if set), `none` (truncated page text).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agentrl.config import TextSearchConfig, ToolsConfig
from agentrl.envs.tool import Observation, Tool, TrajectoryState, escape_text, register_tool, within_call_deadline
from agentrl.errors import UserError
from agentrl.timing import StageClock
from agentrl.web.cache import content_hash
from agentrl.web.chat import ChatClient
from agentrl.web.http import Backend, BackendError, Page
from agentrl.web.safe_fetch import SafeFetcher

DEFAULT_URLS = {"serpapi": "https://serpapi.com/search", "searxng": "http://127.0.0.1:8888",
                "retriever": "http://127.0.0.1:8000"}
SUMMARY_PROMPT = ("Summarise the web page below for the query, keeping only facts that help answer it, in at "
                  "most three sentences.\n\nQuery: {query}\n\nPage:\n{page}")


@dataclass
class SearchHit:
    title: str
    url: str
    snippet: str

    @classmethod
    def from_result(cls, result: Any, title: str, url: str, snippet: str) -> SearchHit | None:
        """A hit from one result object of a search API's JSON; a field that is null or not text is empty
        text, a result that is no object is None (dropped)."""
        if not isinstance(result, dict):
            return None
        text = [v if isinstance(v, str) else "" for v in (result.get(title), result.get(url), result.get(snippet))]
        return cls(*text)


def _hits(data: Any, key: str, k: int, *fields: str) -> list[SearchHit]:
    """The first `k` hits of a search API's reply `data[key]`; whatever else the reply holds is dropped."""
    results = data.get(key) if isinstance(data, dict) else None
    hits = (SearchHit.from_result(r, *fields) for r in (results if isinstance(results, list) else []))
    return [h for h in hits if h is not None][:k]


def corpus_identity(path: str) -> str:
    """A content hash of the corpus file (of the built-in demo corpus when no path is set)."""
    if not path:
        from agentrl.data.synthetic import demo_corpus

        return content_hash(repr(demo_corpus()))
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:32]


def _key(env: str, what: str) -> str:
    value = os.environ.get(env, "")
    if not value:
        raise BackendError(f"{what} needs the {env} environment variable")
    return value


@register_tool
class TextSearchTool(Tool):
    """Searches the web with a text query: summaries of the top pages with links (serpapi, searxng, ...).

    A hit whose page cannot be read or summarised (a dead or refused link, a bad reply) keeps its search
    snippet; `stats["snippet_fallbacks"]` counts them (and `snippet_fallbacks.<error type>` by cause),
    `stats["pages_cut"]` the pages cut at max_bytes.
    """

    name = "text_search"
    cacheable = True

    def __init__(self, cfg: TextSearchConfig, tools: ToolsConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backend = f"{cfg.backend}+{cfg.reader}+{cfg.summariser}"
        self.base_url = (cfg.base_url or DEFAULT_URLS.get(cfg.backend, "")).rstrip("/")
        self.search_http = Backend(f"text-{cfg.backend}", cfg.http)
        self.reader_http = Backend(f"reader-{cfg.reader}", cfg.http)
        self.summariser = ChatClient("summariser", cfg.summariser_url, cfg.summariser_model, cfg.http,
                                     api_key_env="OPENAI_API_KEY")
        self.fetch_cfg = (tools or ToolsConfig()).fetch
        self.fetcher = SafeFetcher(cfg.http, self.fetch_cfg) if cfg.reader == "direct" else None
        self._index: Any = None
        self._corpus_id = ""
        self.stats: Counter = Counter(snippet_fallbacks=0, pages_cut=0)  # reported from the start, at 0
        self.stage_clock = StageClock()  # seconds per stage: search, fetch and reader (or jina), summariser

    @classmethod
    def from_config(cls, cfg: Any) -> Tool:
        tools = cfg.tools if cfg is not None else ToolsConfig()
        return cls(tools.text_search, tools)

    def check(self) -> None:
        """A local corpus (`tools.text_search.corpus`) that cannot be read fails now, naming the key and file."""
        if self.cfg.backend == "local" and self.cfg.corpus:
            from agentrl.envs.retriever import load_corpus

            try:
                load_corpus(self.cfg.corpus)
            except UserError as e:
                raise UserError(f"tools.text_search.corpus: {e}") from None
            except OSError as e:
                raise UserError(f"tools.text_search.corpus: cannot read {self.cfg.corpus} ({e.strerror})") from None

    def parse_args(self, action_text: str) -> dict[str, Any]:
        query = " ".join(action_text.split())
        if not query:
            raise ValueError("empty query")
        return {"query": query}

    def cache_identity(self, state: TrajectoryState) -> dict[str, Any]:
        c = self.cfg
        if c.backend == "local" and not self._corpus_id:
            self._corpus_id = corpus_identity(c.corpus)  # once: a large corpus takes a moment to hash
        identity = {"backend": c.backend, "top_k": c.top_k, "reader": c.reader, "summariser": c.summariser,
                    "max_page_chars": c.max_page_chars, "max_output_chars": c.max_output_chars}
        if c.backend == "local":
            identity.update(corpus=self._corpus_id, retrieval=c.retrieval)
        else:
            identity["base_url"] = self.base_url
        if c.reader == "jina":
            identity["reader_url"] = c.reader_url
        if c.reader in ("jina", "direct"):
            identity.update(max_bytes=self.fetch_cfg.max_bytes, on_oversize=self.fetch_cfg.on_oversize)
        if c.summariser == "openai":
            identity.update(summariser_url=c.summariser_url, summariser_model=c.summariser_model,
                            summary_prompt=content_hash(SUMMARY_PROMPT))
        return identity

    # ---- search backends ----------------------------------------------------------------------
    async def search(self, query: str) -> list[SearchHit]:
        c, k = self.cfg, self.cfg.top_k
        if c.backend == "local":
            if self._index is None:
                from agentrl.envs.retriever import load_corpus, make_index

                self._index = make_index(load_corpus(c.corpus), c.retrieval)
            return [SearchHit(d.title, f"local://{d.id}", d.contents) for d, _ in self._index.search(query, k)]
        if c.backend == "serpapi":
            data = await self.search_http.request("GET", self.base_url, params={
                "engine": "google", "q": query, "num": k, "api_key": _key("SERPAPI_API_KEY", "serpapi")})
            return _hits(data, "organic_results", k, "title", "link", "snippet")
        if c.backend == "searxng":
            data = await self.search_http.request("GET", f"{self.base_url}/search",
                                                  params={"q": query, "format": "json"})
            return _hits(data, "results", k, "title", "url", "content")
        if c.backend == "retriever":
            from agentrl.envs.retriever import parse_retriever_hit

            data = await self.search_http.request("POST", f"{self.base_url}/retrieve",
                                                  json={"queries": [query], "topk": k, "return_scores": True})
            hits = []
            for hit in (data.get("result") or [[]])[0][:k]:
                title, text = parse_retriever_hit(hit)
                doc_id = hit.get("document", hit).get("id", "")
                hits.append(SearchHit(title, f"retriever://{doc_id}", text))
            return hits
        raise BackendError(f"unknown text search backend '{c.backend}'")

    # ---- reader and summariser ------------------------------------------------------------------
    async def read(self, hit: SearchHit) -> Page:
        c = self.cfg
        if c.reader == "none" or not hit.url.startswith(("http://", "https://")):
            return Page(hit.snippet)
        if c.reader == "jina":
            headers = {"Authorization": f"Bearer {os.environ['JINA_API_KEY']}"} if os.environ.get(
                "JINA_API_KEY") else {}
            async with self.stage_clock.timed("reader"):
                page = await self.reader_http.request("GET", c.reader_url + hit.url, parse="text", headers=headers,
                                                      max_bytes=self.fetch_cfg.max_bytes,
                                                      on_oversize=self.fetch_cfg.on_oversize)
        else:
            assert self.fetcher is not None
            async with self.stage_clock.timed("fetch"):
                reply = await self.fetcher.fetch_page_bytes(hit.url)
            async with self.stage_clock.timed("reader"):
                page = await self.fetcher.page_text(reply)
        return Page(page.text[: c.max_page_chars], page.cut_at)

    async def summarise(self, query: str, page: str) -> str:
        c = self.cfg
        if c.summariser == "none" or not page:
            return page[: c.max_page_chars]
        prompt = SUMMARY_PROMPT.format(query=query, page=page)
        async with self.stage_clock.timed("summariser"):
            reply = await self.summariser.complete([{"role": "user", "content": prompt}],
                                                   max_tokens=c.summary_max_tokens)
        return reply.strip()

    async def _read_and_summarise(self, query: str, hit: SearchHit) -> tuple[Page, str]:
        page = await self.read(hit)
        return page, await self.summarise(query, page.text)

    async def _one(self, query: str, hit: SearchHit) -> str:
        try:  # within the call's deadline: a page still loading then is dropped, the others kept
            page, summary = await within_call_deadline(self._read_and_summarise(query, hit))
        except Exception as e:  # one bad link (refused, dead, a bad reply) never fails the call: it keeps its snippet
            self.stats["snippet_fallbacks"] += 1
            self.stats[f"snippet_fallbacks.{type(e).__name__}"] += 1  # e.g. .Oversize, .UnsafeURL, .BackendError
            return hit.snippet
        if page.cut_at:
            self.stats["pages_cut"] += 1
            return f"[page cut at {page.cut_at} bytes] {summary}"
        return summary

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        query = args["query"]
        async with self.stage_clock.timed("search"):
            hits = await self.search(query)
        if not hits:
            return Observation(escape_text(f"No results for '{query}'."))
        summaries = await asyncio.gather(*[self._one(query, h) for h in hits])
        lines, used = [], 0
        for i, (hit, summary) in enumerate(zip(hits, summaries, strict=True), 1):
            # web text: escaped, so a title or page can never place or move an image
            line = escape_text(f"{i}. {hit.title} ({hit.url}): {' '.join(summary.split())}")
            line = line[: max(self.cfg.max_output_chars - used, 0)]
            if not line:
                break
            lines.append(line)
            used += len(line) + 1
        return Observation("\n".join(lines))

    async def close(self) -> None:
        for b in (self.search_http, self.reader_http, self.summariser.http):
            await b.close()
        if self.fetcher is not None:
            await self.fetcher.close()
