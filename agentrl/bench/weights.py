"""`agentrl bench weights`: how fast a new policy reaches the engines.

For random models of growing size (`agentrl.models.tiny.SIZED_MODELS`: the tiny model, ~100M and ~500M
parameters, built locally), a learner group and one vLLM engine are started the way training starts them,
and the learner's weights are pushed with `sync_weights` — what every training step does: rank 0's
snapshot, Ray's object store, the engine's safetensors write and in-place reload. Reported per size:
seconds per push (median after a warm-up push), the engine's share, GB/s, and a plain in-memory copy of
the same bytes on the same machine (the limit here). Then a projection to Qwen2.5-VL-7B and to 8 engines.
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
QWEN25_VL_7B_PARAMS = 8.29e9  # agentrl.training.dry_run.count_parameters of its config.json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("--sizes", default="tiny,100m,500m", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--pushes", type=int, default=3, help="timed pushes per size (after one warm-up push)")
    parser.add_argument("--dtype", default="bfloat16", help="model.dtype of learner and engine")
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


async def _push_times(cfg: Any, path: str, pushes: int) -> tuple[int, int, list[float], list[float]]:
    """(parameters, bytes, seconds per push, the engine's seconds per push) for one model."""
    from agentrl.actors.factory import ActorGroups, create_generator_pool, create_learner, start_actors, stop_actors
    from agentrl.actors.reward import RewardPool
    from agentrl.actors.weights import broadcast

    groups = ActorGroups(RewardPool([]), create_generator_pool(cfg, path), [],
                         learner=create_learner(cfg, path, total_steps=1, name=None))
    try:
        await start_actors(groups)
        snapshot = await groups.learner.get_weights.remote()
        params = sum(t.numel() for t in snapshot.tensors.values())
        nbytes = sum(t.numel() * t.element_size() for t in snapshot.tensors.values())
        del snapshot
        totals, engine = [], []
        for _ in range(pushes + 1):
            t0 = time.perf_counter()
            [ref] = await groups.learner.weights_ref.remote()
            engine.append(await broadcast(ref, groups.engines))
            totals.append(time.perf_counter() - t0)
            del ref
        return params, nbytes, totals[1:], engine[1:]
    finally:
        await stop_actors(groups)


def measure(size: str, pushes: int, dtype: str) -> dict[str, Any]:
    """One size's row of the results."""
    from agentrl.config import load_config
    from agentrl.models.tiny import ensure_model

    path = ensure_model(SIZES[size])
    cfg = load_config("configs/demo.yaml", [f"model.dtype={dtype}", "rollout.kv_cache_gib=0.25",
                                            "learner.zero_stage=2", "rollout.max_model_len=512"])
    params, nbytes, totals, engine = asyncio.run(_push_times(cfg, path, pushes))
    push_s, engine_s = statistics.median(totals), statistics.median(engine)
    copy_s = copy_seconds(nbytes)
    return {"size": size, "model": SIZES[size], "parameters": params, "bytes": nbytes, "dtype": dtype,
            "push_s": push_s, "push_s_all": totals, "engine_s": engine_s, "snapshot_and_transfer_s": push_s - engine_s,
            "push_gb_per_s": nbytes / push_s / 1e9, "memcpy_s": copy_s, "memcpy_gb_per_s": nbytes / copy_s / 1e9,
            "push_vs_memcpy": push_s / copy_s}


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
    """Measure every size, project, write the JSON, print the table."""
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes:
        raise UserError(f"bench weights: --sizes: '{(bad or [''])[0]}' is not one of {', '.join(SIZES)}")
    if args.pushes < 1:
        raise UserError("bench weights: --pushes must be >= 1")
    rows = []
    for size in sizes:
        rows.append(measure(size, args.pushes, args.dtype))
        r = rows[-1]
        print(f"[agentrl] {size}: {r['parameters'] / 1e6:.1f}M params, {r['bytes'] / 1e9:.3f} GB: push "
              f"{r['push_s']:.3f}s ({r['push_gb_per_s']:.2f} GB/s), memcpy {r['memcpy_gb_per_s']:.2f} GB/s")
    result = {"command": f"agentrl bench weights --sizes {args.sizes} --pushes {args.pushes} --dtype {args.dtype}",
              "machine": f"{os.cpu_count()} CPU cores, no GPU", "sizes": rows,
              "projection": project(max(rows, key=lambda r: r["bytes"]))}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"[agentrl] results: {args.out}")
    return 0
