"""CPU-heavy work on untrusted input, in a worker process that is killed at its deadline.

A model's answer such as `$10^{10^{10}}$` can keep sympy busy for ever. Timeouts built on signals only
work on a process's main thread, and Ray runs actor methods on others; a thread cannot be stopped. So
the work runs in a child process (started by a fork server: cheap to replace, safe under a threaded
parent), one call at a time; a call past its deadline kills the child, raises `DeadlineExceeded`, and
the next call starts a fresh one. Calls name their function as `module:function` (a plain import in the
child), with arguments and results that pickle. `DeadlinePool` keeps a few workers for work many
coroutines ask for at once (a web page's main text).
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import threading
import weakref
from typing import Any


class DeadlineExceeded(TimeoutError):
    """The call ran past its deadline; its worker was killed."""


class WorkerFailed(RuntimeError):
    """The function raised in the worker (the message is its exception's type and text), or the worker died."""


def _serve(conn: Any) -> None:
    """The worker's loop: run each (target, args) received, send back (ok, value or error text)."""
    while True:
        try:
            target, args = conn.recv()
        except (EOFError, OSError):
            return
        module, _, name = target.partition(":")
        try:
            conn.send((True, getattr(importlib.import_module(module), name)(*args)))
        except Exception as e:  # any failure of untrusted-input work is the caller's to count
            conn.send((False, f"{type(e).__name__}: {str(e)[:500]}"))


class DeadlineWorker:
    """One worker process; `call` runs `module:function(*args)` in it within `timeout_s` seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Any = None
        self.killed = 0  # workers killed at a deadline (each replaced on the next call)

    def _start(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child,), daemon=True, name="agentrl-deadline-worker")
        self._process.start()
        child.close()

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
            self._conn.close()
        self._process = self._conn = None

    def call(self, target: str, args: tuple, timeout_s: float) -> Any:
        """The function's result; DeadlineExceeded past `timeout_s`, WorkerFailed if it raised."""
        with self._lock:  # one call at a time: the worker is one process
            if self._process is None or not self._process.is_alive():
                self._stop()
                self._start()
            try:
                self._conn.send((target, args))
                ready = self._conn.poll(timeout_s)
                if ready:
                    ok, value = self._conn.recv()
            except (EOFError, OSError) as e:
                self._stop()
                raise WorkerFailed(f"the worker died ({type(e).__name__})") from None
            if not ready:
                self._stop()
                self.killed += 1
                raise DeadlineExceeded(f"{target} ran past its {timeout_s:g} s deadline")
        if not ok:
            raise WorkerFailed(value)
        return value

    async def acall(self, target: str, args: tuple, timeout_s: float) -> Any:
        """`call` from an event loop, which keeps running meanwhile."""
        return await asyncio.to_thread(self.call, target, args, timeout_s)

    def close(self) -> None:
        with self._lock:
            self._stop()


class DeadlinePool:
    """`size` deadline workers for work that many coroutines ask for at once (page extraction): a call
    waits for a free worker, then runs as `DeadlineWorker.call`. Workers start on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[DeadlineWorker] = []
        # a semaphore per event loop (an actor has one; a test process may run several, one after another)
        self._free: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = \
            weakref.WeakKeyDictionary()

    async def acall(self, target: str, args: tuple, timeout_s: float) -> Any:
        free = self._free.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(self.size))
        async with free:
            worker = self._idle.pop() if self._idle else DeadlineWorker()
            try:
                return await worker.acall(target, args, timeout_s)
            finally:
                self._idle.append(worker)

    def close(self) -> None:
        for w in self._idle:
            w.close()
