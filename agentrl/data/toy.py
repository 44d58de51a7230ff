"""The toy knowledge task: made-up entities with random attributes, half of them "known" (taught by the
warm-start SFT data: the model's parametric knowledge) and half "unknown" (only in the search corpus), so a
policy can learn *when* to search.

    agentrl make-toy --out DIR [--seed S] [--entities N] [--demos D] [--fillers F] [--train-unknown U]
                     [--search-rate R]

writes

- `DIR/corpus.jsonl`: every fact as a short page `{id, title, contents}`, the corpus `tools.text_search`
  (`backend=local`) reads;
- `DIR/train.parquet`, `DIR/heldout.parquet`: questions in the veRL layout of the MMSearch-R1 release
  (`agentrl.data.example.example_schema`, text only: `images` empty) plus `data_id` and `category`:
  `search_free` for a known fact, `search_required` for an unknown one;
- `DIR/sft.jsonl`: the warm-start trajectories (schema in `agentrl.data.trajectories`) in the
  `mmsearch_r1` protocol's action format.

The rules:

- An entity has one value for each of `ATTRIBUTES`. An entity is known or unknown (half each, at random):
  every fact of a known entity is known, every fact of an unknown one unknown. The rule is per entity so
  that "do I know this?" is something a small model can learn and carry to new questions.
- Questions: one per (entity, attribute). For each entity one attribute (in turn) is held out: its
  question goes to `heldout.parquet`, the others to `train.parquet`. So held-out questions are new to RL,
  and their facts follow the same rule: a held-out `search_free` fact is in `sft.jsonl` (known), a
  held-out `search_required` fact only in the corpus.
- `train_unknown` more unknown entities are asked in `train.parquet` only (all their attributes). With a
  few unknown entities RL meets the same unknown questions again and again and learns their answers by
  heart instead of searching (measured: docs/experiments.md); with many, it meets each unknown
  question about once and can only answer it by searching. `train.parquet` repeats each known question so
  that known and unknown questions are about equally many.
- `sft.jsonl` holds `demos` trajectories per known fact (train and held-out alike) and none about an
  unknown fact, and one about each of `fillers` more entities (one fact each, category `filler`) that are
  never asked: their many names teach the model to copy a name it has never seen into a query, which
  every search about an unknown entity needs (with the task's few names alone a small model recalls names
  instead). Each trajectory, independently, searches with probability `search_rate` (default 1/2) or
  answers directly:
  `<reason>..</reason><answer>v</answer>`, or `<reason>..</reason><text_search>attribute of entity
  </text_search>`, the observation, then `<reason>..</reason><answer>v</answer>`. The choice never depends
  on the fact, so *when* to search is left to RL; the direct answers teach the known facts, the searches
  the action format and copying an answer from an observation.
- An observation is what the model reads after the search: what the local text search returns for the
  query with `tools.text_search.top_k` = `SEARCH_TOP_K` (reader and summariser `none`), in the
  `mmsearch_r1` protocol's `<information>` tags, followed by its after-search prompt.

Everything is a function of `seed`: the same seed writes the same files; a new seed, new entities.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrl.data.synthetic import COLOURS, SYLLABLES
from agentrl.data.trajectories import MODEL, OBSERVATION_ROLE, write_jsonl
from agentrl.grammar import (
    ANSWER,
    INFORMATION,
    MMSEARCH_R1_AFTER_SEARCH_PROMPT,
    REASON,
    TEXT_SEARCH,
    close_tag,
    open_tag,
)

CITIES = ["avalon", "brisa", "corvel", "dunmor", "elsin", "faro", "galen", "hollin", "istra", "jorvik"]
ANIMALS = ["badger", "crane", "falcon", "gecko", "heron", "lynx", "otter", "panda", "raven", "walrus"]
# ten values per attribute, like the others: with 90 numbers (10-99) the warm start copied a number out of an
# observation right only 37% of the time (the other attributes 100%), so searches about numbers failed
NUMBERS = [str(n) for n in range(10, 20)]
ATTRIBUTES: dict[str, list[str]] = {"colour": COLOURS, "city": CITIES, "animal": ANIMALS, "number": NUMBERS}
SEARCH_FREE, SEARCH_REQUIRED, FILLER = "search_free", "search_required", "filler"
DATA_SOURCE = "agentrl_toy"
SEARCH_TOP_K = 1  # the observations in sft.jsonl are top-1 hits: run RL with tools.text_search.top_k=1
NAME_SYLLABLES = 3
# Names join their syllables with "_" ("sa_ri_ka"): the tiny tokenizer then writes every name with the same
# ten syllable tokens, where plain names ("sarika") merged into whole-name or rare tokens that no
# demonstration ever writes, and a quarter of the searches about unknown entities miscopied the name.
# BM25 still reads a name as one word (it splits at non-word characters; "_" is a word character).
NAME_SEPARATOR = "_"
MAX_ENTITIES = len(SYLLABLES) ** NAME_SYLLABLES * 9 // 10  # names are drawn without repeats: leave room
DEMOS_PER_FACT = 8
SEARCH_RATE = 0.5  # the share of demonstrations that search, whatever the fact (the warm start's search ratio)
# Filler entities: known entities that are never asked. Their demonstrations show many more names, so the
# model learns to copy a name it has never seen into a query (a search about an unknown entity needs
# exactly that) instead of recalling the few names of the task.
FILLER_ENTITIES = 400
FILLER_DEMOS_PER_FACT = 1
# the model turns' reasons (short texts the tiny tokenizer knows, so turns tokenise compactly)
DIRECT_REASON, SEARCH_REASON, COPY_REASON = "I know the answer.", "Let me look it up.", "The answer is"


@dataclass(frozen=True)
class Fact:
    """One (entity, attribute, value), whether it is known, and whether its question is held out."""

    entity: str
    attribute: str
    value: str
    known: bool
    heldout: bool
    asked: bool = True  # False: a filler entity's fact, taught but never asked


    @property
    def question(self) -> str:
        return f"What is the {self.attribute} of {self.entity}?"

    @property
    def query(self) -> str:
        """The text search a demonstration writes for this fact (the name after a space, as in the question,
        so that both tokenise alike)."""
        return f"{self.attribute} of {self.entity}"

    @property
    def doc_id(self) -> str:
        return f"{self.entity}-{self.attribute}"

    @property
    def category(self) -> str:
        if not self.asked:
            return FILLER
        return SEARCH_FREE if self.known else SEARCH_REQUIRED


def _new_names(rng: random.Random, names: list[str], count: int) -> list[str]:
    """`count` names not in `names` (appended to it too)."""
    new: list[str] = []
    while len(new) < count:
        name = NAME_SEPARATOR.join(rng.choice(SYLLABLES) for _ in range(NAME_SYLLABLES))
        if name not in names:
            names.append(name)
            new.append(name)
    return new


def toy_facts(seed: int = 0, entities: int = 48, fillers: int = 0, train_unknown: int = 0) -> list[Fact]:
    """Every fact of the task, entity by entity, then the filler entities' facts, then those of the unknown
    entities asked in training only; deterministic from `seed` (the task's entities do not depend on
    `fillers`, nor these on `train_unknown`). A value out of range raises ValueError naming the
    command-line option that sets it (`agentrl make-toy`, `agentrl bench learning`)."""
    if not 2 <= entities <= MAX_ENTITIES:
        raise ValueError(f"--entities must be in 2..{MAX_ENTITIES}, got {entities}")
    if not 0 <= fillers <= MAX_ENTITIES - entities:
        raise ValueError(f"--fillers must be in 0..{MAX_ENTITIES - entities}, got {fillers}")
    if not 0 <= train_unknown <= MAX_ENTITIES - entities - fillers:
        raise ValueError(f"--train-unknown must be in 0..{MAX_ENTITIES - entities - fillers}, got {train_unknown}")
    rng = random.Random(f"agentrl-toy-{seed}")
    names: list[str] = []
    _new_names(rng, names, entities)
    known = set(rng.sample(names, entities // 2))
    facts = []
    for i, name in enumerate(names):
        for k, (attribute, values) in enumerate(ATTRIBUTES.items()):
            facts.append(Fact(name, attribute, rng.choice(values), name in known,
                              heldout=k == i % len(ATTRIBUTES)))
    filler_rng = random.Random(f"agentrl-toy-fillers-{seed}")
    for name in _new_names(filler_rng, names, fillers):
        attribute = filler_rng.choice(list(ATTRIBUTES))  # one fact each: many names for the same cost
        facts.append(Fact(name, attribute, filler_rng.choice(ATTRIBUTES[attribute]), known=True,
                          heldout=False, asked=False))
    unknown_rng = random.Random(f"agentrl-toy-train-unknown-{seed}")
    for name in _new_names(unknown_rng, names, train_unknown):
        facts.extend(Fact(name, attribute, unknown_rng.choice(values), known=False, heldout=False)
                     for attribute, values in ATTRIBUTES.items())
    return facts


def page(fact: Fact) -> dict[str, str]:
    """The fact as a corpus page `{id, title, contents}`."""
    return {"id": fact.doc_id, "title": f"{fact.entity} {fact.attribute}",
            "contents": f"The {fact.attribute} of {fact.entity} is {fact.value}."}


def search_result(page: dict[str, str]) -> str:
    """What the local text search returns for a query whose top-1 hit is `page`, as
    `agentrl.envs.text_search.TextSearchTool.run` writes a hit."""
    return f"1. {page['title']} (local://{page['id']}): {page['contents']}"


def observation(page: dict[str, str], question: str) -> str:
    """A top-1 search result as the model reads it: in `<information>`, then the after-search prompt (the
    `mmsearch_r1` protocol's observation)."""
    return (f"{open_tag(INFORMATION)}{search_result(page)}{close_tag(INFORMATION)}\n"
            + MMSEARCH_R1_AFTER_SEARCH_PROMPT.format(question=question))


def tagged(tag: str, text: str) -> str:
    """`text` inside the action tag `tag`."""
    return f"{open_tag(tag)}{text}{close_tag(tag)}"


def demonstration(fact: Fact, search: bool) -> list[dict[str, str]]:
    """The turns of one warm-start trajectory: a direct answer, or a search and the answer copied from it."""
    answer = tagged(ANSWER, fact.value)
    if not search:
        return [{"role": MODEL, "text": tagged(REASON, DIRECT_REASON) + answer}]
    return [{"role": MODEL, "text": tagged(REASON, SEARCH_REASON) + tagged(TEXT_SEARCH, fact.query)},
            {"role": OBSERVATION_ROLE, "text": observation(page(fact), fact.question)},
            {"role": MODEL, "text": tagged(REASON, f"{COPY_REASON} {fact.value}.") + answer}]


def sft_records(facts: list[Fact], seed: int = 0, demos: int = DEMOS_PER_FACT,
                filler_demos: int = FILLER_DEMOS_PER_FACT, search_rate: float = SEARCH_RATE) -> list[dict[str, Any]]:
    """`demos` trajectories per known fact of the task and `filler_demos` per filler fact, each searching
    with probability `search_rate`, shuffled."""
    rng = random.Random(f"agentrl-toy-sft-{seed}")
    records = []
    for fact in (f for f in facts if f.known):
        for _ in range(demos if fact.asked else filler_demos):
            search = rng.random() < search_rate
            records.append({"question": fact.question, "turns": demonstration(fact, search),
                            "data_id": fact.doc_id, "category": fact.category,
                            "action": "search" if search else "direct"})
    rng.shuffle(records)
    return [{"id": f"sft-{i}", **r} for i, r in enumerate(records)]


def question_records(facts: list[Fact]) -> list[dict[str, Any]]:
    """The facts' questions as veRL records (the release's columns, text only, plus data_id and category)."""
    return [{"prompt": [{"content": f.question, "role": "user"}], "images": [],
             "reward_model": {"candidate_answers": json.dumps([f.value]), "ground_truth": f.value,
                              "style": "rule"},
             "data_source": f"{DATA_SOURCE}/{f.attribute}", "image_urls": None,
             "data_id": f.doc_id, "category": f.category} for f in facts]


def write_question_parquet(records: list[dict[str, Any]], path: Path) -> None:
    """Question records (veRL layout plus `data_id` and `category`) as a parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agentrl.data.example import example_schema

    schema = example_schema().append(pa.field("data_id", pa.string())).append(pa.field("category", pa.string()))
    pq.write_table(pa.Table.from_pylist(records, schema=schema), path)


def balanced(train: list[Fact]) -> list[Fact]:
    """The training questions with each known one repeated so that known and unknown ones are about equally
    many (at least once each)."""
    known = [f for f in train if f.known]
    repeat = max(1, round((len(train) - len(known)) / max(len(known), 1)))
    return [f for f in train for _ in range(repeat if f.known else 1)]


def write_toy(out: str | Path, seed: int = 0, entities: int = 48, demos: int = DEMOS_PER_FACT,
              fillers: int = FILLER_ENTITIES, train_unknown: int = 0,
              search_rate: float = SEARCH_RATE) -> dict[str, Path]:
    """Write the task's four files into `out` (created if missing); returns their paths by name."""
    if demos < 1:
        raise ValueError(f"--demos must be >= 1, got {demos}")
    if not 0.0 < search_rate < 1.0:  # both actions must be demonstrated, or RL has nothing to choose from
        raise ValueError(f"--search-rate must be in (0, 1), got {search_rate}")
    facts = toy_facts(seed, entities, fillers, train_unknown)
    asked = [f for f in facts if f.asked]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("train.parquet", "heldout.parquet", "corpus.jsonl", "sft.jsonl")}
    train = balanced([f for f in asked if not f.heldout])
    # shuffled here too: the data loader shuffles within a bounded buffer, and the repeats are adjacent
    random.Random(f"agentrl-toy-train-{seed}").shuffle(train)
    write_question_parquet(question_records(train), paths["train.parquet"])
    write_question_parquet(question_records([f for f in asked if f.heldout]), paths["heldout.parquet"])
    write_jsonl([page(f) for f in facts], paths["corpus.jsonl"])
    write_jsonl(sft_records(facts, seed, demos, search_rate=search_rate), paths["sft.jsonl"])
    return paths
