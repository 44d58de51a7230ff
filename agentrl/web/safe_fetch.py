"""Fetching pages without SSRF: only http/https to public addresses, checked again after every
redirect and at connection time (a resolver that drops non-public addresses), with size, redirect
and content-type limits. `tools.fetch.allow_hosts` opens named hosts (loopback for tests)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from agentrl.config import FetchConfig
from agentrl.web.http import Backend, BackendError


class UnsafeURL(BackendError):
    """The URL is not allowed (scheme, or an address that is not public)."""


def is_public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not (addr.is_private or addr.is_loopback or addr.is_link_local
                                   or addr.is_multicast or addr.is_reserved or addr.is_unspecified)


class PublicOnlyResolver(AbstractResolver):
    """Resolves like the default resolver, then keeps only public addresses (or allowed hosts)."""

    def __init__(self, allow_hosts: list[str]) -> None:
        self._inner = DefaultResolver()
        self._allow = set(allow_hosts)

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        infos = await self._inner.resolve(host, port, family)
        if host in self._allow:
            return infos
        safe = [i for i in infos if is_public(i["host"])]
        if not safe:
            raise UnsafeURL(f"refused: {host} resolves to no public address")
        return safe

    async def close(self) -> None:
        await self._inner.close()


async def check_url(url: str, cfg: FetchConfig) -> None:
    """Refuse non-http(s) URLs and hosts whose addresses are not all public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"refused: scheme '{parts.scheme}' in {parts.scheme}://{parts.hostname or ''}")
    host = parts.hostname or ""
    if not host:
        raise UnsafeURL("refused: URL has no host")
    if host in cfg.allow_hosts:
        return
    try:
        ips = [ipaddress.ip_address(host).compressed]
    except ValueError:
        import asyncio

        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 80)
        except socket.gaierror:
            raise UnsafeURL(f"refused: cannot resolve {host}") from None
        ips = [info[4][0] for info in infos]
    bad = [ip for ip in ips if not is_public(ip)]
    if bad or not ips:
        raise UnsafeURL(f"refused: {host} resolves to a non-public address")


class SafeFetcher:
    """GETs pages for the `direct` reader."""

    def __init__(self, backend_cfg: Any, cfg: FetchConfig) -> None:
        self.cfg = cfg

        def session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(cfg.allow_hosts))
            return aiohttp.ClientSession(connector=connector)

        self.backend = Backend("fetch", backend_cfg, session_factory=session)

    async def fetch_text(self, url: str) -> str:
        """Page text, following at most `max_redirects` redirects, each target checked."""
        for _ in range(self.cfg.max_redirects + 1):
            await check_url(url, self.cfg)
            resp, body = await self.backend.request("GET", url, parse="raw", allow_redirects=False,
                                                    max_bytes=self.cfg.max_bytes,
                                                    headers={"User-Agent": "agentrl-reader"})
            if resp.status in (301, 302, 303, 307, 308):
                url = urljoin(url, resp.headers.get("Location", ""))
                continue
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype not in self.cfg.content_types:
                raise UnsafeURL(f"refused: content type '{ctype}'")
            if len(body) > self.cfg.max_bytes:
                raise UnsafeURL(f"refused: page larger than {self.cfg.max_bytes} bytes")
            text = body.decode(resp.charset or "utf-8", errors="replace")
            return html_to_text(text) if "html" in ctype else text
        raise UnsafeURL(f"refused: more than {self.cfg.max_redirects} redirects")


def html_to_text(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, include_comments=False) or ""
