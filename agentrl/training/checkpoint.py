"""A run's checkpoints: `RUN/checkpoints/step_N/`, written atomically, the newest `trainer.keep_checkpoints`
kept, and found again by `trainer.resume=auto`.

A checkpoint folder holds the model in Hugging Face format (transformers and vLLM load the folder as it
is), `deepspeed/` (every learner rank's optimizer and schedule state, sharded as DeepSpeed writes it),
`trainer_state.json` (step, policy version, data cursor, accounting) and `live_groups.pkl` (the prompt
rows of the groups admitted but not yet ended, re-admitted first on resume). It is written under
`.step_N.tmp/`, marked COMPLETE, then renamed: a folder named `step_N` is whole, or it is skipped on
resume with a one-line warning naming it. `final` links to the checkpoint of a run that finished.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

from agentrl.training.accounting import AdmittedGroup, LedgerCounts

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
LIVE_FILE = "live_groups.pkl"
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
        with open(os.path.join(tmp, LIVE_FILE), "wb") as f:
            pickle.dump(live, f)
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
            except (OSError, ValueError, TypeError, KeyError, pickle.UnpicklingError, EOFError) as e:
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
    with open(os.path.join(path, LIVE_FILE), "rb") as f:
        live = pickle.load(f)
    if not isinstance(live, list) or not all(isinstance(g, AdmittedGroup) for g in live):
        raise ValueError(f"unreadable {LIVE_FILE}")
    return Checkpoint(path, state, live)


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
