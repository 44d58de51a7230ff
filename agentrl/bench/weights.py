"""`agentrl bench weights [--transports object_store,collective]`: how fast a new policy reaches the engines.

For random models of growing size (`agentrl.models.tiny.SIZED_MODELS`: the tiny model, ~100M and ~500M
parameters, built locally), a learner group and one vLLM engine are started the way training starts them,
and the learner's weights are pushed with `sync_weights` by each transport (`rollout.weight_sync`) — what
every training step does. Reported per size and transport: seconds per push (median after a warm-up
push), the engine's share, GB/s, its ratio to a plain in-memory copy of the same bytes measured in the
same run (the limit here), and the peak extra memory of the machine during a push (MemTotal - MemAvailable,
which counts shared memory: the object store and the engine's file, sampled every 5 ms, above the level
before the push), and what the first push made and kept (the transport's persistent buffers, in model
copies). Then a projection to Qwen2.5-VL-7B and to 8 engines from the fastest transport.
Writes `bench/weights.json`; the table is in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from agentrl.errors import UserError

SIZES = {"tiny": "tiny-text", "100m": "random-100m", "500m": "random-500m"}
TRANSPORTS = ("object_store", "collective")
QWEN25_VL_7B_PARAMS = 8.29e9  # agentrl.training.dry_run.count_parameters of its config.json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("--sizes", default="tiny,100m,500m", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--pushes", type=int, default=3, help="timed pushes per size (after one warm-up push)")
    parser.add_argument("--dtype", default="bfloat16", help="model.dtype of learner and engine")
    parser.add_argument("--transports", default="object_store", help=f"comma-separated, of {', '.join(TRANSPORTS)}")
    parser.add_argument("--bucket-mb", type=int, default=256, help="rollout.weight_bucket_mb (collective)")
    parser.add_argument("--out", default="bench/weights.json")


def copy_seconds(nbytes: int, repeats: int = 5) -> float:
    """The best time of a plain in-memory copy of `nbytes` bytes (torch's memcpy) on this machine."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8)
    src.fill_(1)
    dst = torch.zeros_like(src)  # touched: no page faults inside the timed copies
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return min(times)


class MemoryPeak:
    """The machine's used memory (MemTotal - MemAvailable: shared memory included) sampled in a thread; the
    peak above the level at `start`."""

    def __init__(self, interval_s: float = 0.005) -> None:
        import threading

        self.interval_s, self.base, self.peak = interval_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def used() -> int:
        import psutil

        vm = psutil.virtual_memory()
        return vm.total - vm.available

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemoryPeak:
        self.base = self.peak = self.used()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def extra(self) -> int:
        return max(self.peak - self.base, 0)


async def _push_times(cfg: Any, path: str, pushes: int, method: str) -> dict[str, Any]:
    """Parameters, bytes, seconds per push, the engine's seconds per push and the peak extra memory of
    each push, for one model and transport."""
    from agentrl.actors.factory import ActorGroups, create_generator_pool, create_learner, start_actors, stop_actors
    from agentrl.actors.reward import RewardPool
    from agentrl.actors.weights import sync_weights

    groups = ActorGroups(RewardPool([]), create_generator_pool(cfg, path), [],
                         learner=create_learner(cfg, path, total_steps=1, name=None))
    try:
        await start_actors(groups)
        before = MemoryPeak.used()  # before the first packing: the transport has made no buffer yet
        totals, engine, extra = [], [], []
        for _ in range(pushes + 1):
            with MemoryPeak() as memory:
                t0 = time.perf_counter()
                engine.append(await sync_weights(groups.learner, groups.engines, method, cfg.rollout.weight_bucket_mb))
                totals.append(time.perf_counter() - t0)
            extra.append(memory.extra)
            if len(totals) == 1:  # what the first push made and kept: the transport's persistent buffers
                kept = max(MemoryPeak.used() - before, 0)
        snapshot = await groups.learner.get_weights.remote()  # after the pushes: its copies are not theirs
        params = sum(t.numel() for t in snapshot.tensors.values())
        nbytes = sum(t.numel() * t.element_size() for t in snapshot.tensors.values())
        return {"parameters": params, "bytes": nbytes, "totals": totals[1:], "engine": engine[1:],
                "extra": extra[1:], "kept": kept}
    finally:
        await stop_actors(groups)


def measure(size: str, pushes: int, dtype: str, transport: str, bucket_mb: int) -> dict[str, Any]:
    """One size's row of the results for one transport."""
    from agentrl.config import load_config
    from agentrl.models.tiny import ensure_model

    path = ensure_model(SIZES[size])
    cfg = load_config("configs/demo.yaml", [f"model.dtype={dtype}", "rollout.kv_cache_gib=0.25",
                                            "learner.zero_stage=2", "rollout.max_model_len=512",
                                            f"rollout.weight_sync={transport}",
                                            f"rollout.weight_bucket_mb={bucket_mb}"])
    m = asyncio.run(_push_times(cfg, path, pushes, transport))
    nbytes = m["bytes"]
    push_s, engine_s = statistics.median(m["totals"]), statistics.median(m["engine"])
    copy_s = copy_seconds(nbytes)
    extra = max(m["extra"])
    return {"size": size, "model": SIZES[size], "transport": transport, "parameters": m["parameters"],
            "bytes": nbytes, "dtype": dtype, "push_s": push_s, "push_s_all": m["totals"], "engine_s": engine_s,
            "snapshot_and_transfer_s": max(push_s - engine_s, 0.0), "push_gb_per_s": nbytes / push_s / 1e9,
            "memcpy_s": copy_s, "memcpy_gb_per_s": nbytes / copy_s / 1e9, "push_vs_memcpy": push_s / copy_s,
            "push_share_of_memcpy": copy_s / push_s, "peak_extra_bytes": extra,
            "peak_extra_model_copies": extra / nbytes, "kept_bytes": m["kept"], "kept_model_copies": m["kept"] / nbytes,
            "bucket_mb": bucket_mb}


def project(largest: dict[str, Any], params: float = QWEN25_VL_7B_PARAMS, engines: int = 8) -> dict[str, Any]:
    """Seconds per push of a model of `params` bf16 parameters, scaled linearly in bytes from the largest
    measured size: to one engine, and to `engines` engines on one node — the snapshot and the object
    store transfer happen once per node, each engine writes and reloads its own copy, so the engines'
    part is between overlapped (best) and one after another (worst)."""
    scale = params * 2 / largest["bytes"]
    once, per_engine = largest["snapshot_and_transfer_s"] * scale, largest["engine_s"] * scale
    return {"parameters": params, "bytes": params * 2, "scaled_from": largest["size"],
            "one_engine_s": once + per_engine, f"{engines}_engines_best_s": once + per_engine,
            f"{engines}_engines_worst_s": once + engines * per_engine}


def run(args: argparse.Namespace) -> int:
    """Measure every size and transport, project, write the JSON, print the table."""
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes:
        raise UserError(f"bench weights: --sizes: '{(bad or [''])[0]}' is not one of {', '.join(SIZES)}")
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    bad = [t for t in transports if t not in TRANSPORTS]
    if bad or not transports:
        raise UserError(f"bench weights: --transports: '{(bad or [''])[0]}' is not one of {', '.join(TRANSPORTS)}")
    if args.pushes < 1:
        raise UserError("bench weights: --pushes must be >= 1")
    if args.bucket_mb < 1:
        raise UserError("bench weights: --bucket-mb must be >= 1")
    rows = []
    for size in sizes:
        for transport in transports:
            rows.append(measure(size, args.pushes, args.dtype, transport, args.bucket_mb))
            r = rows[-1]
            print(f"[agentrl] {size} {transport}: {r['parameters'] / 1e6:.1f}M params, {r['bytes'] / 1e9:.3f} GB: "
                  f"push {r['push_s']:.3f}s ({r['push_gb_per_s']:.2f} GB/s, {r['push_share_of_memcpy']:.2f} of "
                  f"memcpy's {r['memcpy_gb_per_s']:.2f}), peak extra {r['peak_extra_model_copies']:.1f} model copies, "
                  f"kept {r['kept_model_copies']:.1f}")
    largest = max(r["bytes"] for r in rows)
    fastest = min((r for r in rows if r["bytes"] == largest), key=lambda r: r["push_s"])
    result = {"command": f"agentrl bench weights --sizes {args.sizes} --transports {args.transports} "
                         f"--pushes {args.pushes} --dtype {args.dtype} --bucket-mb {args.bucket_mb}",
              "machine": f"{os.cpu_count()} CPU cores, no GPU", "date": time.strftime("%Y-%m-%d"), "sizes": rows,
              "projection": project(fastest)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"[agentrl] results: {args.out}")
    return 0
