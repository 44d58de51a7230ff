"""Prompt datasets: veRL-format parquet (as the MMSearch-R1 release and FVQA ship it) and JSONL with
the same fields, streamed (files larger than memory), validated row by row, shuffled with a seed.

Fields: `prompt` (chat messages; the last user message is the question; a message's `content` is a string
or, in the OpenAI form, a list of `text` and `image_url`/`image` parts), `images` (list of `{bytes, path}`,
bytes, or paths relative to the file), `reward_model` (`ground_truth`, `candidate_answers` as a list or a
JSON string of one, `style`), `data_source`, `image_urls`, optional `extra_info`, `data_id`, `category`.

Rows are numbered from 0 in file order, the same way in every message and in `DataRow.row_id`: a parquet
file's row index; in JSONL, the index among the non-blank lines (a blank line is not a row). A bad row is
a `DataError`, one line naming the file, the row and the field; a file that cannot be read at all (missing,
corrupt, not parquet or JSONL) is a `DataError` naming the path.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agentrl.errors import UserError
from agentrl.images import check_image
from agentrl.records import DataRow
from agentrl.user_files import check_user_file, read_user_file

JSONL_SUFFIXES, PARQUET_SUFFIXES = (".jsonl", ".json"), (".parquet", ".pq")
MAX_IMAGE_FILE_BYTES = 64 << 20  # an image named by path; the pixel cap is check_image's
MAX_ROW_BYTES = 32 << 20  # one data row (a JSONL line, a parquet row uncompressed): images included
MAX_BATCH_BYTES = 64 << 20  # parquet rows read at once
ROW = "row"  # the `field` of a row that is not a record at all (a JSONL line that is not a JSON object)
_SCALARS = (str, int, float)  # what an answer may be written as (a number reads as its text)


class DataError(UserError):
    """A bad row: names the file, the row index and the field (`field`, where one is at fault)."""

    def __init__(self, message: str, field_name: str = "") -> None:
        super().__init__(message)
        self.field = field_name


@dataclass
class DataCursor:
    """Where the stream is: rows of `epoch` already handed out. Saved with checkpoints."""

    epoch: int = 0
    index: int = 0


Fail = Callable[[str, str], DataError]  # (field, why) -> the row's DataError


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# ---- images (checked by agentrl.images.check_image: one pixel cap, one decode, for every image) ------
def _read_path(path: Any, base_dir: str) -> bytes:
    if not isinstance(path, str) or not path:
        raise ValueError(f"'path' must be a file path, got {_type_name(path)}")
    full = path if os.path.isabs(path) else os.path.join(base_dir, path)
    try:
        return read_user_file(full, MAX_IMAGE_FILE_BYTES)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image file '{full}' ({e})") from None


def _image_bytes(item: Any, base_dir: str) -> bytes:
    """One `images` entry ({bytes, path}, bytes, or a path) -> checked image bytes; ValueError if bad."""
    if isinstance(item, dict):
        data = item.get("bytes")
        if data is not None and not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"'bytes' must be bytes, got {_type_name(data)}")
        if not data:
            if not item.get("path"):
                raise ValueError("no bytes and no path")
            data = _read_path(item["path"], base_dir)
    elif isinstance(item, (bytes, bytearray)):
        data = bytes(item)
    elif isinstance(item, str):
        data = _read_path(item, base_dir)
    else:
        raise ValueError(f"expected {{bytes, path}}, bytes or a path, got {_type_name(item)}")
    if not data:
        raise ValueError("empty image")
    return check_image(data)


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ValueError("a data: URL must be base64-encoded")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a data: URL with invalid base64") from None


# ---- chat messages --------------------------------------------------------------------------------
@dataclass
class _Content:
    """What a prompt's messages hold: each message's text, and the images given inline as parts."""

    texts: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    image_urls: list[str] = field(default_factory=list)


def _image_part(part: dict[str, Any], into: _Content, base_dir: str) -> None:
    """An OpenAI `image_url` part, or an `image` part (a placeholder for the `images` column when it
    carries nothing, else an image like an `images` entry)."""
    value = part.get("image_url") if part.get("type") == "image_url" else part.get("image")
    if isinstance(value, dict) and "url" in value:
        value = value["url"]
    if value is None and part.get("type") == "image":
        return  # a placeholder: the image is in the `images` column
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        into.image_urls.append(value)
    elif isinstance(value, str) and value.startswith("data:"):
        into.images.append(check_image(_data_url_bytes(value)))
    elif part.get("type") == "image" and value is not None:
        into.images.append(_image_bytes(value, base_dir))
    else:
        raise ValueError(f"'image_url' must be an http(s) or data: URL, got {_type_name(value)}")


def _message_text(content: Any, into: _Content, where: str, fail: Fail, base_dir: str) -> str:
    """A message's text: its `content` string, or its text parts joined, its image parts into `into`."""
    if isinstance(content, str):
        return content
    if not isinstance(content, (list, tuple)):
        raise fail(f"{where}.content", f"expected a string or a list of parts, got {_type_name(content)}")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise fail(f"{where}.content[{j}].text", f"expected a string, got {_type_name(part.get('text'))}")
            texts.append(part["text"])
        elif kind in ("image_url", "image"):
            try:
                _image_part(part, into, base_dir)
            except ValueError as e:
                raise fail(f"{where}.content[{j}]", str(e)) from None
        else:
            raise fail(f"{where}.content[{j}]", "expected a part {type: text|image_url|image, ...}, got "
                       + (f"type {kind!r}" if isinstance(part, dict) else _type_name(part)))
    return "\n".join(texts)


def _question(prompt: Any, fail: Fail, base_dir: str) -> _Content:
    """The prompt's messages checked; `texts` holds the last user message's text (the question)."""
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise fail("prompt", "missing or empty" if not prompt else f"expected a list of messages, got "
                   f"{_type_name(prompt)}")
    content, question = _Content(), None
    for k, msg in enumerate(prompt):
        if not isinstance(msg, dict):
            raise fail(f"prompt[{k}]", f"expected a message {{role, content}}, got {_type_name(msg)}")
        if not isinstance(msg.get("role"), str):
            raise fail(f"prompt[{k}].role", f"expected a string, got {_type_name(msg.get('role'))}")
        text = _message_text(msg.get("content"), content, f"prompt[{k}]", fail, base_dir)
        if msg["role"] == "user" and msg.get("content"):
            question = text
    if question is None:
        raise fail("prompt", "no user message")
    content.texts = [question.replace("<image>", "").strip()]
    return content


# ---- the other fields -----------------------------------------------------------------------------
def _answers(value: Any, name: str, fail: Fail) -> list[str]:
    """A string or number, or a list of them -> strings (None: none)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    for k, v in enumerate(items):
        if not isinstance(v, _SCALARS):
            where = f"{name}[{k}]" if isinstance(value, (list, tuple)) else name
            raise fail(where, f"expected a string or a list of strings, got {_type_name(v)}")
    return [str(v) for v in items]


def _candidates(value: Any, fail: Fail) -> list[str]:
    name = "reward_model.candidate_answers"
    if isinstance(value, str):  # the release stores the list as a JSON string
        try:
            value = json.loads(value) if value.strip() else []
        except (json.JSONDecodeError, RecursionError) as e:
            raise fail(name, f"not JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
        except ValueError:  # a number past Python's integer digit limit: no JSONDecodeError
            raise fail(name, "not JSON (a number with too many digits)") from None
    if value is not None and not isinstance(value, (list, tuple)):
        raise fail(name, f"expected a list (or a JSON string of one), got {_type_name(value)}")
    return _answers(value, name, fail)


def _optional_text(raw: dict[str, Any], key: str, fail: Fail, numbers: bool = False) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, (str, int) if numbers else str) or isinstance(value, bool):
        raise fail(key, f"expected a string, got {_type_name(value)}")
    return str(value)


def _image_urls(value: Any, fail: Fail) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise fail("image_urls", f"expected a list of URLs, got {_type_name(value)}")
    for k, url in enumerate(value):
        if not isinstance(url, str):
            raise fail(f"image_urls[{k}]", f"expected a URL string, got {_type_name(url)}")
    return list(value)


def _images(value: Any, fail: Fail, base_dir: str) -> list[bytes]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise fail("images", f"expected a list of images, got {_type_name(value)}")
    images = []
    for k, item in enumerate(value):
        try:
            images.append(_image_bytes(item, base_dir))
        except ValueError as e:
            raise fail(f"images[{k}]", str(e)) from None
    return images


def _reward_model(rm: Any, fail: Fail) -> tuple[list[str], list[str]]:
    if not isinstance(rm, dict):
        raise fail("reward_model", "missing" if rm is None else f"expected an object, got {_type_name(rm)}")
    golds = [g for g in _answers(rm.get("ground_truth"), "reward_model.ground_truth", fail) if g.strip()]
    if not golds:
        raise fail("reward_model.ground_truth", "empty")
    _optional_text(rm, "style", lambda name, why: fail(f"reward_model.{name}", why))
    return golds, _candidates(rm.get("candidate_answers"), fail)


def parse_row(raw: Any, index: int, file: str) -> DataRow:
    """One veRL-format record -> DataRow, or DataError naming the file, the row and the field."""

    def fail(fieldname: str, why: str) -> DataError:
        return DataError(f"{file} row {index}: field '{fieldname}': {why}", fieldname)

    if not isinstance(raw, dict):
        raise DataError(f"{file} row {index}: expected an object of fields, got {_type_name(raw)}", ROW)
    base_dir = os.path.dirname(file)
    content = _question(raw.get("prompt"), fail, base_dir)
    golds, candidates = _reward_model(raw.get("reward_model"), fail)
    extra = raw.get("extra_info")
    if extra is not None and not isinstance(extra, dict):
        raise fail("extra_info", f"expected an object, got {_type_name(extra)}")
    data_id = (_optional_text(raw, "data_id", fail, numbers=True)
               or _optional_text(extra or {}, "data_id", lambda f, why: fail(f"extra_info.{f}", why), numbers=True))
    return DataRow(row_id=index, question=content.texts[0], ground_truth=golds, candidate_answers=candidates,
                   images=_images(raw.get("images"), fail, base_dir) + content.images,
                   image_urls=_image_urls(raw.get("image_urls"), fail) + content.image_urls,
                   data_source=_optional_text(raw, "data_source", fail), data_id=data_id or f"row-{index}",
                   category=_optional_text(raw, "category", fail))


# ---- files ----------------------------------------------------------------------------------------
def _json_record(line: bytes, path: str, index: int) -> dict[str, Any] | DataError:
    def bad(why: str) -> DataError:
        return DataError(f"{path} row {index}: {why}", ROW)

    try:
        value = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return bad("not UTF-8 text")
    except json.JSONDecodeError as e:
        return bad(f"not valid JSON ({e.msg})")
    except RecursionError:
        return bad("not valid JSON (nested too deeply)")
    except ValueError:  # a number past Python's integer digit limit: no JSONDecodeError
        return bad("not valid JSON (a number with too many digits)")
    return value if isinstance(value, dict) else bad(f"not a JSON object (a JSON {_type_name(value)})")


def _lines(f: Any) -> Iterator[bytes | None]:
    """A binary file's lines, each read up to MAX_ROW_BYTES; None for a line longer than that (skipped to
    its end unread, so a file with no newline never fills memory)."""
    while line := f.readline(MAX_ROW_BYTES + 1):
        if len(line) <= MAX_ROW_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
            pass
        yield None


def jsonl_records(path: str) -> Iterator[dict[str, Any] | DataError]:
    """One item per row (non-blank line) of a JSONL file: the JSON object, or the DataError of a line
    that is not one (not UTF-8, not JSON, not an object, over MAX_ROW_BYTES)."""
    with open(path, "rb") as f:
        index = 0
        for line in _lines(f):
            if line is None:
                yield DataError(f"{path} row {index}: longer than {MAX_ROW_BYTES} bytes", "row")
                index += 1
            elif line.strip():
                yield _json_record(line, path, index)
                index += 1


def _parquet_batch_rows(pf: Any, batch_rows: int) -> int:
    """Rows per batch, by bytes rather than by count: one row at a time where a row group is larger than
    MAX_BATCH_BYTES uncompressed (a dictionary-encoded column can make one row as large as its row group:
    10 rows of a 50 MB string in a 4.5 KB file once took 1.6 GB to check)."""
    md = pf.metadata
    widest = max((md.row_group(i).total_byte_size for i in range(md.num_row_groups)), default=0)
    return 1 if widest > MAX_BATCH_BYTES else batch_rows


def _widest_row_bytes(batch: Any) -> float:
    """About the bytes of the batch's largest row once in Python: dictionary columns by the length of
    each row's value, the others by their share of the batch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not batch.num_rows:
        return 0.0
    per_row = [0.0] * batch.num_rows
    for col in batch.columns:
        if pa.types.is_dictionary(col.type):
            sizes = pc.take(pc.binary_length(col.dictionary), col.indices).fill_null(0).to_pylist()
        else:
            sizes = [col.nbytes / batch.num_rows] * batch.num_rows
        per_row = [a + b for a, b in zip(per_row, sizes, strict=True)]
    return max(per_row)


def _parquet_records(path: str, batch_rows: int) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # text columns stay dictionary-encoded as stored: a value repeated in every row is held once
        schema = pq.read_schema(path)
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)
                or pa.types.is_large_string(f.type) or pa.types.is_large_binary(f.type)]
        pf = pq.ParquetFile(path, read_dictionary=text)
        for batch in pf.iter_batches(batch_size=_parquet_batch_rows(pf, batch_rows)):  # never the whole file
            widest = _widest_row_bytes(batch)
            if widest > MAX_ROW_BYTES:  # before Python makes a copy of it per row
                raise DataError(f"{path}: a row of {widest / 2**20:.0f} MB, over the {MAX_ROW_BYTES >> 20} MB "
                                "a row may have", "file")
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as e:  # not parquet, truncated, or a corrupt page deep in the file
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})", "file") from None
    except DataError:
        raise
    except (ValueError, OverflowError) as e:  # a value Python cannot hold (a timestamp past year 9999...)
        raise DataError(f"{path}: a value that cannot be read ({type(e).__name__}: {e})", "file") from None


def data_format(path: str) -> str:
    """'jsonl' or 'parquet' for a data file (by suffix, else parquet's magic bytes); DataError if neither
    or not a file."""
    try:
        check_user_file(path)  # a device, FIFO or /proc file would hang or fail half-read
    except ValueError:
        raise DataError(f"{path}: not a file", "file") from None
    suffix = os.path.splitext(path)[1].lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    with open(path, "rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    raise DataError(f"{path}: unsupported data file (expected .parquet or .jsonl)", "file")


def records(path: str, batch_rows: int = 256) -> Iterator[dict[str, Any] | DataError]:
    """One item per row of a .parquet (streamed `batch_rows` at a time, never the whole file) or .jsonl
    file, in file order: the record, every column as it is, or the DataError of a row that is not one
    (so a caller may skip it and go on). A file that cannot be read raises DataError naming its path."""
    if data_format(path) == "jsonl":
        return jsonl_records(path)
    return _parquet_records(path, batch_rows)


def raw_records(path: str, batch_rows: int) -> Iterator[dict[str, Any]]:
    """The records of a data file, in file order; raises the first row's DataError."""
    for record in records(path, batch_rows):
        if isinstance(record, DataError):
            raise record
        yield record


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

    def _rows(self, count_skips: bool) -> Iterator[DataRow]:
        """The file's good rows in file order; a bad one raises or is skipped (counted when asked)."""
        for index, raw in enumerate(records(self.path, self.batch_rows)):
            try:
                if isinstance(raw, DataError):
                    raise raw
                yield parse_row(raw, index, self.path)
            except DataError as e:
                if self.on_bad_row == "fail":
                    raise
                if count_skips:
                    self.skipped[e.field] += 1

    def _epoch(self, epoch: int) -> Iterator[DataRow]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        buffer: list[DataRow] = []
        for row in self._rows(count_skips=epoch == 0):  # count each bad row once, not once per epoch
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


@dataclass
class DataCheck:
    """What one pass over a data file found: good rows, and bad ones skipped by field."""

    path: str
    rows: int
    skipped: Counter


def check_file(path: str, on_bad_row: str = "fail", batch_rows: int = 256) -> DataCheck:
    """Read and validate every row of `path` once (`agentrl check-data`): the first bad row raises its
    DataError, or with `on_bad_row="skip"` bad rows are counted; a file with no usable row is a DataError."""
    stream = PromptStream(path, shuffle=False, on_bad_row=on_bad_row, batch_rows=batch_rows)
    rows = sum(1 for _ in stream.once())
    if rows == 0:
        raise DataError(f"{path}: no usable rows ({sum(stream.skipped.values())} skipped)", "file")
    return DataCheck(path, rows, stream.skipped)
