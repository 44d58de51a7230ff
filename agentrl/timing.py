"""Where time goes: per-trajectory timings and spans, and the per-step profile in metrics.jsonl.

Each trajectory records how long it spent generating, in tools and being scored (`Trajectory.timings`,
seconds) and when (`Trajectory.spans`: (kind, start, end) in wall-clock `time.time()` seconds, so spans
from different processes on one machine line up on one timeline). The orchestrator adds the learner
loop's own parts of each step: waiting for the queue, training, and pushing weights.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Awaitable, Callable  # noqa: UP035

from agentrl.records import GenerationRequest, GenerationResult, Trajectory

GENERATION, TOOL, REWARD = "generation", "tool", "reward"


def add_span(traj: Trajectory, kind: str, start: float, end: float) -> None:
    """Record one span of a trajectory and add its length to `timings[kind + '_s']`."""
    traj.spans.append((kind, start, end))
    key = f"{kind}_s"
    traj.timings[key] = traj.timings.get(key, 0.0) + (end - start)


class TrajectoryTimer:
    """Wraps a trajectory's generate callable to time every turn; places its tool calls on the timeline.

    A tool call runs between two turns; its span ends where the next turn (or the trajectory) starts
    and lasts its recorded `ToolCall.latency_s`.
    """

    def __init__(self, traj: Trajectory, generate: Callable[[GenerationRequest], Awaitable[GenerationResult]]):
        self.traj = traj
        self._generate = generate
        self._tools_spanned = 0

    def _span_new_tool_calls(self, now: float) -> None:
        for call in self.traj.tool_calls[self._tools_spanned:]:
            add_span(self.traj, TOOL, now - call.latency_s, now)
        self._tools_spanned = len(self.traj.tool_calls)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        start = time.time()
        self._span_new_tool_calls(start)
        try:
            return await self._generate(request)
        finally:
            add_span(self.traj, GENERATION, start, time.time())

    def finish(self) -> None:
        """Call when the trajectory's loop has ended (a tool call may have been its last step)."""
        self._span_new_tool_calls(time.time())


class StageClock:
    """Wall seconds of each stage of a tool's calls (search, fetch, reader, summariser, thumbnails): where
    a tool call's latency goes. Keeps the last `keep` of each stage, so a long run's memory stays bounded."""

    def __init__(self, keep: int = 4096) -> None:
        self.keep = keep
        self.seconds: dict[str, deque[float]] = {}

    def record(self, stage: str, seconds: float) -> None:
        self.seconds.setdefault(stage, deque(maxlen=self.keep)).append(seconds)

    @contextlib.asynccontextmanager
    async def timed(self, stage: str) -> AsyncIterator[None]:
        """Record the wall time of the block (also when it fails or is cancelled: a timeout is a latency too)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(stage, time.perf_counter() - start)

    def snapshot(self) -> dict[str, list[float]]:
        return {stage: list(values) for stage, values in self.seconds.items()}


def process_tree_cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) so far of a process (default: this one) and its live descendants; 0 when
    it is gone. A descendant that already ended is not counted."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # ended in between
            pass
    return total


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def step_profile(trajectories: list[Trajectory], queue_wait_s: float, learner_s: float, weight_sync_s: float,
                 step_s: float) -> dict[str, Any]:
    """The `time/*` keys of one metrics row.

    generation, tools and reward are per-trajectory means over the batch (where a trajectory's latency
    went; these overlap across trajectories); queue_wait, learner and weight_sync are the learner
    loop's wall time in this step, and `other` is the rest of the step (bookkeeping, RPCs).
    """
    per = {k: _mean([t.timings.get(f"{k}_s", 0.0) for t in trajectories]) for k in (GENERATION, REWARD)}
    tools = _mean([sum(c.latency_s for c in t.tool_calls) for t in trajectories])
    return {"time/generation_s": per[GENERATION], "time/tools_s": tools, "time/reward_s": per[REWARD],
            "time/queue_wait_s": queue_wait_s, "time/learner_s": learner_s, "time/weight_sync_s": weight_sync_s,
            "time/other_s": max(step_s - queue_wait_s - learner_s - weight_sync_s, 0.0)}
