"""One learner step's row of metrics.jsonl (and wandb): reward, staleness, tools, the loss's own stats and
where the step's time went."""

from __future__ import annotations

from collections import Counter
from typing import Any

from agentrl.metrics import percentile
from agentrl.records import LearnerStepStats, TrainBatch, TrajectoryGroup
from agentrl.timing import step_profile


def step_row(stats: LearnerStepStats, batch: TrainBatch, train_version: int, step_s: float, new_tokens: float,
             marks: tuple[float, float, float, float], groups_dropped_stale: int) -> dict[str, Any]:
    """The row of a step that trained `batch` at `train_version`; `marks`: when the batch was asked for,
    training started, the weight sync started and ended (time.time())."""
    trajs = [tr for g in batch.groups for tr in g.trajectories]
    stale = [train_version - tr.min_policy_version for tr in trajs if tr.min_policy_version >= 0]
    calls = [c for tr in trajs for c in tr.tool_calls]
    lat = [c.latency_s for c in calls]
    rewards = [tr.reward.total if tr.reward else 0.0 for tr in trajs]
    _, t_train, t_sync, t_synced = marks
    sync_s = t_synced - t_sync
    return {
        "step": stats.step, "policy_version": stats.policy_version,
        "reward_mean": sum(rewards) / max(len(rewards), 1), "samples": stats.samples,
        "staleness_mean": sum(stale) / max(len(stale), 1), "staleness_max": max(stale, default=0),
        "learner_idle_frac": min(batch.wait_s / max(step_s, 1e-9), 1.0),
        "gen_tokens_per_s": new_tokens / max(step_s, 1e-9),
        "tool_latency_p50": percentile(lat, 50), "tool_latency_p99": percentile(lat, 99),
        "weight_sync_s": sync_s, "queue_depth": batch.queue_depth,
        "groups_dropped_stale": groups_dropped_stale,
        "loss": stats.loss, "grad_norm": stats.grad_norm, "lr": stats.lr, "tokens": stats.tokens,
        "train_s": stats.train_s, "learner_wait_s": batch.wait_s, "step_s": step_s,
        "tool_calls": len(calls), "tool_errors": sum(not c.ok for c in calls),
        "tool_cache_hits": sum(c.cached for c in calls),
        "tool_cache_misses": sum(not c.cached for c in calls),
        "answered_frac": sum(tr.answer is not None for tr in trajs) / max(len(trajs), 1),
        "images_per_traj_mean": sum(len(tr.images) for tr in trajs) / max(len(trajs), 1),
        **search_ratios(batch),
        **{f"loss/{k}": v for k, v in stats.extra.items()},
        # where this step's time went; `learner` is the train_step call as the driver saw it
        **step_profile(trajs, batch.wait_s, t_sync - t_train, sync_s, step_s),
    }


def search_ratios(batch: TrainBatch) -> dict[str, float]:
    """`search_ratio`: the share of the batch's trajectories that called a tool at least once; and
    `search_ratio/<category>` for each data category in the batch (whether the policy searches what it knows)."""
    def ratio(groups: list[TrajectoryGroup]) -> float:
        searched = [bool(tr.tool_calls) for g in groups for tr in g.trajectories]
        return sum(searched) / max(len(searched), 1)

    categories = sorted({g.category for g in batch.groups if g.category})
    return {"search_ratio": ratio(batch.groups),
            **{f"search_ratio/{c}": ratio([g for g in batch.groups if g.category == c]) for c in categories}}


def summed_tool_counters(stats: list[Any]) -> dict[str, int]:
    """The environment actors' tool and tool-cache counters (`EnvironmentStats.tool_counters`) summed over
    the actors, as `tool/<tool>/<counter>` and `tool/cache/<counter>`."""
    total: Counter[str] = Counter()
    for s in stats:
        total.update(s.tool_counters)
    return {f"tool/{name}": value for name, value in sorted(total.items())}
