"""Prompt data: the records a dataset yields, and the synthetic lookup task of the demo."""

from __future__ import annotations

import json
import random
from pathlib import Path

from agentrl.paths import cache_root
from agentrl.records import DataRow

COLOURS = ["amber", "azure", "coral", "crimson", "ivory", "jade", "lilac", "olive", "scarlet", "teal"]
SYLLABLES = ["ka", "lo", "mi", "nu", "po", "ri", "sa", "te", "vu", "zo"]


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


def demo_image_index() -> Path:
    """Generate the demo's local index once: one coloured tile per made-up name of the lookup table."""
    from PIL import Image

    folder = cache_root() / "demo-image-index-v1"
    if (folder / "index.jsonl").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    palette = {"amber": (255, 191, 0), "azure": (0, 127, 255), "coral": (255, 127, 80), "crimson": (220, 20, 60),
               "ivory": (255, 255, 240), "jade": (0, 168, 107), "lilac": (200, 162, 200), "olive": (128, 128, 0),
               "scarlet": (255, 36, 0), "teal": (0, 128, 128)}
    lines = []
    for i, (name, colour) in enumerate(sorted(lookup_table().items())[:16]):
        img = Image.new("RGB", (56, 56), palette[colour])
        img.paste((i * 15 % 256, 0, 0), (0, 0, 8 + i, 8))  # a mark, so tiles differ
        img.save(folder / f"{i:03d}.png")
        lines.append(json.dumps({"image": f"{i:03d}.png", "title": f"{name}, a {colour} tile"}))
    (folder / "index.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def synthetic_image_rows(num: int, seed: int = 0) -> list[DataRow]:
    """The lookup task with an image: "What colour is this tile?" over the tiles of the demo image index;
    image search finds the tile's page, whose title names the colour."""
    folder = demo_image_index()
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
    from agentrl.grammar import INVALID_ACTION_OBSERVATION, PROTOCOL_PROMPTS

    table = lookup_table()
    texts = list(PROTOCOL_PROMPTS.values()) + [INVALID_ACTION_OBSERVATION]
    texts += [f"What colour is {k}? {k}: {v}." for k, v in table.items()]
    texts += [" ".join(COLOURS), "The answer is", "I need to search for the name.",
              "Let me look it up.", "I know the answer."]
    return texts * 4
