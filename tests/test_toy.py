"""The toy knowledge task and its warm start: `agentrl make-toy` writes questions in the release's layout,
a corpus holding every fact and warm-start trajectories that teach only the known facts and search at
random; `agentrl sft` fine-tunes on them with the learner's DeepSpeed engine (observations not trained)
and writes a checkpoint transformers loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agentrl.cli import main
from agentrl.config import load_config
from agentrl.data.example import example_schema
from agentrl.data.prompts import PromptStream
from agentrl.data.toy import FILLER, FILLER_ENTITIES, SEARCH_FREE, SEARCH_REQUIRED, SEARCH_TOP_K
from tests.demonstrations import assert_searches_replay

TOY_CONFIG = ["env.protocol=mmsearch_r1", "env.tools=[text_search]"]


def make_toy(out: Path, *args: str) -> Path:
    assert main(["make-toy", "--out", str(out), *args]) == 0
    return out


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def questions(path: Path) -> dict[str, dict]:
    """The parquet's rows by data_id."""
    return {r["data_id"]: r for r in pq.read_table(path).to_pylist()}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy(tmp_path_factory.mktemp("toy"), "--seed", "3", "--entities", "12")


def test_make_toy_writes_questions_in_the_release_layout_with_categories(toy):
    assert sorted(p.name for p in toy.iterdir()) == ["corpus.jsonl", "heldout.parquet", "sft.jsonl", "train.parquet"]
    release = example_schema()
    for name in ("train.parquet", "heldout.parquet"):
        schema = pq.read_schema(toy / name)
        assert schema.names == release.names + ["data_id", "category"]
        assert all(schema.field(n).type == release.field(n).type for n in release.names)
        rows = list(PromptStream(str(toy / name), shuffle=False).once())  # valid prompt data, text only
        assert {r.category for r in rows} == {SEARCH_FREE, SEARCH_REQUIRED}
        assert all(not r.images and len(r.ground_truth) == 1 for r in rows)
    train, heldout = questions(toy / "train.parquet"), questions(toy / "heldout.parquet")
    assert len(train) == 3 * 12 and len(heldout) == 12 and not set(train) & set(heldout)
    for rows in (train, heldout):  # half the entities known
        assert sum(r["category"] == SEARCH_FREE for r in rows.values()) == len(rows) // 2


def test_known_facts_are_taught_and_unknown_facts_are_only_in_the_corpus(toy):
    rows = {**questions(toy / "train.parquet"), **questions(toy / "heldout.parquet")}
    corpus = {d["id"]: d for d in jsonl(toy / "corpus.jsonl")}
    demos = jsonl(toy / "sft.jsonl")
    taught = {d["data_id"] for d in demos}
    for data_id, row in rows.items():
        gold = row["reward_model"]["ground_truth"]
        assert gold in corpus[data_id]["contents"]  # every fact, known or not, is a page
        assert (data_id in taught) == (row["category"] == SEARCH_FREE)  # held-out known facts too
    for d in demos:
        question = d["question"]
        asked = [r for r in rows.values() if r["prompt"][0]["content"] == question]
        if d["category"] == FILLER:  # a filler entity: taught, in the corpus, never asked
            assert not asked and d["data_id"] in corpus
            continue
        assert d["category"] == SEARCH_FREE and asked[0]["category"] == SEARCH_FREE
        answers = [t["text"] for t in d["turns"] if t["role"] == "model"]
        assert f"<answer>{rows[d['data_id']]['reward_model']['ground_truth']}</answer>" in answers[-1]
    fillers = {d["data_id"].split("-")[0] for d in demos if d["category"] == FILLER}
    assert len(fillers) == FILLER_ENTITIES and not fillers & {i.split("-")[0] for i in rows}
    direct = [d for d in demos if len(d["turns"]) == 1]
    assert 0.35 < len(direct) / len(demos) < 0.65  # searching is demonstrated at random, about half the time


def test_search_demonstrations_show_what_the_local_text_search_returns(toy):
    cfg = load_config("configs/demo.yaml", [*TOY_CONFIG, "tools.text_search.backend=local",
                                            f"tools.text_search.corpus={toy / 'corpus.jsonl'}",
                                            f"tools.text_search.top_k={SEARCH_TOP_K}"])
    assert_searches_replay(cfg, toy / "sft.jsonl")


def test_the_same_seed_writes_the_same_files_and_a_new_seed_new_entities(tmp_path):
    a, b, c = (make_toy(tmp_path / n, "--seed", s, "--entities", "6", "--fillers", "2")
               for n, s in (("a", "1"), ("b", "1"), ("c", "2")))
    for name in ("corpus.jsonl", "sft.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    for name in ("train.parquet", "heldout.parquet"):
        assert pq.read_table(a / name).equals(pq.read_table(b / name))
    entities = [{d["id"].split("-")[0] for d in jsonl(x / "corpus.jsonl")} for x in (a, c)]
    assert len(entities[0]) == 6 + 2 and entities[0] != entities[1]


def test_unknown_entities_for_training_only_bring_new_names_and_keep_the_categories_even(tmp_path):
    base = make_toy(tmp_path / "base", "--entities", "8", "--fillers", "10")
    toy = make_toy(tmp_path / "toy", "--entities", "8", "--fillers", "10", "--train-unknown", "20")
    for name in ("sft.jsonl", "heldout.parquet"):  # the same warm start and the same evaluation
        assert (toy / name).read_bytes() == (base / name).read_bytes()
    train = pq.read_table(toy / "train.parquet").to_pylist()
    entities = {r["data_id"].split("-")[0] for r in train}
    new = entities - {r["data_id"].split("-")[0] for r in pq.read_table(base / "train.parquet").to_pylist()}
    assert len(new) == 20 and not new & {d["data_id"].split("-")[0] for d in jsonl(toy / "sft.jsonl")}
    corpus = {d["id"] for d in jsonl(toy / "corpus.jsonl")}
    for r in train:
        if r["data_id"].split("-")[0] in new:  # every attribute asked, each a page of the corpus only
            assert r["category"] == SEARCH_REQUIRED and r["data_id"] in corpus
    assert sum(r["data_id"].split("-")[0] in new for r in train) == 20 * 4
    known = sum(r["category"] == SEARCH_FREE for r in train)
    assert known == 12 * 8  # the 12 known questions, each 8 times: as many as the 4 * 3 + 80 unknown ones
    assert [r["category"] for r in train[:12]].count(SEARCH_FREE) not in (0, 12)  # shuffled, repeats apart


def test_the_search_rate_sets_the_share_of_searching_demonstrations_and_nothing_else(tmp_path):
    base = make_toy(tmp_path / "base", "--entities", "8", "--fillers", "200")
    low = make_toy(tmp_path / "low", "--entities", "8", "--fillers", "200", "--search-rate", "0.25")
    demos = jsonl(low / "sft.jsonl")
    assert 0.18 < sum(len(d["turns"]) == 3 for d in demos) / len(demos) < 0.32
    assert [d["data_id"] for d in demos] == [d["data_id"] for d in jsonl(base / "sft.jsonl")]  # the same facts
    for name in ("train.parquet", "heldout.parquet", "corpus.jsonl"):
        assert (low / name).read_bytes() == (base / name).read_bytes()


def test_bad_arguments_and_rows_fail_in_one_line(tmp_path, capsys):
    assert main(["make-toy", "--out", str(tmp_path / "t"), "--entities", "1"]) == 2
    assert capsys.readouterr().err.strip() == "agentrl: make-toy: --entities must be in 2..900, got 1"
    assert main(["make-toy", "--out", str(tmp_path / "t"), "--fillers", "800", "--train-unknown", "53"]) == 2
    assert capsys.readouterr().err.strip() == "agentrl: make-toy: --train-unknown must be in 0..52, got 53"
    assert main(["make-toy", "--out", str(tmp_path / "t"), "--search-rate", "1"]) == 2
    assert capsys.readouterr().err.strip() == "agentrl: make-toy: --search-rate must be in (0, 1), got 1.0"
    bad_rows = [{"question": "q", "turns": [{"role": "model", "text": "<answer>a</answer>"}]},
                {"question": "q", "turns": [{"role": "model", "text": "t"}, {"role": "user", "text": "o"}]}]
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in bad_rows) + "\n")
    assert main(["sft", "configs/demo.yaml", "--data", str(data), *TOY_CONFIG]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"agentrl: {data} row 1: field 'turns[1].role': expected 'observation'")
    assert "\n" not in err


def masked_nll(model_path: str, trajs: list) -> float:
    """The token-mean NLL of the trained (mask 1) tokens under a checkpoint, loaded by transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for t in trajs:
            ids = torch.tensor([t.prompt_ids + t.response_ids])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
            mask = torch.tensor([0] * (len(t.prompt_ids) - 1) + list(t.loss_mask), dtype=torch.float32)
            total, count = total - float((logp * mask).sum()), count + int(mask.sum())
    return total / count


@pytest.mark.slow
def test_sft_lowers_the_masked_loss_and_writes_a_loadable_checkpoint(tmp_path, tiny_text_path):
    from agentrl.data.trajectories import read_demonstrations
    from agentrl.training.sft import run_sft, tokenise

    toy = make_toy(tmp_path / "toy", "--entities", "4", "--demos", "2", "--fillers", "0")
    cfg = load_config("configs/demo.yaml", [*TOY_CONFIG, f"trainer.output_dir={tmp_path / 'runs'}",
                                            "sft.epochs=4", "sft.batch_size=8", "sft.lr=3e-3"])
    summary = run_sft(cfg, str(toy / "sft.jsonl"))
    assert summary.trajectories == 2 * 4 * 2 and summary.steps == 4 * 2
    assert summary.last_epoch_loss < 0.8 * summary.first_loss
    assert summary.checkpoint == str(tmp_path / "runs" / "demo" / "checkpoints" / "sft")
    assert len(jsonl(tmp_path / "runs" / "demo" / "sft_metrics.jsonl")) == summary.steps

    trajs = tokenise(read_demonstrations(toy / "sft.jsonl"), cfg, tiny_text_path)
    assert all(0 in t.loss_mask for t in trajs if len(t.turn_boundaries) == 2)  # observations are not trained
    before, after = masked_nll(tiny_text_path, trajs), masked_nll(summary.checkpoint, trajs)
    assert math.isfinite(after) and after < 0.8 * before
