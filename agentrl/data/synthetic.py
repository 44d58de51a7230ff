"""Prompt data: the records a dataset yields, and the synthetic lookup task of the demo."""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import NamedTuple

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


def demo_corpus() -> list[dict[str, str]]:
    """The text-search demo's corpus, as records of a corpus file (`{id, title, contents}`): the lookup facts
    written as passages, and one real-world passage."""
    docs = [{"id": f"fact-{i}", "title": name, "contents": f"{name} is a made-up name whose colour is {colour}."}
            for i, (name, colour) in enumerate(sorted(lookup_table().items()))]
    docs.append({"id": "paris", "title": "Eiffel Tower",
                 "contents": "The Eiffel Tower is a wrought-iron tower in Paris, France."})
    return docs


class DemoTile(NamedTuple):
    """One tile of the demo image index: a made-up name of the lookup table, its colour, its PNG file."""

    name: str
    colour: str
    image: Path


DEMO_TILES = 16  # the first names of the lookup table, in sorted order, get a tile
PALETTE = {"amber": (255, 191, 0), "azure": (0, 127, 255), "coral": (255, 127, 80), "crimson": (220, 20, 60),
           "ivory": (255, 255, 240), "jade": (0, 168, 107), "lilac": (200, 162, 200), "olive": (128, 128, 0),
           "scarlet": (255, 36, 0), "teal": (0, 128, 128)}


def _tile_facts() -> list[tuple[str, str]]:
    return sorted(lookup_table().items())[:DEMO_TILES]


def _write_index(folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    lines = []
    for i, (name, colour) in enumerate(_tile_facts()):
        img = Image.new("RGB", (56, 56), PALETTE[colour])
        img.paste((i * 15 % 256, 0, 0), (0, 0, 8 + i, 8))  # a mark, so tiles differ
        img.save(folder / f"{i:03d}.png")
        lines.append(json.dumps({"image": f"{i:03d}.png", "title": f"{name}, a {colour} tile"}))
    (folder / "index.jsonl").write_text("\n".join(lines) + "\n")


def demo_image_index() -> Path:
    """The demo's local image index (`index.jsonl` of `{image, title}` and one coloured tile per made-up
    name), generated once into the cache root. Written in a private folder, then renamed into place: a
    concurrent actor sees the whole index or none, and of two writers one wins and the other's is removed."""
    folder = cache_root() / "demo-image-index-v2"  # v2: only ever appears whole
    if folder.is_dir():
        return folder
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        _write_index(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():  # not because another writer got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def demo_tiles() -> list[DemoTile]:
    """The tiles of the demo image index, in index order."""
    folder = demo_image_index()
    return [DemoTile(name, colour, folder / f"{i:03d}.png") for i, (name, colour) in enumerate(_tile_facts())]


def synthetic_image_rows(num: int, seed: int = 0) -> list[DataRow]:
    """The lookup task with an image: "What colour is this tile?" over the tiles of the demo image index;
    image search finds the tile's page, whose title names the colour."""
    tiles = demo_tiles()
    rng = random.Random(seed + 2)
    rows = []
    for i in range(num):
        tile = rng.choice(tiles)
        rows.append(DataRow(row_id=i, question="What colour is this tile?", ground_truth=[tile.colour],
                            images=[tile.image.read_bytes()], data_id=f"tile-{tile.name}-{i}"))
    return rows


def synthetic_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on, so prompts and answers tokenise compactly."""
    from agentrl.grammar import INVALID_ACTION_OBSERVATION, MMSEARCH_R1_TEXT_PROMPT, PROTOCOL_PROMPTS

    table = lookup_table()
    texts = list(PROTOCOL_PROMPTS.values()) + [MMSEARCH_R1_TEXT_PROMPT, INVALID_ACTION_OBSERVATION]
    texts += [f"What colour is {k}? {k}: {v}." for k, v in table.items()]
    texts += [" ".join(COLOURS), "The answer is", "I need to search for the name.",
              "Let me look it up.", "I know the answer."]
    return texts * 4
