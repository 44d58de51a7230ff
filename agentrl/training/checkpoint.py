"""A run's checkpoints: `RUN/checkpoints/step_N/`, written atomically, the newest `trainer.keep_checkpoints`
kept, and found again by `trainer.resume=auto`.

A checkpoint folder holds the model in Hugging Face format (transformers and vLLM load the folder as it
is), `deepspeed/` (every learner rank's optimizer and schedule state, sharded as DeepSpeed writes it),
`trainer_state.json` (step, policy version, data cursor, accounting) and `live_groups.json` (the prompt
rows of the groups admitted but not yet ended, re-admitted first on resume; images as base64). Both are
plain data: reading a run folder never unpickles anything (a checkpoint of an older agentrl, with
`live_groups.pkl`, is skipped with a warning). It is written under
`.step_N.tmp/`, marked COMPLETE, then renamed: a folder named `step_N` is whole, or it is skipped on
resume with a one-line warning naming it. `final` links to the checkpoint of a run that finished.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

from agentrl.records import DataRow
from agentrl.training.accounting import AdmittedGroup, LedgerCounts

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
LIVE_FILE = "live_groups.json"
LEGACY_LIVE_FILE = "live_groups.pkl"  # written by agentrl before 2026-12-07; never unpickled
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainerState:
    """What a resume needs besides the learner's weights and optimizer."""

    step: int
    policy_version: int
    rows_taken: int  # prompts taken from the stream so far (the cursor of a synthetic source)
    data_cursor: dict[str, int] | None  # a file source's DataCursor (epoch, index)
    counts: dict[str, Any] = field(default_factory=dict)  # the ledger's LedgerCounts
    seed: int = 0
    # the driver's RNG states (Python's `random`, numpy's global one); the learner ranks' torch RNG is in
    # their DeepSpeed state, the data order in the cursor
    rng: dict[str, Any] = field(default_factory=dict)

    def ledger_counts(self) -> LedgerCounts:
        return LedgerCounts(**self.counts)


@dataclass
class Checkpoint:
    """A complete checkpoint found on disk."""

    path: str
    state: TrainerState
    live: list[AdmittedGroup]


class CheckpointStore:
    """The checkpoints of one run directory."""

    def __init__(self, run_dir: str, keep: int) -> None:
        self.root = os.path.abspath(os.path.join(run_dir, "checkpoints"))
        self.keep = keep

    def staging(self, step: int) -> str:
        """An empty temporary folder for step `step` (the learner writes its part here first)."""
        tmp = os.path.join(self.root, f".step_{step}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        return tmp

    def commit(self, tmp: str, state: TrainerState, live: list[AdmittedGroup]) -> str:
        """Add the driver's part, mark the folder complete, rename it into place, apply retention."""
        with open(os.path.join(tmp, LIVE_FILE), "w") as f:
            json.dump([live_to_json(g) for g in live], f)
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(asdict(state), f, indent=1)
        with open(os.path.join(tmp, COMPLETE), "w") as f:
            f.write("ok\n")
        final = os.path.join(self.root, f"step_{state.step}")
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        self._retain()
        return final

    def mark_final(self, path: str) -> str:
        """Point `checkpoints/final` at the finished run's checkpoint; returns the link's path."""
        link = os.path.join(self.root, "final")
        if os.path.islink(link) or os.path.isfile(link):
            os.remove(link)
        elif os.path.isdir(link):
            shutil.rmtree(link)
        os.symlink(os.path.basename(path), link)
        return link

    def _steps(self) -> list[tuple[int, str]]:
        if not os.path.isdir(self.root):
            return []
        found = [(int(m.group(1)), os.path.join(self.root, n)) for n in os.listdir(self.root)
                 if (m := _STEP_DIR.match(n))]
        return sorted(found)

    def _retain(self) -> None:
        for _, path in self._steps()[:-self.keep]:
            shutil.rmtree(path, ignore_errors=True)

    def latest(self, warn: Any = print) -> Checkpoint | None:
        """The newest complete checkpoint; an incomplete or unreadable one is skipped with one line
        (`warn`) naming it."""
        for _, path in reversed(self._steps()):
            try:
                return read_checkpoint(path)
            except (OSError, ValueError, TypeError, KeyError) as e:
                warn(f"[agentrl] skipping checkpoint {path}: {e}")
        return None


def read_checkpoint(path: str) -> Checkpoint:
    """Read a checkpoint folder; ValueError naming what is missing or unreadable."""
    if not os.path.isfile(os.path.join(path, COMPLETE)):
        raise ValueError(f"incomplete (no {COMPLETE} marker)")
    if not os.path.isdir(os.path.join(path, "deepspeed")):
        raise ValueError("incomplete (no deepspeed/ optimizer state)")
    try:
        with open(os.path.join(path, STATE_FILE)) as f:
            state = TrainerState(**json.load(f))
        state.ledger_counts()
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"unreadable {STATE_FILE}: {e}") from None
    if not os.path.isfile(os.path.join(path, LIVE_FILE)) and os.path.exists(os.path.join(path, LEGACY_LIVE_FILE)):
        raise ValueError(f"written by an older agentrl ({LEGACY_LIVE_FILE} is not read: unpickling runs code)")
    try:
        with open(os.path.join(path, LIVE_FILE)) as f:
            live = [live_from_json(g) for g in json.load(f)]
    except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as e:
        raise ValueError(f"unreadable {LIVE_FILE}: {e}") from None
    return Checkpoint(path, state, live)


def live_to_json(group: AdmittedGroup) -> dict[str, Any]:
    """A live group as plain JSON values (image bytes in base64)."""
    row = {**asdict(group.row), "images": [base64.b64encode(b).decode() for b in group.row.images]}
    return {"group_id": group.group_id, "policy_version": group.policy_version, "attempts": group.attempts,
            "row": row}


def live_from_json(value: dict[str, Any]) -> AdmittedGroup:
    """`live_to_json` read back, every field's type checked (ValueError naming the field)."""
    row = dict(value["row"])
    try:
        row["images"] = [base64.b64decode(s, validate=True) for s in row.get("images", [])]
    except (binascii.Error, TypeError) as e:
        raise ValueError(f"row.images: {e}") from None
    group = AdmittedGroup(value["group_id"], DataRow(**row), value["policy_version"], value.get("attempts", 0))
    for name, kind in (("group_id", str), ("policy_version", int), ("attempts", int)):
        if not isinstance(getattr(group, name), kind):
            raise ValueError(f"{name}: expected {kind.__name__}")
    r = group.row
    texts = [r.question, r.data_source, r.data_id, r.category, *r.ground_truth, *r.candidate_answers, *r.image_urls]
    if not (isinstance(r.row_id, int) and isinstance(r.ground_truth, list) and all(isinstance(x, str) for x in texts)):
        raise ValueError(f"group {group.group_id}: a row field of the wrong type")
    return group


def rng_states() -> dict[str, Any]:
    """The driver's RNG states, as JSON values."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}


def restore_rng(states: dict[str, Any]) -> None:
    """Put back what `rng_states` saved (nothing when a checkpoint has none)."""
    import random

    import numpy as np

    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
