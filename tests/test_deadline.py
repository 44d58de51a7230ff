"""CPU work on untrusted input in worker processes killed at a deadline (agentrl/deadline.py): a call that
runs on is stopped at its deadline from any thread, the next call gets a fresh worker, errors come back as
one line; a pool serves many coroutines, and page extraction that runs past its deadline costs one page."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agentrl.deadline import DeadlineExceeded, DeadlinePool, DeadlineWorker, WorkerFailed


def test_a_call_past_its_deadline_is_killed_from_another_thread_and_the_worker_replaced():
    worker = DeadlineWorker()
    out: list = []

    def off_the_main_thread() -> None:  # where Ray runs actor methods, and signal timeouts do not work
        t0 = time.monotonic()
        try:
            worker.call("time:sleep", (60,), 1.0)
        except DeadlineExceeded as e:
            out.append((time.monotonic() - t0, str(e)))

    thread = threading.Thread(target=off_the_main_thread)
    thread.start()
    thread.join(30)
    (seconds, message), = out
    assert seconds < 5 and message == "time:sleep ran past its 1 s deadline" and worker.killed == 1
    assert worker.call("math:factorial", (5,), 10.0) == 120  # a fresh worker
    with pytest.raises(WorkerFailed, match="ValueError: factorial\\(\\) not defined for negative values"):
        worker.call("math:factorial", (-1,), 10.0)
    worker.close()


def test_a_pool_runs_calls_side_by_side_and_bounds_them():
    pool = DeadlinePool(2)

    async def three() -> list:
        return await asyncio.gather(*[pool.acall("time:sleep", (1,), 10.0) for _ in range(3)])

    t0 = time.monotonic()
    assert asyncio.run(three()) == [None] * 3
    assert 2.0 <= time.monotonic() - t0 < 6  # two at once, then the third
    pool.close()


def test_page_extraction_past_its_deadline_drops_that_page_only(monkeypatch):
    from agentrl.config import BackendConfig, FetchConfig
    from agentrl.web import safe_fetch
    from tests.fake_apis import FakeAPIs

    server = FakeAPIs().start()
    try:
        fetcher = safe_fetch.SafeFetcher(BackendConfig(retries=0), FetchConfig(allow_hosts=["127.0.0.1"]))

        async def fetch() -> str:
            try:
                return (await fetcher.fetch_page(f"{server.url}/page.html")).text
            finally:
                await fetcher.close()

        assert "wrought-iron" in asyncio.run(fetch())
        monkeypatch.setattr(safe_fetch, "HTML_TIMEOUT_S", 1e-4)  # as if the markup kept the extractor busy
        fetcher = safe_fetch.SafeFetcher(BackendConfig(retries=0), FetchConfig(allow_hosts=["127.0.0.1"]))
        with pytest.raises(DeadlineExceeded):
            asyncio.run(fetch())
    finally:
        server.stop()
