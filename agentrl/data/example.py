"""The project's own example dataset: a veRL-format parquet in the MMSearch-R1 release's layout (the same
columns and arrow types as its `mmsearch_r1_mini_data.pq`), with small generated images, so the README's
commands and the tests need nothing from outside the repository.

Every question is about a tile of the demo image index (`agentrl.data.synthetic.demo_image_index`), so the
local tools answer it: image search finds the tile's page, whose title names the tile and its colour, and
text search over the demo corpus gives a name's colour. Three kinds of question, as the release mixes
questions a model may know with ones it must search for:

- `colour`: "What colour is this tile?" (the image shows it: answerable without search)
- `name`: "What is the name of this tile?" (only image search tells)
- `reversed`: the name spelled backwards (image search, then a step the tiny models cannot take)

    agentrl make-example --out example.parquet    # or example_path(): built once into the cache root
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

from agentrl.data.synthetic import demo_tiles
from agentrl.paths import cache_root

QUESTIONS = {
    "colour": "What colour is this tile?",
    "name": "What is the name of this tile?",
    "reversed": "What is the name of this tile, spelled backwards?",
}
# the release's mini file has five rows: two of each kind a model may know or must search for, one hard
ROW_KINDS = ("colour", "colour", "name", "name", "reversed")
DATA_SOURCE = "agentrl_example"
VERSION = 1  # bump when the generated rows change, so cached files are rebuilt


def example_schema() -> Any:
    """The arrow schema of the release's mini parquet, column for column."""
    import pyarrow as pa

    return pa.schema([
        ("prompt", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.null())]))),
        ("reward_model", pa.struct([("candidate_answers", pa.string()), ("ground_truth", pa.string()),
                                    ("style", pa.string())])),
        ("data_source", pa.string()),
        ("image_urls", pa.null()),
    ])


def _tiles() -> list[tuple[str, str, bytes]]:
    """(name, colour, PNG bytes) of every tile of the demo image index, in index order."""
    return [(t.name, t.colour, t.image.read_bytes()) for t in demo_tiles()]


def _photo(tile_png: bytes, scale: int) -> bytes:
    """The tile as a question's photo: enlarged (pixels kept sharp, so image search still finds the tile
    first) and JPEG-encoded, as the release's images are."""
    from PIL import Image

    img = Image.open(io.BytesIO(tile_png)).convert("RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=95)
    return out.getvalue()


def _answer(kind: str, name: str, colour: str) -> str:
    return {"colour": colour, "name": name, "reversed": name[::-1]}[kind]


def example_records(seed: int = 0, rows: int = len(ROW_KINDS)) -> list[dict[str, Any]]:
    """The dataset's rows as veRL records (the parquet's columns), deterministic from `seed`."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    rng = random.Random(seed)
    tiles = _tiles()
    order = rng.sample(tiles, len(tiles))
    records = []
    for i in range(rows):
        kind = ROW_KINDS[i % len(ROW_KINDS)]
        name, colour, png = order[i % len(order)]
        gold = _answer(kind, name, colour)
        records.append({
            "prompt": [{"content": QUESTIONS[kind], "role": "user"}],
            "images": [{"bytes": _photo(png, rng.choice((2, 3))), "path": None}],
            "reward_model": {"candidate_answers": json.dumps([gold.capitalize()]), "ground_truth": gold,
                             "style": "rule"},
            "data_source": f"{DATA_SOURCE}/{kind}",
            "image_urls": None,
        })
    return records


def write_example(out: str | Path, seed: int = 0, rows: int = len(ROW_KINDS)) -> Path:
    """Write the example parquet to `out` (atomically: a concurrent reader sees all of it or nothing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pylist(example_records(seed, rows), schema=example_schema()), tmp)
    os.replace(tmp, out)
    return out


def example_path(seed: int = 0) -> Path:
    """The example parquet in the cache root, built on first use."""
    path = cache_root() / f"example-data-v{VERSION}" / f"mmsearch_r1_example_seed{seed}.parquet"
    return path if path.exists() else write_example(path, seed)
