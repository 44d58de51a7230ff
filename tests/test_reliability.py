"""Faults on the real stack: the short soak (tool errors, environment, reward and generator actors killed and
restarted by Ray, the driver killed with its node and resumed, SIGTERM at the end) loses no group and
leaves no process; a learner rank that dies stops the run at its last complete checkpoint, named."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from agentrl.training.checkpoint import CheckpointStore
from tests.conftest import ROOT, agentrl_cmd

pytestmark = pytest.mark.slow


@pytest.mark.long
def test_the_short_soak_loses_no_group_and_leaves_no_process(tmp_path):
    """Three minutes of wall-clock time, as its name says: the kills come every 20-40 s and the driver's
    kill needs a checkpoint first, so a shorter soak would inject too few faults to check."""
    out = tmp_path / "soak.json"
    r = subprocess.run([*agentrl_cmd(), "bench", "soak", "--minutes", "3", "--env-kill-every-s", "20",
                        "--generator-kill-every-s", "40", "--output-dir", str(tmp_path / "runs"), "--out", str(out),
                        "faults.kill_reward_every_s=30"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.exists(), (r.stdout + r.stderr)[-3000:]
    report = json.loads(out.read_text())
    assert r.returncode == 0, json.dumps(report)
    assert report["lost_groups"] == 0 and report["exit_code"] == 0 and report["processes_left"] == []
    assert report["resumes"] == 1 and report["stopped_by"] == "SIGTERM"
    faults = report["faults"]
    assert faults["env"] >= 1 and faults["generator"] >= 1 and faults["reward"] >= 1 and faults["driver"] == 1
    assert faults["tool_errors_in_trained_trajectories"] > 0  # 20% of calls failed, and training went on
    ledger = report["ledger"]
    assert report["admissions_distinct"] == ledger["groups_admitted"] > 0
    assert ledger["groups_trained"] >= 4 * report["steps"]
    run_dir = tmp_path / "runs" / "soak"
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, report["steps"] + 1))  # one row per step across the resume
    # the SIGTERM's checkpoint is the newest, whole, at the last step
    assert CheckpointStore(str(run_dir), 2).latest().state.step == report["steps"]


def test_a_killed_learner_rank_stops_the_run_at_its_last_complete_checkpoint(tmp_path):
    r = subprocess.run([*agentrl_cmd(), "train", "configs/demo.yaml", f"trainer.output_dir={tmp_path}",
                        "trainer.total_steps=4", "trainer.save_every=1", "trainer.run_name=rank",
                        "faults.kill_learner_rank_at_step=2", "trainer.progress=false"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 1
    failure = [line for line in r.stderr.splitlines() if line.startswith("agentrl:")]
    assert failure and "learner rank 0 died" in failure[0], r.stderr[-3000:]
    summary = json.loads((tmp_path / "rank" / "summary.json").read_text())
    assert summary["steps"] == 2 and "learner rank 0 died" in summary["stopped_by"]
    assert summary["groups_admitted"] == summary["groups_trained"] + summary["groups_dropped_stale"] + \
        summary["groups_failed"] + summary["groups_in_flight_at_stop"]
    latest = CheckpointStore(str(tmp_path / "rank"), 2).latest()
    assert latest is not None and latest.state.step == 2 and latest.state.counts["groups_trained"] == 8
