"""Resilient HTTP for tool backends: timeouts, retries with exponential back-off and jitter on
timeouts, 429 and 5xx, a concurrency and a rate limit shared by all actors of a node, a circuit breaker.

Errors raise `BackendError` with a message safe to show the model and to log (no keys, no query strings).
The breaker counts only outages of the server (5xx, 429, timeouts, connection errors): a 4xx answer is
this request's failure, not the server's.

Every body (JSON, text, raw) is read in full up to a byte limit and never past it: the caller's
`max_bytes` (pages and images: `tools.fetch.max_bytes`), else the backend's `max_response_bytes`. A body
over the limit raises `Oversize`, or with `on_oversize="truncate"` (text and raw only: a cut JSON is
no JSON) comes back cut, saying so (`Page.cut_at`, `RawReply.oversize`) so the caller can mark and count it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp

from agentrl.config import BackendConfig
from agentrl.redaction import redact


class BackendError(RuntimeError):
    """A backend call failed for good (after retries, or with the circuit open)."""


class Oversize(BackendError):
    """The body is larger than its byte limit (and not to be cut)."""


class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `reset_s` lets one trial call through."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self.failures, self.reset_s = failures, reset_s
        self.consecutive = 0
        self.opened_at: float | None = None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        return time.monotonic() - self.opened_at >= self.reset_s  # half-open: one trial

    def record(self, ok: bool) -> None:
        if ok:
            self.consecutive, self.opened_at = 0, None
        else:
            self.consecutive += 1
            if self.consecutive >= self.failures:
                self.opened_at = time.monotonic()


def rate_limiter(rate_per_s: float) -> Any:
    """An aiolimiter bucket of `rate_per_s` calls a second (None for 0: no limit).

    aiolimiter refuses to acquire more than its capacity, so a rate below 1 is one call per 1/rate
    seconds rather than a fraction of a call per second.
    """
    if rate_per_s <= 0:
        return None
    from aiolimiter import AsyncLimiter

    burst = max(rate_per_s, 1.0)
    return AsyncLimiter(burst, burst / rate_per_s)


class LocalLimits:
    """Concurrency and rate limits within one process. A call cancelled while it waits gives its slot back."""

    def __init__(self, cfg: BackendConfig) -> None:
        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        self._rate = rate_limiter(cfg.rate_per_s)

    async def acquire(self) -> None:
        await self._sem.acquire()
        try:
            if self._rate is not None:
                await self._rate.acquire()
        except BaseException:  # cancelled (or timed out) waiting for the rate limiter: the slot goes back
            self._sem.release()
            raise

    def release(self) -> None:
        self._sem.release()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot (and one rate token) for the body of the `async with`."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()


class NodeLimiter:
    """The same limits as a Ray actor, one per backend per node, shared by the node's actors.

    Every acquire carries the caller's ticket. A caller cancelled while its acquire is in flight sends
    `release(ticket)`, which gives the slot back in any order of events: held -> released; still
    waiting -> the wait is cancelled; not yet started -> the acquire, when it arrives, takes nothing.
    """

    def __init__(self, cfg: BackendConfig) -> None:
        self.limits = LocalLimits(cfg)
        self.waiting: dict[str, asyncio.Task] = {}
        self.held: set[str] = set()
        self.abandoned: set[str] = set()

    async def acquire(self, ticket: str) -> bool:
        """Take a slot for `ticket`; False when the ticket was released before it got one."""
        if ticket in self.abandoned:
            self.abandoned.discard(ticket)
            return False
        task = asyncio.current_task()
        assert task is not None
        self.waiting[ticket] = task
        try:
            await self.limits.acquire()
        except asyncio.CancelledError:  # release(ticket) cancelled the wait (LocalLimits gave the slot back)
            return False
        finally:
            self.waiting.pop(ticket, None)
        self.held.add(ticket)
        return True

    async def release(self, ticket: str) -> None:
        if ticket in self.held:
            self.held.discard(ticket)
            self.limits.release()
        elif ticket in self.waiting:
            self.waiting[ticket].cancel()
        else:
            self.abandoned.add(ticket)


class SharedLimits:
    """The caller's side of a NodeLimiter actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        ticket = uuid.uuid4().hex
        try:
            got = await self.handle.acquire.remote(ticket)
        except BaseException:  # cancelled while the remote acquire is in flight: it may still land
            self.handle.release.remote(ticket)
            raise
        if not got:
            raise BackendError("concurrency slot withdrawn")
        try:
            yield
        finally:
            self.handle.release.remote(ticket)


# Every NodeLimiter actor's name starts so: `stop_actors` kills this run's limiters by it.
NODE_LIMITER_PREFIX = "agentrl-limits-"


def node_limits(name: str, cfg: BackendConfig) -> LocalLimits | SharedLimits:
    """The node-shared limiter inside a Ray actor, a process-local one elsewhere."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return LocalLimits(cfg)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    handle = ray.remote(NodeLimiter).options(
        name=f"{NODE_LIMITER_PREFIX}{name}-{node[:12]}", get_if_exists=True, num_cpus=0, max_concurrency=10000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(cfg)
    return SharedLimits(handle)


RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass
class Page:
    """A text body (`parse="text"`, or a fetched page); `cut_at` is the byte limit it was cut at (0: read whole)."""

    text: str
    cut_at: int = 0


@dataclass
class RawReply:
    """An answer read as bytes (`parse="raw"`): `body` holds at most max_bytes; `oversize` says more was sent."""

    status: int
    headers: Mapping[str, str]
    charset: str | None
    body: bytes
    oversize: bool

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


async def read_body(resp: aiohttp.ClientResponse, max_bytes: int) -> tuple[bytes, bool]:
    """The body read in full up to max_bytes, chunk by chunk (a single read returns only what one
    network chunk brought); and whether the server sent more than that."""
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > max_bytes:
            return bytes(buf[:max_bytes]), True
    return bytes(buf), False


# The web's text encodings (the WHATWG Encoding Standard's, as Python names them): each decodes in linear
# time. A server may declare any codec Python has; `punycode` decodes a megabyte in about 40 s (quadratic),
# and others (`rot13`, `zlib`...) are not charsets at all, so anything else is read as UTF-8.
WEB_CHARSETS = frozenset({
    "utf-8", "utf-16", "utf-16-be", "utf-16-le", "ascii", "iso8859-1", "iso8859-2", "iso8859-3", "iso8859-4",
    "iso8859-5", "iso8859-6", "iso8859-7", "iso8859-8", "iso8859-10", "iso8859-13", "iso8859-14", "iso8859-15",
    "iso8859-16", "cp866", "cp874", "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256",
    "cp1257", "cp1258", "koi8-r", "koi8-u", "mac-roman", "mac-cyrillic", "gbk", "gb2312", "gb18030", "big5",
    "big5hkscs", "euc_jp", "iso2022_jp", "shift_jis", "cp932", "euc_kr", "cp949"})


def web_charset(charset: str | None) -> str:
    """The codec to decode a body with: the declared charset if it is one of the web's, else UTF-8."""
    try:
        name = codecs.lookup(charset or "utf-8").name
    except LookupError:
        return "utf-8"
    return name if name in WEB_CHARSETS else "utf-8"


def decode_text(body: bytes, charset: str | None) -> str:
    """Bytes as text in the declared charset (`web_charset`); bad bytes decode leniently."""
    return body.decode(web_charset(charset), errors="replace")


def parse_json(body: bytes, charset: str | None) -> Any:
    """A JSON body in its declared charset (json detects UTF-8/16/32 when none is declared); ValueError
    when it is not JSON."""
    return json.loads(body.decode(web_charset(charset)) if charset else body)


class _Retry(Exception):
    """A retryable answer (429, 5xx)."""


class Backend:
    """One web backend used by a tool. `breaker=False` for third-party pages, whose failures say
    nothing about the next host."""

    def __init__(self, name: str, cfg: BackendConfig,
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None, breaker: bool = True) -> None:
        self.name, self.cfg = name, cfg
        self.breaker = CircuitBreaker(cfg.breaker_failures if breaker else 1 << 62, cfg.breaker_reset_s)
        self._limits: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._session_factory = session_factory or aiohttp.ClientSession
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls = 0  # requests actually sent (tests count network calls with it)

    async def session(self) -> aiohttp.ClientSession:
        # a session (and the limits) belong to one event loop; a tool used from a new loop gets new ones
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session, self._loop = self._session_factory(), loop
            self._limits = node_limits(self.name, self.cfg)
        return self._session

    async def request(self, method: str, url: str, *, parse: str = "json", max_bytes: int = 0,
                      on_oversize: str = "refuse", **kwargs: Any) -> Any:
        """Send with retries; returns parsed JSON, a Page for parse='text', or a RawReply for parse='raw'.
        The body is read up to max_bytes (0: the backend's max_response_bytes); past it the call raises
        Oversize, or with on_oversize='truncate' a text or raw body comes back cut, saying so."""
        limit = max_bytes or self.cfg.max_response_bytes
        cut = on_oversize == "truncate" and parse != "json"
        if not self.breaker.allow():
            raise BackendError(f"{self.name}: circuit open after repeated failures")
        last = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                delay = self.cfg.backoff_s * (2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random()))  # jitter
            session = await self.session()
            try:
                async with self._limits.slot():
                    self.calls += 1
                    return await self._send(session, method, url, parse, limit, cut, kwargs)
            except _Retry as e:
                last = str(e)
            except TimeoutError:
                last = "timeout"
            except aiohttp.ClientError as e:
                last = redact(type(e).__name__)
        self.breaker.record(False)
        raise BackendError(f"{self.name}: failed after {self.cfg.retries + 1} attempts ({last})")

    async def _send(self, session: aiohttp.ClientSession, method: str, url: str, parse: str, max_bytes: int,
                    cut: bool, kwargs: dict[str, Any]) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        async with session.request(method, url, timeout=timeout, **kwargs) as resp:
            if resp.status in RETRY_STATUS:
                raise _Retry(f"HTTP {resp.status}")
            self.breaker.record(True)  # the server answered; a 4xx refuses this request, not the service
            if resp.status >= 400:
                raise BackendError(f"{self.name}: HTTP {resp.status}")
            body, oversize = await read_body(resp, max_bytes)
            if oversize and not cut:
                raise Oversize(f"{self.name}: refused a reply larger than {max_bytes} bytes")
            if parse == "json":
                try:
                    return parse_json(body, resp.charset)
                except (ValueError, LookupError):  # not JSON, bad bytes, an unknown charset, a huge number
                    raise BackendError(f"{self.name}: the reply is not JSON") from None
            if parse == "text":
                return Page(decode_text(body, resp.charset), max_bytes if oversize else 0)
            return RawReply(resp.status, resp.headers, resp.charset, body, oversize)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
