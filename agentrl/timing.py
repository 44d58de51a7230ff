"""Where time goes: per-trajectory timings and spans, and the per-step profile in metrics.jsonl.

Each trajectory records how long it spent generating, in tools and being scored (`Trajectory.timings`,
seconds) and when (`Trajectory.spans`: (kind, start, end) in wall-clock `time.time()` seconds, so spans
from different processes on one machine line up on one timeline). The orchestrator adds the learner
loop's own parts of each step: waiting for the queue, training, and pushing weights.
"""

from __future__ import annotations

import time
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
