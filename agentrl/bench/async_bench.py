"""`agentrl bench async [--quick] [--sweep]`: asynchronous against synchronous training under
heavy-tailed tool latency, on the same workload and resources, one mode after the other.

Phases of one invocation (docs/benchmarks.md explains the workload and how to read the numbers):
1. `sync` then `async` (and `async` with `rollout.on_weight_update=continue`): each a real run of
   configs/bench_async.yaml (vLLM engine, DeepSpeed learner, environment and reward actors), K learner
   steps; the first step is warm-up (pipeline fill) and the rest is the measured window.
2. The learner alone: a fresh learner trains on batches the async run generated; its samples/s is the
   limit async can reach.
3. Environment-actor overhead (env_overhead.py): one environment actor with a scripted generator.
Results: bench/async.json, a PNG timeline, and with --sweep a markdown table of the sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agentrl.errors import UserError

QUICK_STEPS, FULL_STEPS, SWEEP_STEPS = 5, 10, 4
# per workload: its config, results and timeline
WORKLOADS = {"latency": ("configs/bench_async.yaml", "bench/async.json", "docs/bench_async_timeline.png"),
             "search": ("configs/bench_async_search.yaml", "bench/async_search.json",
                        "docs/bench_async_search_timeline.png")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps per mode (about 6 minutes)")
    parser.add_argument("--sweep", action="store_true",
                        help="also sweep tool latency, max staleness and trajectories per env actor")
    parser.add_argument("--workload", choices=WORKLOADS, default="latency",
                        help="latency: the `latency` stand-in tool; search: the real search tools against a "
                             "simulated web and a summariser model (bench/async_search.json)")
    parser.add_argument("--config", default="", help="the workload's config (default: per --workload)")
    parser.add_argument("--steps", type=int, default=0, help=f"learner steps per mode (default {FULL_STEPS})")
    parser.add_argument("--latency-median", type=float, default=1.0, help="tool latency median, seconds")
    parser.add_argument("--latency-p99", type=float, default=10.0, help="tool latency 99th percentile, seconds")
    parser.add_argument("--failure-rate", type=float, default=0.02,
                        help="share of tool calls (search workload: of web requests) that fail")
    parser.add_argument("--latency-scale", type=float, default=1.0,
                        help="search workload: every stage's latency times this (1: search API median 1 s, "
                             "p99 10 s; pages 0.5 / 8 s; thumbnails 0.3 / 3 s)")
    parser.add_argument("--max-staleness", type=int, default=2, help="trainer.max_staleness of the async run")
    parser.add_argument("--skip", default="", help="comma-separated phases to skip: continue,learner_alone,env")
    parser.add_argument("--out", default="", help="default: bench/async.json (search: bench/async_search.json)")
    parser.add_argument("--timeline", default=None,
                        help="the PNG timeline (default: docs/bench_async[_search]_timeline.png; '' for none)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. trainer.batch_groups=8")


def _latency_overrides(median: float, p99: float, failure_rate: float) -> list[str]:
    return [f"tools.options.latency.median_s={median}", f"tools.options.latency.p99_s={p99}",
            f"tools.options.latency.failure_rate={failure_rate}"]


class StepRecorder:
    """The bench's hook into the training orchestrator (its `on_step`): keeps each step's metrics row, the
    trained trajectories' spans, and the first few batches (for the learner-alone phase)."""

    def __init__(self, keep_batches: int) -> None:
        self.keep_batches = keep_batches
        self.rows: list[dict[str, Any]] = []
        self.spans: list[tuple[str, float, float]] = []
        self.batches: list[Any] = []
        self.tool_errors: Counter = Counter()  # failed tool calls of trained trajectories, by kind

    def __call__(self, row: dict[str, Any], batch: Any) -> None:
        self.rows.append(row)
        trajectories = [t for g in batch.groups for t in g.trajectories]
        self.spans.extend(s for t in trajectories for s in t.spans)
        self.tool_errors.update((c.error or "error").split(":")[0] for t in trajectories for c in t.tool_calls
                                if not c.ok)
        if len(self.batches) < self.keep_batches:
            self.batches.append(batch)


@dataclass
class ModeRun:
    """What one mode's run left: its trace, the batches it kept, its recorder, its environment actors'
    tool profiles (read before they stop)."""

    trace: Any
    batches: list[Any]
    recorder: StepRecorder
    tool_profiles: list[Any]


def run_mode(cfg: Any, label: str, keep_batches: int = 0) -> ModeRun:
    """One real training run of the workload."""
    from agentrl.bench.report import RunTrace
    from agentrl.training.accounting import GROUP_ENDS
    from agentrl.training.orchestrator import Orchestrator

    recorder = StepRecorder(keep_batches)
    orch = Orchestrator(cfg, on_step=recorder)
    profiles: list[Any] = []

    async def main() -> Any:
        try:
            summary = await orch.run()
            if orch.groups is not None:
                got = await asyncio.gather(*[h.tool_profile.remote() for h in orch.groups.envs],
                                           return_exceptions=True)
                profiles.extend(p for p in got if not isinstance(p, BaseException))
            return summary
        finally:
            await orch.shutdown()

    t0 = time.perf_counter()
    summary = asyncio.run(main())
    groups = {k: getattr(summary, k) for k in ("groups_admitted", *GROUP_ENDS)}
    trace = RunTrace(label, recorder.rows, orch.step_marks, recorder.spans, orch.gen_busy, groups=groups)
    print(f"[bench] {label}: {len(recorder.rows)} steps, run {time.perf_counter() - t0:.0f}s (start-up included)",
          flush=True)
    return ModeRun(trace, recorder.batches, recorder, profiles)


def learner_alone(cfg: Any, batches: list[Any], steps: int) -> dict[str, Any]:
    """A fresh learner trains on pre-generated batches with nothing else running (its crash: ActorFailure)."""
    import ray

    from agentrl.actors.factory import create_learner, guarded
    from agentrl.models.tiny import ensure_model

    path = os.path.abspath(ensure_model(cfg.model.path, cfg.model.cache_dir))
    learner = create_learner(cfg, path, steps + 1)

    async def timed() -> tuple[int, float]:
        await learner.train_step.remote(batches[0])  # warm-up, as the runs' first step
        samples, t0 = 0, time.perf_counter()
        for i in range(steps):
            samples += (await learner.train_step.remote(batches[(i + 1) % len(batches)])).samples
        return samples, time.perf_counter() - t0

    try:
        samples, wall = asyncio.run(guarded(timed()))
    finally:
        ray.kill(learner)
    return {"steps": steps, "samples": samples, "wall_s": wall, "samples_per_s": samples / wall,
            "step_s_mean": wall / steps}


def _config(args: argparse.Namespace, extra: list[str]) -> Any:
    from agentrl.config import load_config
    from agentrl.console import configure_driver_logging, resolve_level

    workload = (_latency_overrides(args.latency_median, args.latency_p99, args.failure_rate)
                if args.workload == "latency" else args.search.overrides if args.search else [])
    cfg = load_config(args.config, [*workload, f"trainer.max_staleness={args.max_staleness}",
                                    "trainer.progress=false", *args.overrides, *extra])
    configure_driver_logging(resolve_level(cfg.trainer.log_level))
    return cfg


def compare(args: argparse.Namespace, steps: int, extra: list[str], label: str = "",
            modes: tuple[str, ...] = ("sync", "async"), keep_batches: int = 0) -> tuple[dict, list, list]:
    """Run the workload in each mode, one after the other; returns summaries, traces and kept batches."""
    from agentrl.bench.report import summarize

    out: dict[str, Any] = {}
    traces, batches = [], []
    for mode in modes:
        name = mode if mode != "continue" else "async_continue"
        cfg = _config(args, [*extra, f"trainer.total_steps={steps}", f"trainer.run_name=bench-{label}{name}",
                             f"trainer.mode={'sync' if mode == 'sync' else 'async'}",
                             *(["rollout.on_weight_update=continue"] if mode == "continue" else [])])
        if args.search:
            args.search.start_mode()
        run = run_mode(cfg, name, keep_batches if mode == "async" else 0)
        out[name] = summarize(run.trace)
        if args.search:
            out[name]["search"] = args.search.report(run.tool_profiles, run.recorder.tool_errors,
                                                     run.trace.rows[-1] if run.trace.rows else {})
        traces.append(run.trace)
        batches.extend(run.batches)
    if "sync" in out and "async" in out:
        out["speedup"] = out["async"]["samples_per_s"] / out["sync"]["samples_per_s"]
    return out, traces, batches


SWEEP = [  # (setting, overrides, modes); the default point (1 s, s=2, 8 spares, no slot limit) is the main run
    ("tool median 0 s", ["tools.options.latency.median_s=0", "tools.options.latency.p99_s=0"], ("sync", "async")),
    ("tool median 0.25 s", ["tools.options.latency.median_s=0.25", "tools.options.latency.p99_s=2.5"],
     ("sync", "async")),
    ("tool median 4 s", ["tools.options.latency.median_s=4", "tools.options.latency.p99_s=40",
                         "env.tool_timeout_s=120"], ("sync", "async")),
    ("max staleness 0", ["trainer.max_staleness=0"], ("async",)),
    ("max staleness 1", ["trainer.max_staleness=1"], ("async",)),
    ("max staleness 4", ["trainer.max_staleness=4", "trainer.queue_capacity=128"], ("async",)),
    ("no spare groups", ["trainer.spare_groups=0"], ("async",)),
    ("16 trajectories per env actor", ["env.max_concurrent_trajectories=16"], ("async",)),
    ("64 trajectories per env actor", ["env.max_concurrent_trajectories=64"], ("async",)),
]


def _machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    gpus = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB RAM, {gpus}"


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; returns 0. Raises UserError (bad input) or ActorFailure (an actor died); the
    command line reports them (agentrl/cli.py)."""
    steps = args.steps or (QUICK_STEPS if args.quick else FULL_STEPS)
    skip = {s for s in args.skip.split(",") if s}
    if steps < 2:
        raise UserError("--steps must be >= 2 (the first step is warm-up)")
    if args.workload == "search":
        if args.sweep:
            raise UserError("--sweep varies the latency tool's settings: use it with --workload latency")
        skip.add("env")  # the environment-actor overhead phase measures the latency tool
    config, out, timeline = WORKLOADS[args.workload]
    args.config, args.out = args.config or config, args.out or out
    args.timeline = timeline if args.timeline is None else args.timeline
    with contextlib.ExitStack() as stack:
        args.search = None
        if args.workload == "search":
            from agentrl.bench.search_workload import search_workload

            print("[bench] starting the simulated web and the summariser server", flush=True)
            if args.latency_scale <= 0:
                raise UserError("--latency-scale must be > 0")
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="agentrl-bench-search-"))
            args.search = stack.enter_context(search_workload(work_dir, args.failure_rate, args.latency_scale))
        return _run(args, steps, skip)


def _run(args: argparse.Namespace, steps: int, skip: set[str]) -> int:
    from agentrl.actors.factory import check_plugins, connect_ray  # torch before Ray, as `agentrl train`

    base = _config(args, [])
    check_plugins(base)  # the tools' options, as `agentrl train` checks them
    import ray

    t_start = time.perf_counter()
    started_here = connect_ray(log_to_driver=False)
    try:
        modes = ("sync", "async") + (() if "continue" in skip else ("continue",))
        result, traces, batches = compare(args, steps, [], modes=modes, keep_batches=4)
        if "learner_alone" not in skip:
            result["learner_alone"] = learner_alone(base, batches, max(steps - 1, 2))
            result["async"]["learner_alone_frac"] = (result["async"]["samples_per_s"]
                                                     / result["learner_alone"]["samples_per_s"])
        if "env" not in skip:
            from agentrl.bench.env_overhead import measure

            result["env_actor"] = measure(base, quick=args.quick)
        keys = ("staleness_mean", "staleness_max", "token_staleness_max")
        result["staleness_by_on_weight_update"] = {
            label: {k: result[mode][k] for k in keys}
            for label, mode in (("pause_resume", "async"), ("continue", "async_continue")) if mode in result}
        if args.sweep:
            result["sweep"] = _sweep(args)
    finally:
        if started_here:
            ray.shutdown()
    result["setup"] = {"command": "agentrl bench async " + " ".join(sys.argv[3:]).strip(), "steps": steps,
                       "machine": _machine(), "workload": args.workload, **_latency_setup(args),
                       "failure_rate": args.failure_rate,
                       "max_staleness": args.max_staleness, "batch_groups": base.trainer.batch_groups,
                       "spare_groups": base.trainer.spare_groups,
                       "n": base.rollout.n, "max_turns": base.env.max_turns,
                       "bench_wall_s": time.perf_counter() - t_start, "config": dataclasses.asdict(base)}
    _write(args, result, traces)
    return 0


def _latency_setup(args: argparse.Namespace) -> dict[str, Any]:
    if args.workload == "latency":
        return {"latency_median_s": args.latency_median, "latency_p99_s": args.latency_p99}
    return {"latency_by_stage": {k: dataclasses.asdict(v) for k, v in args.search.web.latency.items()}}


def _sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    points = []
    for setting, extra, modes in SWEEP:
        out, _, _ = compare(args, SWEEP_STEPS, extra, label=f"sweep{len(points)}-", modes=modes)
        points.append({"setting": setting, "overrides": extra, **out})
    return points


def _write(args: argparse.Namespace, result: dict[str, Any], traces: list[Any]) -> None:
    from agentrl.bench.report import plot_timeline, save_traces, sweep_table

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    save_traces(traces, os.path.splitext(args.out)[0] + "_traces.json")
    if args.timeline:
        os.makedirs(os.path.dirname(os.path.abspath(args.timeline)), exist_ok=True)
        plot_timeline([t for t in traces if t.mode in ("sync", "async")], args.timeline)
    s, a = result["sync"], result["async"]
    print(f"[bench] {'':22s} {'sync':>10s} {'async':>10s}")
    for key in ("samples_per_s", "wall_s_all_steps", "learner_busy_frac", "generator_busy_frac",
                "staleness_mean", "staleness_max", "tool_concurrency_mean", "weight_sync_s_mean"):
        print(f"[bench] {key:22s} {s[key]:10.3f} {a[key]:10.3f}")
    print(f"[bench] speedup (async/sync samples/s): {result['speedup']:.2f}x")
    if "learner_alone" in result:
        print(f"[bench] learner alone: {result['learner_alone']['samples_per_s']:.2f} samples/s; "
              f"async reaches {a['learner_alone_frac']:.0%} of it")
    if "env_actor" in result:
        e = result["env_actor"]
        print(f"[bench] env actor: {e['zero_latency']['tool_calls_per_s']:.0f} tool calls/s with a zero-latency "
              f"tool; {e['max_in_flight_ok']} trajectories in flight with a 1 s tool before its loop is the bottleneck")
    if "sweep" in result:
        print(sweep_table(result["sweep"]))
    print(f"[bench] wrote {args.out}" + (f" and {args.timeline}" if args.timeline else ""))
