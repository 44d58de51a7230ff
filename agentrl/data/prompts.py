"""Prompt datasets: veRL-format parquet (as the MMSearch-R1 release and FVQA ship it) and JSONL with
the same fields, streamed (files larger than memory), validated row by row, shuffled with a seed.

Fields: `prompt` (chat messages; the last user message is the question), `images` (list of
`{bytes, path}`), `reward_model` (`ground_truth`, `candidate_answers` as a JSON string, `style`),
`data_source`, `image_urls`, optional `extra_info`, `data_id`, `category`.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agentrl.records import DataRow


class DataError(ValueError):
    """A bad row: names the file, the row index and the field (`field`, where one is at fault)."""

    def __init__(self, message: str, field_name: str = "") -> None:
        super().__init__(message)
        self.field = field_name


@dataclass
class DataCursor:
    """Where the stream is: rows of `epoch` already handed out. Saved with checkpoints."""

    epoch: int = 0
    index: int = 0


def _image_bytes(item: Any, base_dir: str) -> bytes:
    from PIL import Image

    if isinstance(item, dict):
        data = item.get("bytes")
        if not data and item.get("path"):
            path = item["path"] if os.path.isabs(item["path"]) else os.path.join(base_dir, item["path"])
            with open(path, "rb") as f:
                data = f.read()
    elif isinstance(item, (bytes, bytearray)):
        data = bytes(item)
    elif isinstance(item, str):
        with open(item if os.path.isabs(item) else os.path.join(base_dir, item), "rb") as f:
            data = f.read()
    else:
        data = None
    if not data:
        raise ValueError("no bytes and no readable path")
    Image.open(io.BytesIO(data)).verify()  # raises on corrupt bytes
    return bytes(data)


def parse_row(raw: dict[str, Any], index: int, file: str) -> DataRow:
    """One veRL-format record -> DataRow, or DataError naming the row and the field."""

    def bad(fieldname: str, why: str) -> DataError:
        return DataError(f"{file} row {index}: field '{fieldname}': {why}", fieldname)

    prompt = raw.get("prompt")
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise bad("prompt", "missing or empty")
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user" and m.get("content")]
    if not users:
        raise bad("prompt", "no user message")
    question = str(users[-1]["content"]).replace("<image>", "").strip()
    rm = raw.get("reward_model")
    if not isinstance(rm, dict):
        raise bad("reward_model", "missing")
    gt = rm.get("ground_truth")
    golds = [str(g) for g in gt] if isinstance(gt, (list, tuple)) else ([str(gt)] if gt is not None else [])
    golds = [g for g in golds if g.strip()]
    if not golds:
        raise bad("reward_model.ground_truth", "empty")
    cands = rm.get("candidate_answers") or []
    if isinstance(cands, str):
        try:
            cands = json.loads(cands) if cands.strip() else []
        except json.JSONDecodeError as e:
            raise bad("reward_model.candidate_answers", f"not JSON ({e.msg})") from None
    images = []
    for k, item in enumerate(raw.get("images") or []):
        try:
            images.append(_image_bytes(item, os.path.dirname(file)))
        except Exception as e:
            raise bad(f"images[{k}]", f"unreadable image ({type(e).__name__}: {e})") from None
    urls = raw.get("image_urls") or []
    extra = raw.get("extra_info") or {}
    return DataRow(row_id=index, question=question, ground_truth=golds, candidate_answers=[str(c) for c in cands],
                   images=images, image_urls=[urls] if isinstance(urls, str) else list(urls),
                   data_source=str(raw.get("data_source") or ""),
                   data_id=str(raw.get("data_id") or (extra.get("data_id") if isinstance(extra, dict) else "")
                               or f"row-{index}"),
                   category=str(raw.get("category") or ""))


def _raw_records(path: str, batch_rows: int) -> Iterator[dict[str, Any]]:
    if path.endswith((".jsonl", ".json")):
        with open(path) as f:
            for n, line in enumerate(f):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path} row {n}: not valid JSON ({e.msg})") from None
        return
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):  # streamed, never the whole file
        yield from batch.to_pylist()


@dataclass
class PromptStream:
    """An endless, seeded, validated stream of rows over epochs of one file."""

    path: str
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 1024
    on_bad_row: str = "fail"  # or "skip"
    batch_rows: int = 256
    cursor: DataCursor = field(default_factory=DataCursor)
    skipped: Counter = field(default_factory=Counter)  # field -> rows skipped

    def _epoch(self, epoch: int) -> Iterator[DataRow]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        buffer: list[DataRow] = []
        for index, raw in enumerate(_raw_records(self.path, self.batch_rows)):
            try:
                row = parse_row(raw, index, self.path)
            except DataError as e:
                if self.on_bad_row == "fail":
                    raise
                if epoch == 0:  # count each bad row once, not once per epoch
                    self.skipped[e.field] += 1
                continue
            if not self.shuffle:
                yield row
                continue
            buffer.append(row)  # buffered shuffle: bounded memory, reproducible per (seed, epoch)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        while buffer:
            yield buffer.pop(rng.randrange(len(buffer)))

    def once(self) -> Iterator[DataRow]:
        """One pass over the file (evaluation, labelling): no epochs, no cursor."""
        return self._epoch(0)

    def __iter__(self) -> Iterator[DataRow]:
        start = self.cursor.index
        while True:
            count = 0
            for i, row in enumerate(self._epoch(self.cursor.epoch)):
                if i < start:
                    continue  # resuming: skip what this epoch already handed out
                self.cursor.index = i + 1
                count += 1
                yield row
            if count == 0 and start == 0:
                raise DataError(f"{self.path}: no usable rows ({sum(self.skipped.values())} skipped)")
            self.cursor, start = DataCursor(self.cursor.epoch + 1, 0), 0
