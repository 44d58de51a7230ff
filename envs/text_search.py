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
import os
from dataclasses import dataclass
from typing import Any

from agentrl.envs.tool import Observation, Tool, TrajectoryState, register_tool

from agentrl.config import TextSearchConfig, ToolsConfig
from agentrl.web.http import Backend, BackendError

DEFAULT_URLS = {"serpapi": "https://serpapi.com/search", "searxng": "http://127.0.0.1:8888",
                "retriever": "http://127.0.0.1:8000"}
SUMMARY_PROMPT = ("Summarise the web page below for the query, keeping only facts that help answer it, in at "
                  "most three sentences.\n\nQuery: {query}\n\nPage:\n{page}")


@dataclass
class SearchHit:
    title: str
    url: str
    snippet: str


def _key(env: str, what: str) -> str:
    value = os.environ.get(env, "")
    if not value:
        raise BackendError(f"{what} needs the {env} environment variable")
    return value


@register_tool
class TextSearchTool(Tool):
    """Searches the web with a text query: summaries of the top pages with links (serpapi, searxng, ...)."""

    name = "text_search"
    cacheable = True

    def __init__(self, cfg: TextSearchConfig, tools: ToolsConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backend = f"{cfg.backend}+{cfg.reader}+{cfg.summariser}"
        self.base_url = (cfg.base_url or DEFAULT_URLS.get(cfg.backend, "")).rstrip("/")
        self.search_http = Backend(f"text-{cfg.backend}", cfg.http)
        self.reader_http = Backend(f"reader-{cfg.reader}", cfg.http)
        self.summary_http = Backend("summariser", cfg.http)
        self._index: Any = None
        self._fetcher: Any = None
        if cfg.reader == "direct":
            from agentrl.web.safe_fetch import SafeFetcher

            self._fetcher = SafeFetcher(cfg.http, (tools or ToolsConfig()).fetch)

    @classmethod
    def from_config(cls, cfg: Any) -> Tool:
        tools = cfg.tools if cfg is not None else ToolsConfig()
        return cls(tools.text_search, tools)

    def parse_args(self, action_text: str) -> dict[str, Any]:
        query = " ".join(action_text.split())
        if not query:
            raise ValueError("empty query")
        return {"query": query}

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
            return [SearchHit(r.get("title", ""), r.get("link", ""), r.get("snippet", ""))
                    for r in (data.get("organic_results") or [])[:k]]
        if c.backend == "searxng":
            data = await self.search_http.request("GET", f"{self.base_url}/search",
                                                  params={"q": query, "format": "json"})
            return [SearchHit(r.get("title", ""), r.get("url", ""), r.get("content", ""))
                    for r in (data.get("results") or [])[:k]]
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
    async def read(self, hit: SearchHit) -> str:
        c = self.cfg
        if c.reader == "none" or not hit.url.startswith(("http://", "https://")):
            return hit.snippet
        if c.reader == "jina":
            headers = {"Authorization": f"Bearer {os.environ['JINA_API_KEY']}"} if os.environ.get(
                "JINA_API_KEY") else {}
            text = await self.reader_http.request("GET", c.reader_url + hit.url, parse="text", headers=headers)
        else:
            text = await self._fetcher.fetch_text(hit.url)
        return text[: c.max_page_chars]

    async def summarise(self, query: str, page: str) -> str:
        c = self.cfg
        if c.summariser == "none" or not page:
            return page[: c.max_page_chars]
        headers = {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"} if os.environ.get(
            "OPENAI_API_KEY") else {}
        data = await self.summary_http.request("POST", c.summariser_url.rstrip("/") + "/chat/completions",
                                               headers=headers, json={
            "model": c.summariser_model, "max_tokens": 256, "temperature": 0.0,
            "messages": [{"role": "user", "content": SUMMARY_PROMPT.format(query=query, page=page)}]})
        return str(data["choices"][0]["message"]["content"]).strip()

    async def _one(self, query: str, hit: SearchHit) -> str:
        try:
            return await self.summarise(query, await self.read(hit))
        except BackendError:
            return hit.snippet  # a page that cannot be read still has its snippet

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        query = args["query"]
        hits = await self.search(query)
        if not hits:
            return Observation(f"No results for '{query}'.")
        summaries = await asyncio.gather(*[self._one(query, h) for h in hits])
        lines, used = [], 0
        for i, (hit, summary) in enumerate(zip(hits, summaries, strict=True), 1):
            line = f"{i}. {hit.title} ({hit.url}): {' '.join(summary.split())}"
            line = line[: max(self.cfg.max_output_chars - used, 0)]
            if not line:
                break
            lines.append(line)
            used += len(line) + 1
        return Observation("\n".join(lines))

    async def close(self) -> None:
        for b in (self.search_http, self.reader_http, self.summary_http):
            await b.close()
        if self._fetcher is not None:
            await self._fetcher.backend.close()
