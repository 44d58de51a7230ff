"""The real-knowledge task for a pretrained model: questions about real facts the base model already knows,
and about made-up entities whose facts exist only in the local corpus, so RL can teach it to search when it
does not know and to answer when it does.

    agentrl make-facts --out DIR [--seed S] [--model smollm2-135m] [--temperature T] [--made-up N]

writes

- `DIR/facts.json`: every real fact of `agentrl.data.facts_table` with the base model's measured rate of
  right answers (`SAMPLES` samples at the temperature RL samples at, the question alone in the model's chat
  template, right when a gold answer occurs in the reply as whole words) and whether that makes it *known*
  (rate >= `KNOWN_RATE`; `agentrl.evaluation.knowledge`); the made-up facts; the split and the settings.
- `DIR/train.parquet`, `DIR/heldout.parquet`: questions (the veRL layout, text only, plus `data_id` and
  `category`): `search_free` for a known real fact, `search_required` for a made-up one. Real facts the base
  model does not know are not asked (a search there would be right, but "known" would be a guess).
  Held-out questions are about entities that no training row mentions (a fact is one entity's): a third of
  the known facts of each relation and as many made-up ones.
- `DIR/corpus.jsonl`: a page per fact, real and made-up (`tools.text_search.corpus`, `backend=local`).
- `DIR/sft.jsonl`: a few demonstrations of the `mmsearch_r1` protocol (`agentrl.data.trajectories`'s
  schema): each known training fact answered directly, a third of them also searched, and as many searches
  (the answer copied from the observation) about made-up entities that no question asks; no demonstration
  is about a held-out entity.

Everything but the measured rates is a function of `seed`.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agentrl.data.facts_table import AUTHORS, CAPITAL_ALIASES, CAPITALS, SURNAME
from agentrl.data.toy import SEARCH_FREE, SEARCH_REQUIRED, observation, tagged, write_question_parquet
from agentrl.data.trajectories import MODEL, OBSERVATION_ROLE, write_jsonl
from agentrl.grammar import ANSWER, REASON, TEXT_SEARCH

SAMPLES = 8  # samples per real fact when measuring what the base model knows
KNOWN_RATE = 6 / 8  # a fact is known when at least this share of the samples is right
HELDOUT_SHARE = 1 / 3  # of the known real facts, per relation (and as many made-up ones)
MADE_UP = 48  # made-up entities per relation
# one known training fact in this many is also demonstrated searching: with one search per known fact (half the
# demonstrations on known facts) the warm start searched 0.90 of known held-out facts and RL never separated
# the categories (docs/experiments.md#facts-warm-start)
SEARCH_EVERY_KNOWN = 3
# made-up entities per relation that only demonstrations mention: searched in the warm start, never asked
# (demonstrated made-up entities that RL then asked were answered from memory, and RL learned to stop searching)
DEMO_MADE_UP = 32
DATA_SOURCE = "agentrl_facts"
# A direct answer's reason states the fact as the model itself says it ("The capital of Japan is Tokyo."): with a
# fixed phrase instead ("I know this.") the warm start answered known held-out facts right only ~20% of the
# time, against >= 75% for the base model's free-form replies (docs/experiments.md#facts-warm-start)
SEARCH_REASON, COPY_REASON = "Let me look it up.", "The page says"

_COUNTRY_PARTS = (["val", "dor", "mir", "tan", "ves", "kor", "lin", "bra", "zel", "ost", "quen", "rin", "mel",
                   "thar", "vey", "nor", "gal", "sor", "bel", "kav"],
                  ["ia", "land", "stan", "ora", "esh", "avia", "onia", "ar"])
_CITY_PARTS = (["ash", "brin", "cal", "dun", "el", "fen", "gor", "hal", "isk", "jun", "kel", "lor", "mar", "nev",
                "pel", "rav", "sil", "tor", "ul", "wen"],
               ["port", "grad", "ton", "burg", "ville", "haven", "mouth", "ford", "ria", "dale"])
_TITLE_WORDS = (["Silent", "Crimson", "Hollow", "Glass", "Winter", "Broken", "Golden", "Distant", "Quiet", "Iron",
                 "Lost", "Pale"],
                ["Orchard", "Lantern", "River", "Harbour", "Garden", "Tower", "Mirror", "Valley", "Bridge",
                 "Letters", "Archive", "Meadow"])
_SURNAME_PARTS = (["hal", "vor", "lind", "bren", "mor", "kast", "sel", "dra", "fen", "ost", "wyl", "ter"],
                  ["er", "son", "ova", "ini", "ley", "berg", "ström", "ard"])
# made-up authors' surnames are drawn without repeats (the demonstrations' made-up entities included)
MAX_MADE_UP = len(_SURNAME_PARTS[0]) * len(_SURNAME_PARTS[1]) - DEMO_MADE_UP
_FIRST_NAMES = ["Anna", "Tomas", "Elena", "Marcus", "Ida", "Victor", "Clara", "Oskar", "Nadia", "Felix", "Lena",
                "Hugo", "Mira", "Jonas", "Vera", "Emil"]


@dataclass(frozen=True)
class Fact:
    """One fact: `relation` ("capital" or "author") of `subject` is `answer` (or one of `aliases`)."""

    relation: str
    subject: str
    answer: str
    aliases: tuple[str, ...] = ()
    made_up: bool = False
    heldout: bool = False
    known_rate: float | None = None  # the base model's measured rate (real facts)

    @property
    def question(self) -> str:
        return f"What is the capital of {self.subject}?" if self.relation == "capital" else f"Who wrote {self.subject}?"

    @property
    def query(self) -> str:
        """The text search a demonstration writes for this fact."""
        return f"{self.relation} of {self.subject}"

    @property
    def statement(self) -> str:
        """The fact in a sentence, as the model would say it."""
        if self.relation == "capital":
            return f"The capital of {self.subject} is {self.answer}."
        return f"{self.subject} was written by {self.answer}."

    @property
    def golds(self) -> list[str]:
        return [self.answer, *self.aliases]

    @property
    def doc_id(self) -> str:
        return f"{self.relation}-{self.subject}".replace(" ", "_").lower()

    @property
    def known(self) -> bool:
        return self.known_rate is not None and self.known_rate >= KNOWN_RATE

    @property
    def category(self) -> str:
        return SEARCH_REQUIRED if self.made_up else SEARCH_FREE


def real_facts() -> list[Fact]:
    """The table's facts, capitals then authors (an author is also right by surname)."""
    facts = [Fact("capital", c, v, tuple(CAPITAL_ALIASES.get(v, ()))) for c, v in CAPITALS.items()]
    for book, author in AUTHORS.items():
        surname = SURNAME.get(author, author.split()[-1])
        facts.append(Fact("author", book, author, (surname,) if surname != author else ()))
    return facts


def _made_up_name(rng: random.Random, parts: tuple[list[str], list[str]], taken: set[str], words: int = 1) -> str:
    while True:
        name = "".join(rng.choice(parts[0]) for _ in range(words)) + rng.choice(parts[1])
        name = name.capitalize()
        if name not in taken:
            taken.add(name)
            return name


def made_up_facts(seed: int, count: int = MADE_UP) -> list[Fact]:
    """`count` made-up countries with their capitals and `count` made-up books with their authors; names
    that are no real country, city, book or author of the table."""
    rng = random.Random(f"agentrl-facts-made-up-{seed}")
    taken = set(CAPITALS) | set(CAPITALS.values()) | set(AUTHORS) | set(AUTHORS.values())
    facts = []
    for _ in range(count):
        country = _made_up_name(rng, _COUNTRY_PARTS, taken, words=2)
        facts.append(Fact("capital", country, _made_up_name(rng, _CITY_PARTS, taken), made_up=True))
    for _ in range(count):
        while (title := f"The {rng.choice(_TITLE_WORDS[0])} {rng.choice(_TITLE_WORDS[1])}") in taken:
            pass
        taken.add(title)
        surname = _made_up_name(rng, _SURNAME_PARTS, taken)
        author = f"{rng.choice(_FIRST_NAMES)} {surname}"
        facts.append(Fact("author", title, author, (surname,), made_up=True))
    return facts


def split(facts: list[Fact], seed: int) -> list[Fact]:
    """The asked facts with their split: `HELDOUT_SHARE` of the known real facts of each relation held out (at
    least one when there are two or more), and as many made-up facts of that relation, so the held-out
    categories are the same size (`search_free` and `search_required` weigh alike in an overall figure)."""
    rng = random.Random(f"agentrl-facts-split-{seed}")
    out = []
    for relation in ("capital", "author"):
        held = 0
        for made_up in (False, True):
            # one unit per entity: an author's books together, so no held-out answer is a training answer
            units: dict[str, list[Fact]] = {}
            for f in facts:
                if f.made_up == made_up and f.relation == relation and (made_up or f.known):
                    units.setdefault(f.answer if relation == "author" else f.subject, []).append(f)
            group = list(units.values())
            rng.shuffle(group)
            if not made_up:
                held = max(1, round(len(group) * HELDOUT_SHARE)) if len(group) > 1 else 0
            out += [replace(f, heldout=i < min(held, len(group) - 1)) for i, unit in enumerate(group) for f in unit]
    return out


def page(fact: Fact) -> dict[str, str]:
    """The fact as a corpus page `{id, title, contents}`."""
    contents = (f"The capital of {fact.subject} is {fact.answer}." if fact.relation == "capital"
                else f"{fact.subject} is a book written by {fact.answer}.")
    return {"id": fact.doc_id, "title": f"{fact.subject} {fact.relation}", "contents": contents}


def demonstration(fact: Fact, search: bool) -> list[dict[str, str]]:
    """The turns of one warm-start trajectory: a direct answer, or a search and the answer copied from it."""
    answer = tagged(ANSWER, fact.answer)
    if not search:
        return [{"role": MODEL, "text": tagged(REASON, fact.statement) + answer}]
    return [{"role": MODEL, "text": tagged(REASON, SEARCH_REASON) + tagged(TEXT_SEARCH, fact.query)},
            {"role": OBSERVATION_ROLE, "text": observation(page(fact), fact.question)},
            {"role": MODEL, "text": tagged(REASON, f"{COPY_REASON} {fact.answer}.") + answer}]


def sft_records(facts: list[Fact], demo_made_up: list[Fact], seed: int) -> list[dict[str, Any]]:
    """The warm start's demonstrations, shuffled: every known training fact answered directly (stating the
    fact), one in `SEARCH_EVERY_KNOWN` of them searched as well, and per relation as many searches about
    `demo_made_up` entities (never asked: RL cannot answer a question from a demonstration's memory) as there
    are known training facts. The warm start leans to answering what it knows and searching names it has never
    seen, and keeps both actions on known facts for RL to weigh (docs/experiments.md#facts-warm-start)."""
    known = [f for f in facts if f.known and not f.heldout]
    pairs = [(f, False) for f in known] + [(f, True) for f in known[::SEARCH_EVERY_KNOWN]]
    for relation in ("capital", "author"):
        count = sum(f.relation == relation for f in known)
        pairs += [(f, True) for f in demo_made_up if f.relation == relation][:count]
    records = [{"question": f.question, "turns": demonstration(f, search), "data_id": f.doc_id,
                "category": f.category, "action": "search" if search else "direct"} for f, search in pairs]
    random.Random(f"agentrl-facts-sft-{seed}").shuffle(records)
    return [{"id": f"sft-{i}", **r} for i, r in enumerate(records)]


def question_records(facts: list[Fact]) -> list[dict[str, Any]]:
    """The facts' questions as veRL records (text only, plus data_id and category)."""
    return [{"prompt": [{"content": f.question, "role": "user"}], "images": [],
             "reward_model": {"candidate_answers": json.dumps(list(f.aliases)), "ground_truth": f.answer,
                              "style": "rule"},
             "data_source": f"{DATA_SOURCE}/{f.relation}", "image_urls": None,
             "data_id": f.doc_id, "category": f.category} for f in facts]


def check_settings(temperature: float, made_up: int) -> None:
    """ValueError naming the option when a setting is out of range (before anything is measured)."""
    if not 0.0 < temperature <= 2.0:
        raise ValueError(f"--temperature must be in (0, 2], got {temperature}")
    if not 4 <= made_up <= MAX_MADE_UP:
        raise ValueError(f"--made-up must be in 4..{MAX_MADE_UP}, got {made_up}")


def write_facts(out: str | Path, model_path: str, measured: list[Fact], seed: int = 0, temperature: float = 0.7,
                made_up: int = MADE_UP) -> dict[str, Path]:
    """Write the task's five files into `out`, from the real facts with their measured rates
    (`agentrl.evaluation.knowledge.measure_known`)."""
    check_settings(temperature, made_up)
    real = measured
    drawn = made_up_facts(seed, made_up + DEMO_MADE_UP)  # per relation: asked first, then demonstrations only
    capitals, authors = drawn[:made_up + DEMO_MADE_UP], drawn[made_up + DEMO_MADE_UP:]
    demo_made_up = capitals[made_up:] + authors[made_up:]
    asked = split([*real, *capitals[:made_up], *authors[:made_up]], seed)
    train = [f for f in asked if not f.heldout]
    known, made = [f for f in train if not f.made_up], [f for f in train if f.made_up]
    # the fewer kind repeated: about as many known questions as made-up ones
    repeat_known = max(1, round(len(made) / max(len(known), 1)))
    repeat_made = max(1, round(len(known) / max(len(made), 1)))
    rng = random.Random(f"agentrl-facts-train-{seed}")
    train_rows = interleaved([f for f in known for _ in range(repeat_known)],
                             [f for f in made for _ in range(repeat_made)], rng)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {n: out / n for n in ("train.parquet", "heldout.parquet", "corpus.jsonl", "sft.jsonl", "facts.json")}
    write_question_parquet(question_records(train_rows), paths["train.parquet"])
    write_question_parquet(question_records([f for f in asked if f.heldout]), paths["heldout.parquet"])
    write_jsonl([page(f) for f in [*real, *(f for f in asked if f.made_up), *demo_made_up]], paths["corpus.jsonl"])
    write_jsonl(sft_records(asked, demo_made_up, seed), paths["sft.jsonl"])
    split_by_id = {f.doc_id: f.heldout for f in asked}
    summary = {"model": model_path, "seed": seed, "temperature": temperature, "samples": SAMPLES,
               "known_rate": KNOWN_RATE, "counts": _counts(asked),
               "real": [{**asdict(f), "known": f.known, "asked": f.doc_id in split_by_id,
                         "heldout": split_by_id.get(f.doc_id, False)} for f in real],
               "made_up": [asdict(f) for f in asked if f.made_up],
               "demonstrations_only": [asdict(f) for f in demo_made_up]}
    paths["facts.json"].write_text(json.dumps(summary, indent=1))
    return paths


def interleaved(known: list[Fact], made_up: list[Fact], rng: random.Random) -> list[Fact]:
    """Each kind shuffled, then taken in turn in proportion to its count, so that every stretch of rows (a
    training batch, read in file order: configs/learn_smollm2.yaml) holds both categories in about the file's
    ratio. (A seeded shuffle of the whole file once put 26 known facts in the first 32 groups: the early
    steps hardly saw a made-up entity.)"""
    rng.shuffle(known)
    rng.shuffle(made_up)
    # each row at its place along its own kind's run, the two runs merged by place
    placed = [((i + 0.5) / len(kind), order, f) for order, kind in enumerate((known, made_up))
              for i, f in enumerate(kind)]
    return [f for _, _, f in sorted(placed, key=lambda p: p[:2])]


def _counts(asked: list[Fact]) -> dict[str, dict[str, int]]:
    return {part: {c: sum(f.category == c and f.heldout == (part == "heldout") for f in asked)
                   for c in (SEARCH_FREE, SEARCH_REQUIRED)} for part in ("train", "heldout")}


def read_measured(path: str | Path) -> list[Fact]:
    """The real facts with their rates from an earlier `facts.json` (to rewrite a task without measuring)."""
    real = json.loads(Path(path).read_text())["real"]
    return [Fact(r["relation"], r["subject"], r["answer"], tuple(r["aliases"]), known_rate=r["known_rate"])
            for r in real]
