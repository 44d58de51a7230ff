"""Prompt data: the records a dataset yields, and the synthetic lookup task of the demo."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

COLOURS = ["amber", "azure", "coral", "crimson", "ivory", "jade", "lilac", "olive", "scarlet", "teal"]
SYLLABLES = ["ka", "lo", "mi", "nu", "po", "ri", "sa", "te", "vu", "zo"]


@dataclass
class DataRow:
    """One prompt as the orchestrator feeds it to an environment actor."""

    row_id: int
    question: str
    ground_truth: list[str]
    candidate_answers: list[str] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)  # encoded image bytes
    image_urls: list[str] = field(default_factory=list)
    data_source: str = "synthetic"
    data_id: str = ""
    category: str = ""


def lookup_table(seed: int = 0, size: int = 64) -> dict[str, str]:
    """The demo's facts: made-up names mapped to colours; the `lookup` tool serves this table."""
    rng = random.Random(seed)
    table: dict[str, str] = {}
    while len(table) < size:
        name = "".join(rng.choice(SYLLABLES) for _ in range(3))
        table[name] = rng.choice(COLOURS)
    return table


def synthetic_rows(num: int, seed: int = 0) -> list[DataRow]:
    """Questions over the lookup table; answerable by searching the name."""
    table = lookup_table(seed)
    names = sorted(table)
    rng = random.Random(seed + 1)
    rows = []
    for i in range(num):
        name = rng.choice(names)
        rows.append(DataRow(row_id=i, question=f"What colour is {name}?", ground_truth=[table[name]],
                            data_id=f"syn-{i}"))
    return rows


def synthetic_image_rows(num: int, seed: int = 0) -> list[DataRow]:
    """The lookup task with an image: "What colour is this tile?" over the tiles of the demo image index;
    image search finds the tile's page, whose title names the colour."""
    import json

    from agentrl.tiny_models import cache_root
    from envs.image_search import demo_image_index

    folder = demo_image_index(cache_root().parent)
    entries = [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(seed + 2)
    rows = []
    for i in range(num):
        e = rng.choice(entries)
        name, colour = e["title"].split(", a ")[0], e["title"].split(", a ")[1].split()[0]
        rows.append(DataRow(row_id=i, question="What colour is this tile?", ground_truth=[colour],
                            images=[(folder / e["image"]).read_bytes()], data_id=f"tile-{name}-{i}"))
    return rows


def synthetic_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on, so prompts and answers tokenise compactly."""
    from envs.protocol import INVALID_ACTION_OBSERVATION, PROTOCOLS

    table = lookup_table()
    texts = [p.system_prompt for p in PROTOCOLS.values()] + [INVALID_ACTION_OBSERVATION]
    texts += [f"What colour is {k}? {k}: {v}." for k, v in table.items()]
    texts += [" ".join(COLOURS), "The answer is", "I need to search for the name.",
              "Let me look it up.", "I know the answer."]
    return texts * 4
