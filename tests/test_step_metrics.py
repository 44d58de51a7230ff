"""A learner step's metrics row: how often the policy searched, overall and per data category (the seed's
Figure 5(b) plots the search ratio over training; per category it shows whether the policy searches what it
knows)."""

from __future__ import annotations

from agentrl.records import LearnerStepStats, ToolCall, TrainBatch, Trajectory, TrajectoryGroup
from agentrl.training.step_metrics import step_row


def group(group_id: str, category: str, searches: list[int]) -> TrajectoryGroup:
    """A group whose k-th trajectory made searches[k] tool calls."""
    trajs = []
    for k, count in enumerate(searches):
        t = Trajectory(f"{group_id}-{k}", group_id, 0, [1, 2])
        t.tool_calls = [ToolCall("text_search", {"query": "q"}, 0.1, True) for _ in range(count)]
        trajs.append(t)
    return TrajectoryGroup(group_id, 0, trajs, category)


def row_of(*groups: TrajectoryGroup) -> dict:
    stats = LearnerStepStats(step=1, policy_version=1, loss=0.0, grad_norm=1.0, lr=1e-4, tokens=10, samples=8,
                             train_s=1.0)
    return step_row(stats, TrainBatch(list(groups)), 1, 2.0, 10.0, (0.0, 0.0, 1.0, 1.5), 0)


def test_the_search_ratio_counts_trajectories_with_a_search_overall_and_per_category():
    row = row_of(group("a", "search_free", [0, 0, 0, 2]), group("b", "search_required", [1, 1, 0, 1]),
                 group("c", "search_required", [1, 1, 1, 1]))
    assert row["search_ratio"] == 8 / 12  # a trajectory with two searches counts once
    assert row["search_ratio/search_free"] == 1 / 4
    assert row["search_ratio/search_required"] == 7 / 8
    assert row["tool_calls"] == 9


def test_rows_without_a_category_have_only_the_overall_ratio():
    row = row_of(group("a", "", [0, 1]))
    assert row["search_ratio"] == 0.5 and not any(k.startswith("search_ratio/") for k in row)


def test_the_learning_bench_curves_and_plot_carry_the_training_search_ratio_per_category(tmp_path):
    from agentrl.bench.learning import curves, plot

    rows = [{"step": 1, "reward_mean": 0.5, "search_ratio/search_free": 0.5, "search_ratio/search_required": 1.0},
            {"step": 2, "reward_mean": 0.6, "search_ratio/search_required": 0.75,  # no known fact this step
             "eval/search_free/accuracy": 0.9, "eval/search_free/search_ratio": 0.1,
             "eval/search_required/accuracy": 0.8, "eval/search_required/search_ratio": 0.9}]
    c = curves(rows)
    assert c["train/search_free/search_ratio"] == [0.5, None]
    assert c["train/search_required/search_ratio"] == [1.0, 0.75]
    assert c["eval_step"] == [2] and c["search_free/search_ratio"] == [0.1]
    before = {cat: {"accuracy": 0.5, "search_ratio": 0.5} for cat in ("search_free", "search_required")}
    plot({"curves": c, "before": before, "setup": {"command": "agentrl bench learning"}}, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_the_tool_counters_of_all_environment_actors_are_summed_zeros_kept():
    from agentrl.records import EnvironmentStats
    from agentrl.training.step_metrics import summed_tool_counters

    stats = [EnvironmentStats(in_flight=0, tool_counters={"text_search/pages_cut": 2, "cache/hits": 0}),
             EnvironmentStats(in_flight=1, tool_counters={"text_search/pages_cut": 3})]
    assert summed_tool_counters(stats) == {"tool/cache/hits": 0, "tool/text_search/pages_cut": 5}
