"""Whole runs through the `agentrl` command: the demo, a slow learner, a crash, two Ray nodes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from agentrl.algorithms import scheduled_lr
from agentrl.bench.processes import kill_tagged, new_tag, tagged_env, tagged_processes
from agentrl.config import load_config
from agentrl.training.accounting import lost_groups
from tests.conftest import ROOT, VENV_BIN, agentrl_cmd, free_port

pytestmark = pytest.mark.slow


def train(tmp_path: Path, *overrides: str, timeout: int = 600, env: dict | None = None, tag: str = ""):
    """`agentrl train` of the demo on a cluster of its own; every process it starts carries `tag`
    (agentrl/bench/processes.py), so a test finds them among other tests' clusters."""
    cmd = [*agentrl_cmd(), "train", "configs/demo.yaml", f"trainer.output_dir={tmp_path}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=tagged_env(tag or new_tag(), {**os.environ, "RAY_ADDRESS": "", **(env or {})}))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


REQUIRED = ["step", "policy_version", "reward_mean", "samples", "staleness_mean", "staleness_max", "search_ratio",
            "learner_idle_frac", "gen_tokens_per_s", "tool_latency_p50", "tool_latency_p99",
            "weight_sync_s", "queue_depth", "groups_dropped_stale",
            # the time profile of every step (agentrl/timing.py)
            "time/generation_s", "time/tools_s", "time/reward_s", "time/queue_wait_s", "time/learner_s",
            "time/weight_sync_s"]


SECRET = "sk-run-SECRET-c0ffee"


def ledger_holds(summary: dict) -> bool:
    """Every admitted group ended trained, dropped as stale, failed or in flight at stop."""
    return lost_groups(summary) == 0


@pytest.mark.long
def test_the_demo_trains_end_to_end_through_a_driver_kill_and_an_exact_resume(tmp_path):
    """About a minute: two whole runs of the command (killed at step 2, then resumed), each on a cluster of
    its own, as a preempted job is."""
    keys = {k: SECRET for k in ("SERPAPI_API_KEY", "JINA_API_KEY", "OPENAI_API_KEY", "WANDB_API_KEY")}
    run = ["trainer.total_steps=3", "trainer.run_name=demo3", "trainer.wandb.mode=offline", "trainer.save_every=1"]
    tag = new_tag()
    killed = train(tmp_path, *run, "faults.kill_driver_at_step=2", env={**keys, "WANDB_MODE": "offline"}, tag=tag)
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL, after the step-2 checkpoint
    kill_tagged(tag)  # what a preempted node takes with it
    run_dir = tmp_path / "demo3"
    first_admissions = (run_dir / "admissions.jsonl").read_text().splitlines()

    r = train(tmp_path, *run, "trainer.resume=auto", env={**keys, "WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from {run_dir}/checkpoints/step_2" in r.stdout
    rows = metrics(run_dir)
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert set(REQUIRED) <= set(row)
        assert row["samples"] == 4 * 4  # batch_groups * n: whole groups only
        assert row["time/generation_s"] > 0 and row["time/learner_s"] > 0 and row["time/reward_s"] > 0
    # the schedule went on as if never stopped: step 3 used the rate of optimizer step 2
    cfg = load_config("configs/demo.yaml")
    lc = cfg.learner
    assert rows[2]["lr"] == pytest.approx(scheduled_lr(lc.lr_schedule, 2, lc.lr, lc.warmup_steps, 3, lc.min_lr_ratio))
    assert (run_dir / "config.yaml").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert ledger_holds(summary) and summary["resumed_from"].endswith("step_2") and summary["steps"] == 3
    # the prompt stream: the groups live at the checkpoint first, then the uninterrupted run's order
    admissions = [json.loads(line) for line in (run_dir / "admissions.jsonl").read_text().splitlines()]
    resumed = [a for a in admissions if a.get("resumed")]
    new = [a for a in admissions if not a.get("resumed")]
    assert resumed and admissions.index(resumed[-1]) < admissions.index(new[-1])
    assert {a["group_id"] for a in resumed} <= {json.loads(line)["group_id"] for line in first_admissions}
    assert [a["data_id"] for a in new] == [f"syn-{k}" for k in range(len(new))]
    assert [a["group_id"] for a in new] == [f"g{k}" for k in range(len(new))] == \
        [f"g{k}" for k in range(summary["groups_admitted"])]
    ckpt = run_dir / "checkpoints" / "final"
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(ckpt) is not None
    assert "metrics:" in r.stdout and "checkpoint:" in r.stdout
    # keys in the environment never reach the run's files (metrics, config, wandb, checkpoint) or its output
    leaks = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == [] and SECRET not in r.stdout + r.stderr + killed.stdout + killed.stderr


def test_an_unknown_config_key_fails_with_one_line():
    r = subprocess.run([*agentrl_cmd(), "train", "configs/demo.yaml", "learner.lrr=1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "agentrl: unknown config key 'learner.lrr'; did you mean 'learner.lr'?"


@pytest.mark.parametrize("spare_groups", [0, 3])  # spares: more groups in flight, the same bound
def test_with_a_slow_learner_no_trained_token_is_older_than_max_staleness(tmp_path, spare_groups):
    r = train(tmp_path, "trainer.total_steps=4", "trainer.run_name=slow", "learner.slowdown_s=2",
              "trainer.max_staleness=1", "trainer.batch_groups=2", "rollout.n=2",
              f"trainer.spare_groups={spare_groups}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = metrics(tmp_path / "slow")
    assert len(rows) == 4
    for row in rows:
        assert row["loss/token_staleness_max"] <= 1  # measured by the learner on recorded versions
        assert row["staleness_max"] <= 1
        assert row["samples"] == 2 * 2
    assert max(row["loss/token_staleness_max"] for row in rows) == 1  # the bound was actually used
    summary = json.loads((tmp_path / "slow" / "summary.json").read_text())  # every started group accounted for
    assert ledger_holds(summary)


def test_a_crashed_actor_stops_the_run_with_its_name_and_leaves_no_processes(tmp_path):
    tag = new_tag()
    r = train(tmp_path, "trainer.total_steps=3", "trainer.run_name=crash",
              "reward.name=tests.plugins.crashing_reward:crash",
              "reward.max_restarts=1", tag=tag)  # one restart is used up as three are (each costs a worker's start)
    assert r.returncode == 1
    failure = [line for line in r.stderr.splitlines() if line.startswith("agentrl:")]
    assert failure and "actor 'reward-0' died" in failure[0], failure or r.stderr[-3000:]
    assert "actors/reward.py" in r.stderr  # the original frames, down to the call into the dead actor
    time.sleep(3)
    assert tagged_processes(tag) == set()


def test_a_run_in_which_every_group_fails_stops_with_the_reason_instead_of_running_for_ever(tmp_path):
    r = train(tmp_path, "trainer.total_steps=3", "trainer.run_name=allfail", "trainer.max_failed_groups_in_a_row=12",
              "reward.name=tests.plugins.raising_reward:broken", timeout=300)
    assert r.returncode == 1, r.stderr[-3000:]
    failure = [line for line in r.stderr.splitlines() if line.startswith("agentrl:")]
    assert failure == ["agentrl: 12 groups in a row failed and none reached the replay queue "
                       "(trainer.max_failed_groups_in_a_row); the last: ValueError: reward function broken"], \
        r.stderr[-3000:]
    summary = json.loads((tmp_path / "allfail" / "summary.json").read_text())
    assert summary["groups_trained"] == 0 and summary["groups_failed"] >= 12 and ledger_holds(summary)
    assert summary["failed_reasons"] == {"ValueError: reward function broken": summary["groups_failed"]}


def test_two_bf16_learner_ranks_under_zero3_train_the_demo(tmp_path):
    r = train(tmp_path, "learner.num_ranks=2", "learner.zero_stage=3", "model.dtype=bfloat16",
              "trainer.total_steps=3", "trainer.run_name=ranks", "trainer.progress=false")
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "ranks"
    assert [row["step"] for row in metrics(run_dir)] == [1, 2, 3]
    placement = json.loads((run_dir / "placement.json").read_text())
    assert {"learner", "learner-rank-0", "learner-rank-1"} <= set(placement)
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints" / "final")  # gathered from both ranks
    assert next(model.parameters()).dtype == torch.bfloat16


# Ray's default for a new cluster is token authentication (the token in ~/.ray/auth_token); every
# process that joins or talks to the cluster must use it too.
CLUSTER_ENV = {"RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"}


def _ray(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "ray"), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **CLUSTER_ENV, **(env or {})}, **kw)


def _agent_ports() -> list[str]:
    return ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]


@pytest.fixture
def two_node_cluster():
    """A real two-node Ray cluster on this machine: a head offering `train` (two learner ranks' worth), and
    a node offering the `gen` resource. Free ports and temp dirs of its own, its processes tagged: it
    neither meets nor stops the other clusters on the machine (other tests run beside it)."""
    tag, gcs_port, dashboard_port = new_tag(), free_port(), free_port()
    env = tagged_env(tag, {})
    root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    # Each node its own temp dir: on one machine the two nodes would otherwise unpack the job's working dir
    # into the same folder, each deleting it under the other; and no `ray.init()` elsewhere finds the head.
    # the per-node agents' ports too: their defaults (52365 for the one that takes job submissions) may
    # be held by another test's cluster
    head = _ray("start", "--head", "--port", str(gcs_port), "--num-cpus", "2", "--resources", '{"train": 2}',
                "--dashboard-port", str(dashboard_port), "--include-dashboard", "true", "--disable-usage-stats",
                "--temp-dir", str(root / "head"), *_agent_ports(), env=env, timeout=120)
    assert head.returncode == 0, head.stderr
    node = _ray("start", "--address", f"127.0.0.1:{gcs_port}", "--num-cpus", "1", "--resources", '{"gen": 1}',
                "--temp-dir", str(root / "node2"), "--disable-usage-stats", *_agent_ports(), env=env, timeout=120)
    assert node.returncode == 0, node.stderr
    yield f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}"
    kill_tagged(tag)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.long
def test_ray_job_submit_places_generators_and_learner_ranks_by_their_resources(tmp_path, two_node_cluster):
    """About a minute: two Ray nodes started with `ray start`, a job submitted with `ray job submit` (its
    working dir uploaded and unpacked), as a user runs one."""
    import sys

    py = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
    gcs, dashboard = two_node_cluster
    job = ["job", "submit", "--address", dashboard, "--working-dir", ".",
           "--runtime-env-json", json.dumps({"excludes": [".venv", ".git", "runs", "wandb"]}), "--",
           py, "-m", "agentrl.cli", "train", "configs/demo.yaml", "trainer.total_steps=2",
           "trainer.run_name=multinode", f"trainer.output_dir={tmp_path}", "rollout.resources={gen: 1}",
           "learner.resources={train: 1}", "learner.num_ranks=2", "trainer.progress=false"]
    deadline = time.monotonic() + 120
    while True:  # the head's job agent comes up after `ray start` returns (later on a busy machine)
        r = _ray(*job, timeout=600)
        if "No available agent to submit job" not in r.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    rows = metrics(tmp_path / "multinode")
    assert [row["step"] for row in rows] == [1, 2]
    placement = json.loads((tmp_path / "multinode" / "placement.json").read_text())
    probe = (f"import json, ray; ray.init(address='{gcs}'); "
             "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive'] and n['Resources'].get('gen')]))")
    out = subprocess.run([py, "-c", probe], capture_output=True, text=True, env={**os.environ, **CLUSTER_ENV},
                         timeout=120)
    gen_nodes = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert placement["generator-0"] in gen_nodes
    assert placement["learner"] not in gen_nodes  # the head, by its `train` resource
    assert placement["learner-rank-0"] == placement["learner-rank-1"] == placement["learner"]


def test_training_on_a_verl_parquet_with_the_search_tools_and_reward(tmp_path, example_data):
    mini = example_data  # the release's layout, written by the project
    r = train(tmp_path, "trainer.total_steps=2", "trainer.run_name=mini", f"data.source={mini}",
              "env.protocol=mmsearch_r1", "env.tools=[image_search, text_search]", "reward.name=mmsearch_r1",
              "trainer.batch_groups=2", "rollout.n=2", "env.max_total_tokens=400", "trainer.progress=false",
              "trainer.eval_every=2", f"trainer.eval_data={mini}", "trainer.eval_limit=3",
              f"tools.cache.path={tmp_path / 'tools.sqlite'}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = metrics(tmp_path / "mini")
    assert [row["step"] for row in rows] == [1, 2] and all(row["samples"] == 4 for row in rows)
    for row in rows:  # every row carries the tools' and the tool cache's counters (tests/test_tool_counters.py)
        counters = {k: v for k, v in row.items() if k.startswith("tool/")}
        assert set(counters) >= {"tool/cache/hits", "tool/cache/misses", "tool/cache/corrupt",
                                 "tool/cache/put_errors", "tool/text_search/pages_cut",
                                 "tool/image_search/thumbnails_dropped"}
        assert all(isinstance(v, int) and v >= 0 for v in counters.values())
    # trainer.eval_every=2: the eval of the validation file ran at step 2 only, logged as eval/*
    assert "eval/accuracy" not in rows[0] and rows[1]["eval/items"] == 3
    summary = json.loads((tmp_path / "mini" / "eval" / "step_2" / "summary.json").read_text())
    assert summary["workflow"] == "on_demand" and rows[1]["eval/search_ratio"] == summary["overall"]["search_ratio"]
    # trainer.eval_before: the starting policy too (not a metrics row), and the before/after table at the end
    before = json.loads((tmp_path / "mini" / "eval" / "step_0" / "summary.json").read_text())
    assert before["overall"]["items"] == 3
    table = r.stdout[r.stdout.index("[agentrl] held-out eval (on_demand, 1 sample(s)"):]
    assert "| acc step 0 | acc step 2 | search step 0 | search step 2 |" in table and "| overall " in table
    state = json.loads((tmp_path / "mini" / "checkpoints" / "final" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["policy_version"] == 2 and state["rows_taken"] >= 4
    # the file's cursor is where the stream stands after the rows admitted (the file is short: epochs wrap)
    from agentrl.data.prompts import PromptStream

    rows_per_epoch = sum(1 for _ in PromptStream(str(mini), shuffle=False).once())
    cursor = state["data_cursor"]
    assert cursor["epoch"] * rows_per_epoch + cursor["index"] == state["rows_taken"]
