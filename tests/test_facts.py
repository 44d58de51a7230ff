"""The real-knowledge task (`agentrl make-facts`): questions about real facts the base model was measured to
know (search_free) and about made-up entities only the corpus holds (search_required); held-out questions
are about entities no training row mentions; the warm start's demonstrations answer known training facts
directly (a third of them searched as well) and search as many made-up entities that no question asks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agentrl.cli import main
from agentrl.config import load_config
from agentrl.data.example import example_schema
from agentrl.data.facts import KNOWN_RATE, read_measured, real_facts, write_facts
from agentrl.data.prompts import PromptStream
from agentrl.data.toy import SEARCH_FREE, SEARCH_REQUIRED
from agentrl.evaluation.knowledge import is_right, measure_known
from tests.demonstrations import assert_searches_replay


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rated(rate_of_every_third: float = 1.0) -> list:
    """The table's facts with given rates: every third known, the others right 1 time in 8 (pure logic: the
    measurement itself is tested against the real model below)."""
    return [replace(f, known_rate=rate_of_every_third if i % 3 == 0 else 1 / 8) for i, f in enumerate(real_facts())]


@pytest.fixture(scope="module")
def facts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("facts")
    write_facts(out, "a-model", rated(), seed=5, temperature=0.7, made_up=20)
    return out


def test_make_facts_writes_known_and_made_up_questions_in_the_release_layout(facts):
    assert sorted(p.name for p in facts.iterdir()) == ["corpus.jsonl", "facts.json", "heldout.parquet",
                                                       "sft.jsonl", "train.parquet"]
    release = example_schema()
    summary = json.loads((facts / "facts.json").read_text())
    known = {r["subject"] for r in summary["real"] if r["known_rate"] >= KNOWN_RATE}
    made_up = {r["subject"] for r in summary["made_up"]}
    assert len(made_up) == 40 and not made_up & {f.subject for f in real_facts()}
    for name in ("train.parquet", "heldout.parquet"):
        assert pq.read_schema(facts / name).names == release.names + ["data_id", "category"]
        rows = list(PromptStream(str(facts / name), shuffle=False).once())
        assert {r.category for r in rows} == {SEARCH_FREE, SEARCH_REQUIRED}
        for r in rows:  # a known real fact is search_free, a made-up one search_required; nothing else asked
            subject = r.question.removeprefix("What is the capital of ").removeprefix("Who wrote ").rstrip("?")
            assert subject in (known if r.category == SEARCH_FREE else made_up), r.question
    assert summary["counts"]["heldout"] == {SEARCH_FREE: 16, SEARCH_REQUIRED: 16}
    train = pq.read_table(facts / "train.parquet").to_pylist()
    assert abs(sum(r["category"] == SEARCH_FREE for r in train) - sum(r["category"] == SEARCH_REQUIRED
                                                                      for r in train)) <= len(train) // 3
    # in file order (the config reads it so) every stretch of rows a batch could take holds both categories
    fewer = min(sum(r["category"] == c for r in train) for c in (SEARCH_FREE, SEARCH_REQUIRED))
    stretch = -(-len(train) // fewer) + 1
    for start in range(len(train) - stretch + 1):
        assert {r["category"] for r in train[start:start + stretch]} == {SEARCH_FREE, SEARCH_REQUIRED}, start


def test_held_out_questions_are_about_entities_no_training_row_or_demonstration_mentions(facts):
    train = [r["prompt"][0]["content"] for r in pq.read_table(facts / "train.parquet").to_pylist()]
    demos = [json.dumps(d) for d in jsonl(facts / "sft.jsonl")]
    summary = json.loads((facts / "facts.json").read_text())
    heldout = [r["subject"] for r in summary["real"] + summary["made_up"] if r["heldout"]]
    assert heldout
    for subject in heldout:
        assert not any(subject in q for q in train) and not any(subject in d for d in demos), subject


def test_demonstrations_answer_known_training_facts_search_unasked_made_up_ones_and_the_corpus_holds_every_fact(facts):
    summary = json.loads((facts / "facts.json").read_text())
    known_train = [r for r in summary["real"] if r["asked"] and not r["heldout"]]
    demo_only = {r["subject"] for r in summary["demonstrations_only"]}
    asked_made_up = {r["subject"] for r in summary["made_up"]}
    demos = jsonl(facts / "sft.jsonl")
    known = [d for d in demos if d["category"] == SEARCH_FREE]
    made_up = [d for d in demos if d["category"] == SEARCH_REQUIRED]
    assert sum(d["action"] == "direct" for d in known) == len(known_train)
    assert sum(d["action"] == "search" for d in known) == -(-len(known_train) // 3)
    for relation, question in (("capital", "What is the capital of "), ("author", "Who wrote ")):
        of_relation = [d for d in made_up if d["question"].startswith(question)]
        available = sum(r["relation"] == relation for r in summary["demonstrations_only"])
        assert len(of_relation) == min(available, sum(r["relation"] == relation for r in known_train))
    subjects = {d["question"].removeprefix("What is the capital of ").removeprefix("Who wrote ").rstrip("?")
                for d in made_up}
    assert all(d["action"] == "search" for d in made_up)
    assert subjects <= demo_only and not demo_only & asked_made_up  # no question asks a demonstrated entity
    pages = {p["id"] for p in jsonl(facts / "corpus.jsonl")}
    asked = {r["data_id"] for name in ("train.parquet", "heldout.parquet")
             for r in pq.read_table(facts / name).to_pylist()}
    assert asked <= pages


def test_search_demonstrations_show_what_the_local_text_search_returns(facts):
    cfg = load_config("configs/learn_smollm2.yaml", [f"tools.text_search.corpus={facts / 'corpus.jsonl'}",
                                                     f"data.source={facts / 'train.parquet'}",
                                                     f"trainer.eval_data={facts / 'heldout.parquet'}",
                                                     f"sft.data={facts / 'sft.jsonl'}"])
    assert_searches_replay(cfg, facts / "sft.jsonl")


def test_the_same_seed_writes_the_same_task_and_a_measurement_can_be_reused(tmp_path, facts):
    write_facts(tmp_path / "again", "a-model", read_measured(facts / "facts.json"), seed=5, temperature=0.7,
                made_up=20)
    for name in ("corpus.jsonl", "sft.jsonl", "facts.json"):
        assert (tmp_path / "again" / name).read_bytes() == (facts / name).read_bytes(), name
    write_facts(tmp_path / "other", "a-model", rated(), seed=6, temperature=0.7, made_up=20)
    made_up = [{r["subject"] for r in json.loads((d / "facts.json").read_text())["made_up"]}
               for d in (facts, tmp_path / "other")]
    assert made_up[0] != made_up[1]


def test_a_reply_is_right_when_a_gold_answer_occurs_as_whole_words():
    assert is_right("The capital of France is Paris.", ["Paris"])
    assert is_right("It was written by Shakespeare", ["William Shakespeare", "Shakespeare"])
    assert not is_right("Parisian food is good", ["Paris"])
    assert not is_right("I do not know", ["Paris"]) and not is_right("anything", [""])


def test_bad_make_facts_arguments_are_one_line_and_exit_2(tmp_path, capsys):
    for args, key in ((["--made-up", "2"], "--made-up"), (["--temperature", "0"], "--temperature")):
        assert main(["make-facts", "--out", str(tmp_path / "f"), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"agentrl: make-facts: {key} must be") and err.count("\n") == 1, err
        assert not (tmp_path / "f").exists()


@pytest.mark.slow
def test_the_base_model_s_knowledge_is_measured_by_sampling_it(smollm2_path):
    """SmolLM2-135M knows the capital of the United Kingdom (1.0 in the committed measurement) and cannot know
    a made-up country's."""
    from agentrl.data.facts import Fact

    uk = next(f for f in real_facts() if f.subject == "the United Kingdom")
    made_up = Fact("capital", "Velkorstan", "Ashgrad", made_up=True)
    rates = [f.known_rate for f in measure_known(smollm2_path, [uk, made_up], temperature=0.7)]
    assert rates[0] >= KNOWN_RATE and rates[1] == 0.0
