"""How much one environment actor can carry: its own event loop, measured with a scripted generator.

The generator here is a stand-in (no vLLM) that answers each turn at once with the workload's action
(a search on every turn but the last, then an answer), so what is timed is the environment actor's own
work: the agent loop, tokenising observations, the tool's coroutine, the reward call and the queue put.
- With a zero-latency tool: tool calls per second through one actor (its loop's capacity), with
  one-line observations and again with the workload's page-long ones.
- With a 1 s tool (one-line observations): C trajectories started at once, for growing C; each needs
  (turns - 1) tool seconds, so an actor that is not the bottleneck finishes them all in about that
  long. The largest C that finishes within 1.5x of it is reported as the trajectories it can keep in
  flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from agentrl.actors.factory import ActorGroups, create_replay_queue, create_rollout_actors, start_actors, stop_actors
from agentrl.records import GenerationRequest, GenerationResult

SLACK = 1.5  # a wall time within this factor of the tool time: the loop is not the bottleneck


class ScriptedGenerators:
    """Stands in for GeneratorPool: every turn returns at once; the last turn answers, the others search."""

    def __init__(self, search_ids: list[int], answer_ids: list[int], max_turns: int) -> None:
        self.search_ids, self.answer_ids, self.max_turns = search_ids, answer_ids, max_turns

    async def generate(self, traj_id: str, request: GenerationRequest) -> GenerationResult:
        await asyncio.sleep(0)  # yield, as a remote call would
        turn = int(request.request_id.rsplit("-t", 1)[1])
        ids = self.answer_ids if turn == self.max_turns - 1 else self.search_ids
        return GenerationResult(list(ids), [0.0] * len(ids), [0] * len(ids), "stop", 0)

    def release(self, traj_id: str) -> None:
        pass


def _tool_cfg(cfg: Any, median_s: float, p99_s: float, filler_words: int | None = 0) -> Any:
    latency = {**cfg.tools.options.get("latency", {}), "median_s": median_s, "p99_s": p99_s, "failure_rate": 0.0}
    if filler_words is not None:
        latency["filler_words"] = filler_words
    tools = dataclasses.replace(cfg.tools, options={**cfg.tools.options, "latency": latency})
    env = dataclasses.replace(cfg.env, max_concurrent_trajectories=1_000_000, turn_regex=[], num_actors=1)
    return dataclasses.replace(cfg, tools=tools, env=env)


def _start(cfg: Any, model_path: str) -> ActorGroups:
    """One environment actor on the scripted generator, its reward actors and an unbounded queue."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    gens = ScriptedGenerators(tok.encode("<search>kasazo</search>"), tok.encode("<answer>lilac</answer>"),
                              cfg.env.max_turns)
    queue = create_replay_queue(10**9, 10**9, name=None, max_concurrency=100000)
    groups = create_rollout_actors(cfg, model_path, queue, "overhead-env", generators=gens)
    asyncio.run(start_actors(groups))
    return groups


def _run_trajectories(env: Any, cfg: Any, trajectories: int, offset: int) -> float:
    """Start `trajectories` trajectories at once (whole groups); seconds until all are queued."""
    import ray

    from agentrl.data.synthetic import synthetic_rows

    n = cfg.rollout.n
    rows = synthetic_rows(max(trajectories // n, 1), seed=offset)
    t0 = time.perf_counter()
    outcomes = ray.get([env.run_group.remote(r, f"o{offset}-{i}", 0) for i, r in enumerate(rows)])
    wall = time.perf_counter() - t0
    bad = [o.reason for o in outcomes if o.status != "queued"]
    if bad:
        raise RuntimeError(f"env-overhead run: {len(bad)} groups failed, first: {bad[0]}")
    return wall


def measure(cfg: Any, quick: bool = False) -> dict[str, Any]:
    """Tool calls/s with a zero-latency tool, and trajectories in flight per actor with a 1 s tool."""
    import os

    from agentrl.models.tiny import ensure_model

    path = os.path.abspath(ensure_model(cfg.model.path, cfg.model.cache_dir))
    calls_per_traj = cfg.env.max_turns - 1
    out: dict[str, Any] = {"generator": "scripted (no vLLM): measures the environment actor's own loop",
                           "tool_calls_per_trajectory": calls_per_traj}
    # the loop itself (observations of one line), then with the workload's pages (tokenising them is work too)
    for key, filler in (("zero_latency", 0), ("zero_latency_workload_pages", None)):
        fast = _tool_cfg(cfg, 0.0, 0.0, filler)
        actors = _start(fast, path)
        try:
            _run_trajectories(actors.envs[0], fast, 64, 0)  # warm-up
            trajs = 512 if quick else 2048
            wall = _run_trajectories(actors.envs[0], fast, trajs, 1)
            out[key] = {"trajectories": trajs, "wall_s": wall, "trajectories_per_s": trajs / wall,
                        "tool_calls_per_s": trajs * calls_per_traj / wall}
        finally:
            asyncio.run(stop_actors(actors))
    # Little's law: the most trajectories the loop can keep in flight is its rate times their tool time
    out["in_flight_capacity_1s_tool"] = out["zero_latency"]["trajectories_per_s"] * calls_per_traj * 1.0
    slow = _tool_cfg(cfg, 1.0, 1.0)
    actors = _start(slow, path)
    levels, ok = [], 0
    ideal = 1.0 * calls_per_traj
    try:
        _run_trajectories(actors.envs[0], slow, 64, 0)
        for c in ([250, 1000, 2000] if quick else [250, 500, 1000, 1500, 2000, 4000]):
            wall = _run_trajectories(actors.envs[0], slow, c, 10 + c)
            levels.append({"in_flight": c, "wall_s": wall, "tool_time_s": ideal, "slowdown": wall / ideal})
            if wall <= SLACK * ideal:
                ok = c
    finally:
        asyncio.run(stop_actors(actors))
    out["one_second_tool"] = levels
    out["max_in_flight_ok"] = ok
    out["slack"] = SLACK
    return out
