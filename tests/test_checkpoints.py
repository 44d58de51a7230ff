"""Checkpoints: the learner group continues exactly from a DeepSpeed checkpoint (the same `lr` and the same
loss on the next step as an uninterrupted learner: the optimizer and the schedule's clock were restored);
a checkpoint is found only when complete; retention; the ledger that accounts for every admitted group."""

from __future__ import annotations

import json
import os

import pytest
import ray

from agentrl.actors.factory import create_learner
from agentrl.config import load_config
from agentrl.records import DataRow, GroupOutcome
from agentrl.training.accounting import AdmittedGroup, GroupLedger
from agentrl.training.checkpoint import CheckpointStore, TrainerState, restore_rng, rng_states
from tests.learner_batches import real_batch


def learner(path: str, *overrides: str):
    # a schedule that moves every step and Adam's moments: a resume that lost either shows in the next step
    cfg = load_config("configs/demo.yaml", ["rollout.n=2", "learner.lr=1e-2", "learner.lr_schedule=sigmoid_decay",
                                            "learner.warmup_steps=2", "learner.mini_batches=2", *overrides])
    return create_learner(cfg, path, total_steps=10, name=None)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_a_resumed_learner_takes_the_same_next_step_as_an_uninterrupted_one(cluster, tiny_text_path, tmp_path, stage):
    zero = f"learner.zero_stage={stage}"
    a = learner(tiny_text_path, zero, "learner.num_ranks=2" if stage == 3 else "learner.num_ranks=1")
    batch = real_batch(tiny_text_path, a, 4, 2)
    for _ in range(2):
        ray.get(a.train_step.remote(batch))
    folder = ray.get(a.save_checkpoint.remote(str(tmp_path / "ckpt")))
    assert os.path.isfile(os.path.join(folder, "model.safetensors"))
    assert os.path.isdir(os.path.join(folder, "deepspeed"))
    uninterrupted = ray.get(a.train_step.remote(batch))
    after_a = ray.get(a.compute_loss.remote(batch))
    ray.get(a.shutdown.remote())
    ray.kill(a)

    b = learner(tiny_text_path, zero, "learner.num_ranks=2" if stage == 3 else "learner.num_ranks=1")
    ray.get(b.load_checkpoint.remote(folder, 2, 2))
    resumed = ray.get(b.train_step.remote(batch))
    assert (resumed.step, resumed.policy_version) == (3, 3)
    assert resumed.lr == pytest.approx(uninterrupted.lr, rel=1e-9)
    assert resumed.loss == pytest.approx(uninterrupted.loss, rel=1e-5, abs=1e-7)
    # the same update: Adam's moments came back too (fresh ones would move the weights differently)
    assert ray.get(b.compute_loss.remote(batch)) == pytest.approx(after_a, rel=1e-5, abs=1e-7)
    ray.get(b.shutdown.remote())
    ray.kill(b)


@pytest.mark.slow
def test_a_planted_pickle_in_the_deepspeed_folder_is_refused_and_never_run(cluster, tiny_text_path, tmp_path):
    """DeepSpeed's loader asks torch for `weights_only=False`: a run folder's file would run code at resume."""
    import glob
    import pickle

    a = learner(tiny_text_path)
    ray.get(a.setup.remote())
    folder = ray.get(a.save_checkpoint.remote(str(tmp_path / "ckpt")))
    ray.kill(a)
    marker = tmp_path / "code-ran"
    states = glob.glob(f"{folder}/deepspeed/**/*optim_states.pt", recursive=True)
    assert states
    with open(states[0], "wb") as f:
        pickle.dump(_Planted(str(marker)), f)
    b = learner(tiny_text_path)
    with pytest.raises(ray.exceptions.RayTaskError, match="holds more than tensors and plain data; not loaded"):
        ray.get(b.load_checkpoint.remote(folder, 1, 1))
    assert not marker.exists()
    ray.kill(b)


def group(k: int) -> AdmittedGroup:
    return AdmittedGroup(f"g{k}", DataRow(k, f"q{k}", ["a"], data_id=f"d{k}"), 0)


def test_the_ledger_ends_every_admitted_group_once(tmp_path):
    ledger = GroupLedger(str(tmp_path))
    for k in range(6):
        ledger.admit(group(k))
    ledger.trained(["g0", "g1"])
    ledger.dropped_stale(["g2"])
    ledger.failed("g3", "ValueError: bad image")
    ledger.trained(["g0"])  # already ended: not counted twice
    counts = ledger.close()
    assert (counts.groups_admitted, counts.groups_trained, counts.groups_dropped_stale, counts.groups_failed,
            counts.groups_in_flight_at_stop) == (6, 2, 1, 1, 2)
    assert counts.failed_reasons == {"ValueError: bad image": 1}
    lines = [json.loads(line) for line in (tmp_path / "admissions.jsonl").read_text().splitlines()]
    assert lines[0] == {"group_id": "g0", "data_id": "d0", "policy_version": 0} and len(lines) == 6


def test_the_ledger_stops_a_run_after_a_streak_of_failed_groups_only(tmp_path):
    from agentrl.errors import RunFailure

    ledger = GroupLedger(str(tmp_path), max_failed_in_a_row=3)
    for k in range(8):
        ledger.admit(group(k))
    ledger.failed("g0", "E: a")
    ledger.failed("g1", "E: a")
    ledger.env_outcome("g7", GroupOutcome("queued"))  # one group got through: the streak starts again
    ledger.failed("g2", "E: a")
    ledger.env_outcome("g3", GroupOutcome("failed", "E: b"))
    with pytest.raises(RunFailure, match="3 groups in a row failed .* the last: E: c$"):
        ledger.failed("g4", "E: c")
    assert ledger.counts.groups_failed == 5


def test_the_ledger_keeps_a_bounded_number_of_distinct_failure_reasons(tmp_path):
    from agentrl.training.accounting import MAX_FAILURE_REASONS

    ledger = GroupLedger(str(tmp_path))
    for k in range(MAX_FAILURE_REASONS + 10):
        ledger.admit(group(k))
        ledger.failed(f"g{k}", f"E: request {k}")
    reasons = ledger.counts.failed_reasons
    assert len(reasons) == MAX_FAILURE_REASONS + 1 and reasons["other reasons"] == 10


def test_a_resumed_ledger_keeps_the_admissions_up_to_its_checkpoint_and_marks_re_admissions(tmp_path):
    ledger = GroupLedger(str(tmp_path))
    for k in range(4):
        ledger.admit(group(k))
    ledger.trained(["g0"])
    snapshot = ledger.snapshot()  # the checkpoint: g1..g3 live
    for k in range(4, 7):  # admitted after the checkpoint, then the driver was killed
        ledger.admit(group(k))
    live = [g for g in ledger.live.values() if g.group_id in ("g1", "g2", "g3")]

    resumed = GroupLedger(str(tmp_path), TrainerState(1, 1, 4, None, snapshot).ledger_counts())
    for g in live:
        resumed.admit(g, resumed=True)
    resumed.admit(group(4))
    resumed.trained(["g1", "g2", "g3", "g4"])
    counts = resumed.close()
    assert (counts.groups_admitted, counts.groups_trained, counts.groups_in_flight_at_stop) == (5, 5, 0)
    lines = [json.loads(line) for line in (tmp_path / "admissions.jsonl").read_text().splitlines()]
    assert [(x["group_id"], x.get("resumed", False)) for x in lines] == [
        ("g0", False), ("g1", False), ("g2", False), ("g3", False),
        ("g1", True), ("g2", True), ("g3", True), ("g4", False)]


def fake_learner_part(tmp: str) -> None:
    os.makedirs(os.path.join(tmp, "deepspeed"))


def test_checkpoints_are_renamed_into_place_kept_by_retention_and_skipped_when_incomplete(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=2)
    for step in (1, 2, 3):
        tmp = store.staging(step)
        fake_learner_part(tmp)
        store.commit(tmp, TrainerState(step, step, 4 * step, None), [group(step)])
    names = sorted(os.listdir(tmp_path / "checkpoints"))
    assert names == ["step_2", "step_3"]  # no staging folder left, the oldest removed
    assert store.latest().state.step == 3 and store.latest().live[0].group_id == "g3"

    (tmp_path / "checkpoints" / "step_3" / "COMPLETE").unlink()  # say, a copy that stopped half way
    (tmp_path / "checkpoints" / "step_4").mkdir()
    warnings: list[str] = []
    found = store.latest(warn=warnings.append)
    assert found is not None and found.state.step == 2
    assert len(warnings) == 2 and all(w.count("\n") == 0 for w in warnings)
    assert "step_4" in warnings[0] and "incomplete" in warnings[0] and "step_3" in warnings[1]

    (tmp_path / "checkpoints" / "step_2" / "trainer_state.json").write_text("{not json")
    assert store.latest(warn=warnings.append) is None and "trainer_state.json" in warnings[-1]
    link = store.mark_final(str(tmp_path / "checkpoints" / "step_2"))
    assert os.path.realpath(link) == str(tmp_path / "checkpoints" / "step_2")


def test_the_drivers_rng_states_survive_a_json_round_trip():
    import random

    import numpy as np

    saved = json.loads(json.dumps(rng_states()))
    expected = (random.random(), float(np.random.rand()))
    random.seed(123)
    np.random.seed(123)
    restore_rng(saved)
    assert (random.random(), float(np.random.rand())) == expected


class _Planted:
    """What a hostile `live_groups.pkl` holds: unpickling it would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_is_plain_data_and_a_planted_pickle_is_never_loaded(tmp_path):
    import pickle

    store = CheckpointStore(str(tmp_path), keep=3)
    row = DataRow(7, "What is this?", ["a tile"], ["tile"], images=[b"\x89PNG\r\n\x1a\n\x00\xffbytes"],
                  image_urls=["http://x/y.png"], data_source="fvqa", data_id="d7", category="search_required")
    tmp = store.staging(1)
    fake_learner_part(tmp)
    store.commit(tmp, TrainerState(1, 1, 4, None), [AdmittedGroup("g7", row, 0, attempts=2)])
    [back] = store.latest().live
    assert back == AdmittedGroup("g7", row, 0, attempts=2)  # image bytes and every field round-trip
    assert json.loads((tmp_path / "checkpoints" / "step_1" / "live_groups.json").read_text())[0]["group_id"] == "g7"

    marker = tmp_path / "code-ran"
    step2 = tmp_path / "checkpoints" / "step_2"  # an older agentrl's layout, or a planted file
    step2.mkdir()
    (step2 / "COMPLETE").write_text("ok\n")
    (step2 / "deepspeed").mkdir()
    (step2 / "trainer_state.json").write_text(json.dumps({"step": 2, "policy_version": 2, "rows_taken": 8,
                                                          "data_cursor": None}))
    (step2 / "live_groups.pkl").write_bytes(pickle.dumps(_Planted(str(marker))))
    warnings: list[str] = []
    assert store.latest(warn=warnings.append).state.step == 1  # skipped, named, the older one used
    assert not marker.exists() and "step_2" in warnings[0] and "live_groups.pkl is not read" in warnings[0]
    for bad in ('[{"group_id": 3}]', '[{"group_id": "g", "policy_version": "1", "row": {"row_id": 1, '
                '"question": "q", "ground_truth": ["a"]}}]', '[{"group_id": "g", "policy_version": 1, "row": '
                '{"row_id": 1, "question": "q", "ground_truth": ["a"], "images": ["%%%"]}}]', "{not json"):
        (step2 / "live_groups.json").write_text(bad)
        assert store.latest(warn=warnings.append).state.step == 1
        assert "step_2" in warnings[-1] and "live_groups.json" in warnings[-1] and warnings[-1].count("\n") == 0
