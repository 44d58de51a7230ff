"""The search workload of `agentrl bench async --workload search`: MMSearch-R1 trajectories through the
real tool pipeline, against a web the bench starts and stops itself.

Each trajectory (configs/bench_async_search.yaml) searches with its image (`image_search`, SerpAPI's
Google Lens shape: five thumbnails fetched, checked and resized into the next turn), then with text
(`text_search`, SerpAPI's Google shape: three pages fetched directly, reduced to text by the reader,
each summarised by a `vllm serve` of the tiny text model through the OpenAI-compatible client), then
answers. The simulated web (search_web.py) delays every request by a seeded heavy-tailed draw and fails
2% of them; the summariser is a real model server, the reader a real extractor in worker processes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agentrl.bench.search_web import DEFAULT_LATENCY, SearchWeb, StageLatency
from agentrl.errors import UserError
from agentrl.timing import process_tree_cpu_s

SUMMARISER_NAME = "bench-summariser"
# one compute thread: a tiny model has too little work per step for more, and idle OpenMP threads spin
# (at one request at a time the server burned 0.43 CPU-s per summary on two cores, 4x what it needs)
SERVER_THREADS = {"OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
DATA_ROWS = 256
STAGES = ("image_search/search", "image_search/thumbnail", "image_search/thumbnail_check", "text_search/search",
          "text_search/fetch", "text_search/reader", "text_search/summariser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def openai_model_server(model_path: str, served_name: str, max_model_len: int = 2048,
                        timeout_s: float = 240) -> Iterator[tuple[str, subprocess.Popen]]:
    """A `vllm serve` (its OpenAI-compatible server) of a model on loopback; yields (base URL ending in /v1,
    the process). The model runs in the server's own process (one process fewer to start on a CPU)."""
    port = _free_port()
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", **SERVER_THREADS}
    # the module entry point: the `vllm` script looks up a distribution named "vllm", which the CPU build lacks
    # at the lowest CPU priority (Ray starts its workers at nice 15; at nice 10 the server took the
    # learner's core): on a shared machine it takes what the learner leaves (a summariser is a remote
    # service in production; here it runs on the learner's cores)
    proc = subprocess.Popen(["nice", "-n", "19", sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                             "--model", model_path,
                             "--port", str(port), "--dtype", "float32", "--distributed-executor-backend", "uni",
                             "--enforce-eager", "--max-model-len", str(max_model_len),
                             "--kv-cache-memory-bytes", str(512 << 20), "--served-model-name", served_name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                tail = (proc.stderr.read() if proc.stderr else "").strip().splitlines()[-1:]
                raise UserError(f"the summariser server (vllm serve {model_path}) exited: {' '.join(tail)}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise UserError(f"the summariser server did not answer within {timeout_s:.0f} s") from None
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def write_questions(path: str, web_url: str, rows: int = DATA_ROWS, seed: int = 0) -> str:
    """The example dataset's questions about the demo tiles, each with its photo and a URL for it (what
    Google Lens is given), as a parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agentrl.data.example import example_records

    records = example_records(seed, rows)
    for i, r in enumerate(records):
        r["image_urls"] = [f"{web_url}/photo/{i}.jpg"]
        r["data_id"] = f"bench-{i}"
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def percentiles(values: list[float]) -> dict[str, float]:
    """count, p50 and p99 (nearest rank) of a sample."""
    if not values:
        return {"count": 0, "p50_s": 0.0, "p99_s": 0.0}
    s = sorted(values)
    return {"count": len(s), "p50_s": s[len(s) // 2], "p99_s": s[min(len(s) - 1, int(0.99 * len(s)))]}


@dataclass
class SearchWorkload:
    """The started web and summariser, the config overrides that point a run at them, and the per-mode
    report (`start_mode` before a run, `report` after it)."""

    web: SearchWeb
    summariser: subprocess.Popen
    overrides: list[str]
    summariser_cpu_at_start: float = 0.0

    def start_mode(self) -> None:
        """Each mode sees the same latency sequence; its summariser CPU counts from here."""
        self.web.reset()
        self.summariser_cpu_at_start = process_tree_cpu_s(self.summariser.pid)

    def report(self, profiles: list[Any], tool_errors: Counter, counters: dict[str, int]) -> dict[str, Any]:
        """The search-specific part of a mode's summary (bench/async_search.json)."""
        stages: dict[str, list[float]] = {}
        for p in profiles:
            for stage, seconds in p.stage_seconds.items():
                stages.setdefault(stage, []).extend(seconds)
        trajectories = max(sum(p.trajectories for p in profiles), 1)
        summariser_cpu = process_tree_cpu_s(self.summariser.pid) - self.summariser_cpu_at_start
        return {
            "tool_latency_by_stage": {s: percentiles(stages.get(s, [])) for s in STAGES},
            "tool_errors_by_kind": dict(tool_errors),
            "tool_counters": {k.removeprefix("tool/"): v for k, v in counters.items()
                              if k.startswith(("tool/text_search/", "tool/image_search/"))},
            "web_requests": dict(self.web.counters),
            "cache": "off",
            "trajectories_finished": trajectories,
            "cpu_s_per_trajectory": {"env_actors": sum(p.cpu_s for p in profiles) / trajectories,
                                     "summariser_server": summariser_cpu / trajectories},
        }


@contextlib.contextmanager
def search_workload(work_dir: str, failure_rate: float, latency_scale: float = 1.0,
                    seed: int = 0) -> Iterator[SearchWorkload]:
    """Start the simulated web (every stage's latency times `latency_scale`) and the summariser server,
    write the questions; stop both at the end."""
    from agentrl.models.tiny import ensure_model

    os.makedirs(work_dir, exist_ok=True)
    # SerpAPI's client sends a key; this one only ever reaches the loopback web (set before Ray starts,
    # so the environment actors inherit it)
    os.environ["SERPAPI_API_KEY"] = "bench-local-key"
    latency = {stage: StageLatency(s.median_s * latency_scale, s.p99_s * latency_scale)
               for stage, s in DEFAULT_LATENCY.items()}
    with SearchWeb(seed=seed, failure_rate=failure_rate, latency=latency) as web, \
            openai_model_server(ensure_model("tiny-text"), SUMMARISER_NAME) as (summariser_url, proc):
        data = write_questions(os.path.join(work_dir, "questions.parquet"), web.url, seed=seed)
        overrides = [f"data.source={data}", f"tools.image_search.base_url={web.url}/search",
                     f"tools.text_search.base_url={web.url}/search",
                     f"tools.text_search.summariser_url={summariser_url}",
                     f"tools.text_search.summariser_model={SUMMARISER_NAME}"]
        yield SearchWorkload(web, proc, overrides)
