"""Trajectory JSONL: the demonstrations `agentrl sft` trains on (the toy task's warm start, or trajectories
distilled from a stronger model for the seed's SFT baseline). One JSON object a line:

    {"question": "What is the colour of kalomi?",
     "turns": [{"role": "model", "text": "<reason>Let me look it up.</reason><text_search>kalomi colour</text_search>"},
               {"role": "observation", "text": "<information>1. ...</information>\\nQuestion: ..."},
               {"role": "model", "text": "<reason>The answer is amber.</reason><answer>amber</answer>"}],
     "id": "sft-0"}

- `question`: the user's question; the system prompt is the run's protocol's (`env.protocol`), so the
  prompt is the one the agent loop builds for RL.
- `turns`: model turns and observations alternating, first and last a model turn. A model turn is what
  the model writes (trained: loss mask 1); an observation is what it reads back, verbatim, tags and
  after-search prompt included (not trained: loss mask 0).
- Any other field (`id`, `data_id`, `category`, ...) is carried along and ignored. Text only: no images.

Rows are numbered from 0 among the non-blank lines, as in the prompt data files; a bad row is a DataError
(a UserError) naming the file, the row and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrl.data.prompts import DataError, jsonl_records

MODEL, OBSERVATION_ROLE = "model", "observation"


@dataclass
class Demonstration:
    """One validated row: the question and its (role, text) turns."""

    row: int
    question: str
    turns: list[tuple[str, str]]


def _turns(value: Any, fail: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value:
        raise fail("turns", "expected a non-empty list of {role, text} objects")
    turns = []
    for k, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise fail(f"turns[{k}]", f"expected an object {{role, text}}, got {type(turn).__name__}")
        want = MODEL if k % 2 == 0 else OBSERVATION_ROLE  # alternating, from a model turn
        if turn.get("role") != want:
            raise fail(f"turns[{k}].role", f"expected '{want}' (turns alternate, starting with a model turn), "
                                           f"got {turn.get('role')!r}")
        if not isinstance(turn.get("text"), str) or not turn["text"]:
            raise fail(f"turns[{k}].text", "expected a non-empty string")
        turns.append((want, turn["text"]))
    if turns[-1][0] != MODEL:
        raise fail(f"turns[{len(turns) - 1}]", "the last turn must be a model turn (an observation is not trained)")
    return turns


def parse_demonstration(raw: Any, row: int, file: str) -> Demonstration:
    """One record -> Demonstration, or DataError naming the file, the row and the field."""

    def fail(field_name: str, why: str) -> DataError:
        return DataError(f"{file} row {row}: field '{field_name}': {why}", field_name)

    if not isinstance(raw.get("question"), str) or not raw["question"].strip():
        raise fail("question", "expected a non-empty string")
    return Demonstration(row, raw["question"], _turns(raw.get("turns"), fail))


def read_demonstrations(path: str | Path) -> list[Demonstration]:
    """Every row of a trajectory JSONL file, validated; DataError on the first bad one or an empty file."""
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a file", "file")
    out = []
    for row, raw in enumerate(jsonl_records(path)):
        if isinstance(raw, DataError):
            raise raw
        out.append(parse_demonstration(raw, row, path))
    if not out:
        raise DataError(f"{path}: no trajectories (the file is empty)", "file")
    return out


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write records (trajectories, corpus pages) as JSONL (atomically: a reader sees the whole file or the old one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)
    return path
