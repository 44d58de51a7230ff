"""Resilient HTTP for tool backends: timeouts, retries with exponential back-off and jitter on
timeouts, 429 and 5xx, a concurrency and a rate limit shared by all actors of a node, a circuit breaker.

Errors raise `BackendError` with a message safe to show the model and to log (no keys, no query strings).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Callable

import aiohttp

from agentrl.config import BackendConfig
from agentrl.redaction import redact


class BackendError(RuntimeError):
    """A backend call failed for good (after retries, or with the circuit open)."""


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


class LocalLimits:
    """Concurrency and rate limits within one process."""

    def __init__(self, cfg: BackendConfig) -> None:
        from aiolimiter import AsyncLimiter

        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        self._rate = AsyncLimiter(cfg.rate_per_s, 1.0) if cfg.rate_per_s > 0 else None

    async def acquire(self) -> None:
        await self._sem.acquire()
        if self._rate is not None:
            await self._rate.acquire()

    def release(self) -> None:
        self._sem.release()


class NodeLimiter(LocalLimits):
    """The same limits as a Ray actor, one per backend per node, shared by the node's actors."""

    async def acquire(self) -> None:  # async actor method
        await super().acquire()

    async def release_async(self) -> None:
        self.release()


class _SharedLimits:
    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def acquire(self) -> None:
        await self.handle.acquire.remote()

    def release(self) -> None:
        self.handle.release_async.remote()


def _limits(name: str, cfg: BackendConfig) -> Any:
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return LocalLimits(cfg)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    handle = ray.remote(NodeLimiter).options(
        name=f"agentrl-limits-{name}-{node[:12]}", get_if_exists=True, num_cpus=0, max_concurrency=10000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(cfg)
    return _SharedLimits(handle)


RETRY_STATUS = {429, 500, 502, 503, 504}


class Backend:
    """One web backend used by a tool."""

    def __init__(self, name: str, cfg: BackendConfig,
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None) -> None:
        self.name, self.cfg = name, cfg
        self.breaker = CircuitBreaker(cfg.breaker_failures, cfg.breaker_reset_s)
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
            self._limits = _limits(self.name, self.cfg)
        return self._session

    async def request(self, method: str, url: str, *, parse: str = "json", max_bytes: int = 0,
                      **kwargs: Any) -> Any:
        """Send with retries; returns parsed JSON, text, or (response, body) for parse='raw'
        (the body read up to max_bytes + 1, so an oversized page is detected without reading it all)."""
        if not self.breaker.allow():
            raise BackendError(f"{self.name}: circuit open after repeated failures")
        last = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                delay = self.cfg.backoff_s * (2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random()))  # jitter
            session = await self.session()
            await self._limits.acquire()
            try:
                self.calls += 1
                timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
                async with session.request(method, url, timeout=timeout, **kwargs) as resp:
                    if resp.status in RETRY_STATUS:
                        last = f"HTTP {resp.status}"
                        continue
                    if resp.status >= 400:
                        self.breaker.record(False)
                        raise BackendError(f"{self.name}: HTTP {resp.status}")
                    if parse == "json":
                        out = await resp.json(content_type=None)
                    elif parse == "text":
                        out = await resp.text()
                    else:
                        out = (resp, await resp.content.read(max_bytes + 1 if max_bytes else -1))
                    self.breaker.record(True)
                    return out
            except asyncio.TimeoutError:
                last = "timeout"
            except aiohttp.ClientError as e:
                last = redact(type(e).__name__)
            finally:
                self._limits.release()
        self.breaker.record(False)
        raise BackendError(f"{self.name}: failed after {self.cfg.retries + 1} attempts ({last})")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
