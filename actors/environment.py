"""Environment actors: each runs many trajectories at once on one asyncio loop.

A call to `run_group` runs the n samples of one prompt concurrently (each with its own state), scores
them in the reward pool (one call per group: an actor carrying thousands of trajectories spends its
loop on RPCs otherwise), and puts the whole group into the replay queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from agentrl.config import Config
from agentrl.records import (
    DataRow,
    EnvironmentStats,
    GroupOutcome,
    RewardInput,
    SamplingConfig,
    ToolProfile,
    Trajectory,
    TrajectoryGroup,
)
from agentrl.timing import process_tree_cpu_s
from agentrl.web.cache import ToolCache, open_tool_cache


class EnvironmentActor:
    """Ray async actor running trajectories: `run_group` plays one prompt's n samples concurrently through
    the generators and tools, scores them in the reward pool and puts the whole group into the queue."""

    def __init__(self, cfg: Config, model_path: str, generators: Any, rewards: Any, queue: Any,
                 index: int = 0) -> None:
        import ray
        from transformers import AutoTokenizer

        from agentrl.envs.agent_loop import RolloutContext
        from agentrl.envs.chat_format import ChatFormat
        from agentrl.envs.faults import with_faults
        from agentrl.envs.protocol import get_protocol
        from agentrl.envs.registry import load_tool
        from agentrl.models import get_adapter

        self.cfg = cfg
        self.index = index
        self.generators = generators
        self.rewards = rewards
        self.queue = ray.get_actor(queue) if isinstance(queue, str) else queue  # by name from the factory
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        protocol = get_protocol(cfg.env.protocol, dict(cfg.env.tool_tags), cfg.env.system_prompt)
        tools = {}
        for spec in cfg.env.tools:
            t = with_faults(load_tool(spec, cfg), cfg.faults, seed=cfg.faults.seed * 1000 + index)
            tools[t.name] = t
        cache = open_tool_cache(cfg.tools.cache)
        self.ctx = RolloutContext(
            chat=ChatFormat(tokenizer), protocol=protocol, tools=tools, env=cfg.env,
            cache=cache, cache_mode=cfg.tools.cache.mode,
            sampling=SamplingConfig(max_tokens=cfg.env.max_tokens_per_turn,
                                    temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                                    top_k=cfg.rollout.top_k),
            eos_token_id=tokenizer.eos_token_id, adapter=get_adapter(model_path, cfg.model.vision),
        )
        self._slots = asyncio.Semaphore(cfg.env.max_concurrent_trajectories)
        self.in_flight = 0
        self.finished = 0  # trajectories run to their end (for per-trajectory costs)
        self._cpu_at_start = process_tree_cpu_s()

    async def _run_one(self, row: DataRow, traj: Trajectory, ctx: Any) -> Trajectory:
        from agentrl.envs.agent_loop import run_trajectory
        from agentrl.timing import TrajectoryTimer

        timer = TrajectoryTimer(traj, lambda req: self.generators.generate(traj.traj_id, req))
        async with self._slots:
            self.in_flight += 1
            try:
                await run_trajectory(traj, row, ctx, timer.generate)
            finally:
                timer.finish()
                self.in_flight -= 1
                self.finished += 1
                self.generators.release(traj.traj_id)
        return traj

    async def _score(self, row: DataRow, trajs: list[Trajectory]) -> None:
        from agentrl.timing import REWARD, add_span

        t_reward = time.time()
        results = await self.rewards.score_group([RewardInput(
            question=row.question, turns=t.turn_texts, answer=t.answer,
            ground_truth=row.ground_truth, candidate_answers=row.candidate_answers,
            tool_calls=[c.tool for c in t.tool_calls], finish_reason=t.finish_reason,
            images=row.images) for t in trajs])
        t_end = time.time()
        for t, r in zip(trajs, results, strict=True):
            t.reward = r
            add_span(t, REWARD, t_reward, t_end)

    async def _run_samples(self, row: DataRow, group_id: str, n: int,
                           ctx: Any) -> tuple[list[Trajectory], list[BaseException]]:
        """Run n samples of one prompt concurrently, then score them; returns them and any errors."""
        from agentrl.envs.agent_loop import initial_prompt

        try:
            prompt_ids, images = initial_prompt(row, ctx)
        except ValueError as e:  # unreadable or too many images: this row fails, the run goes on
            return [], [e]
        trajs = [Trajectory(traj_id=f"{group_id}-{k}", group_id=group_id, data_row_id=row.row_id,
                            prompt_ids=list(prompt_ids), ground_truth=row.ground_truth, images=list(images))
                 for k in range(n)]
        results = await asyncio.gather(*[self._run_one(row, t, ctx) for t in trajs], return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            try:
                await self._score(row, trajs)
            except Exception as e:  # a failing reward fails this group, with its reason, not the actor
                errors.append(e)
        return trajs, errors

    async def evaluate(self, row: DataRow, group_id: str, workflow: str, n: int = 1,
                       temperature: float = 0.0) -> list[Trajectory]:
        """Run one row's n samples under an eval workflow (envs/workflows.py) and return them scored,
        instead of queueing them; a failed sample raises."""
        from agentrl.envs.workflows import workflow_context

        trajs, errors = await self._run_samples(row, group_id, n, workflow_context(self.ctx, workflow, temperature))
        if errors:
            raise errors[0]
        return trajs

    async def run_group(self, row: DataRow, group_id: str, start_version: int) -> GroupOutcome:
        """Run all n samples of one prompt and queue the whole group (or report why it failed)."""
        trajs, errors = await self._run_samples(row, group_id, self.cfg.rollout.n, self.ctx)
        if errors:
            # An actor death must stop the run: let it propagate to the orchestrator.
            from ray.exceptions import RayActorError

            for e in errors:
                if isinstance(e, RayActorError):
                    raise e
            return GroupOutcome("failed", reason=failure_reason(errors[0]))
        await self.queue.put.remote(TrajectoryGroup(group_id, start_version, trajs, row.category))
        return GroupOutcome("queued")

    def stats(self) -> EnvironmentStats:
        """Trajectories running now, and the counts its tools and tool cache have kept so far."""
        return EnvironmentStats(in_flight=self.in_flight, tool_counters=tool_counters(self.ctx.tools, self.ctx.cache))

    def tool_profile(self) -> ToolProfile:
        """Each tool's seconds per stage (tools with a `stage_clock`) and this actor's CPU since it started."""
        stages = {f"{name}/{stage}": seconds for name, t in self.ctx.tools.items()
                  for stage, seconds in getattr(getattr(t, "stage_clock", None), "snapshot", dict)().items()}
        return ToolProfile(stages, process_tree_cpu_s() - self._cpu_at_start, self.finished)


def failure_reason(error: BaseException) -> str:
    """One line: the error's type and message; for an error raised in another actor, its own (not Ray's
    traceback, which differs for every request and would make each failure a reason of its own)."""
    cause = getattr(error, "cause", None)
    error = cause if isinstance(cause, BaseException) else error
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


def tool_counters(tools: Mapping[str, Any], cache: ToolCache | None) -> dict[str, int]:
    """Every tool's `stats` counter (a tool without one has none) as `<tool>/<counter>`, and the cache's
    counters as `cache/<counter>`: the fallbacks and failures a tool absorbs, made visible in metrics."""
    out = {f"{name}/{k}": int(v) for name, t in tools.items() for k, v in (getattr(t, "stats", None) or {}).items()}
    if cache is not None:
        out.update({f"cache/{k}": v for k, v in cache.counters().items()})
    return out
