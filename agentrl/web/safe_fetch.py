"""Fetching third-party URLs (pages for the `direct` reader, image-search thumbnails) without SSRF:
only http/https to public addresses, checked for every URL and every redirect target (IP literals
included), and again at connection time (a resolver that drops non-public addresses, so a name that
re-resolves elsewhere is caught), with size, redirect and content-type limits. `tools.fetch.allow_hosts`
opens named hosts (loopback for tests).

A body over `tools.fetch.max_bytes` is refused (`Oversize`, from the backend's one size rule), or for
pages with `tools.fetch.on_oversize=truncate` cut at the limit and marked as cut (`Page.cut_at`); an
image over the limit is always refused (a cut image is corrupt).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from agentrl.config import BackendConfig, FetchConfig
from agentrl.deadline import DeadlinePool
from agentrl.web.http import Backend, BackendError, Page, RawReply, decode_text


class UnsafeURL(BackendError):
    """The URL is not allowed (invalid, its scheme, or an address that is not public)."""


# IPv6 ranges Python's ipaddress counts as global that still reach private networks: 6to4 embeds any
# IPv4 address (2002:7f00:1:: is 127.0.0.1), site-local is deprecated but routed inside sites.
NOT_PUBLIC_V6 = (ipaddress.ip_network("2002::/16"), ipaddress.ip_network("fec0::/10"))
REDIRECTS = (301, 302, 303, 307, 308)


def is_public(ip: str) -> bool:
    """Whether an address is on the public internet (False for anything unparsable)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        elif any(addr in net for net in NOT_PUBLIC_V6):
            return False
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
    """Refuse invalid and non-http(s) URLs and hosts whose addresses are not all public.

    aiohttp never asks the resolver about an IP literal, so this is where literals are checked."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError as e:  # a bad port, a broken IPv6 literal
        raise UnsafeURL(f"refused: invalid URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"refused: scheme '{parts.scheme}' in {parts.scheme}://{host}")
    if not host:
        raise UnsafeURL("refused: URL has no host")
    if host in cfg.allow_hosts:
        return
    try:
        ips = [ipaddress.ip_address(host).compressed]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port or 80)
        except (OSError, UnicodeError):  # unknown name, or not even a valid one
            raise UnsafeURL(f"refused: cannot resolve {host}") from None
        ips = [info[4][0] for info in infos]
    if not ips or not all(is_public(ip) for ip in ips):
        raise UnsafeURL(f"refused: {host} resolves to a non-public address")


def content_type_allowed(ctype: str, allowed: Sequence[str]) -> bool:
    """Exact types ("text/html"), or a family by its prefix ("image/")."""
    return any(ctype == t or (t.endswith("/") and ctype.startswith(t)) for t in allowed)


class SafeFetcher:
    """GETs third-party pages and images; its backend has no circuit breaker (one dead host says
    nothing about the next)."""

    def __init__(self, backend_cfg: BackendConfig, cfg: FetchConfig, name: str = "fetch") -> None:
        self.cfg = cfg

        def session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(cfg.allow_hosts))
            return aiohttp.ClientSession(connector=connector)

        self.backend = Backend(name, backend_cfg, session_factory=session, breaker=False)

    async def fetch(self, url: str, content_types: Sequence[str], on_oversize: str = "refuse") -> RawReply:
        """The answer to GET url after at most `max_redirects` redirects, each target checked; its
        content type must start with one of `content_types`. A body over max_bytes raises Oversize, or
        with on_oversize='truncate' comes back cut (`oversize` set)."""
        for _ in range(self.cfg.max_redirects + 1):
            await check_url(url, self.cfg)
            reply = await self.backend.request("GET", url, parse="raw", allow_redirects=False,
                                               max_bytes=self.cfg.max_bytes, on_oversize=on_oversize,
                                               headers={"User-Agent": "agentrl-reader"})
            if reply.status in REDIRECTS:
                url = urljoin(url, reply.headers.get("Location", ""))
                continue
            if not content_type_allowed(reply.content_type, content_types):
                raise UnsafeURL(f"refused: content type '{reply.content_type}'")
            return reply
        raise UnsafeURL(f"refused: more than {self.cfg.max_redirects} redirects")

    async def fetch_page(self, url: str) -> Page:
        """A page's text (HTML reduced to its main text); cut or refused past max_bytes, as configured."""
        return await self.page_text(await self.fetch_page_bytes(url))

    async def fetch_page_bytes(self, url: str) -> RawReply:
        """A page as fetched (the first half of `fetch_page`)."""
        return await self.fetch(url, self.cfg.content_types, self.cfg.on_oversize)

    async def page_text(self, reply: RawReply) -> Page:
        """A fetched page's text (the second half of `fetch_page`)."""
        text = decode_text(reply.body, reply.charset)
        if "html" in reply.content_type:  # CPU work on a web page: in a worker process, killed at a deadline
            text = await HTML_WORKERS.acall("agentrl.web.safe_fetch:html_to_text", (text,), HTML_TIMEOUT_S)
        return Page(text, self.cfg.max_bytes if reply.oversize else 0)

    async def fetch_image(self, url: str) -> bytes:
        """An image's bytes, whole; refused (Oversize) past max_bytes."""
        return (await self.fetch(url, ["image/"])).body

    async def close(self) -> None:
        await self.backend.close()


HTML_TIMEOUT_S = 10.0  # a page's main text; hostile markup can keep the extractor busy far longer
HTML_WORKERS = DeadlinePool(2)  # this process's extraction workers (the machine's cores, here two)


def html_to_text(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, include_comments=False) or ""
