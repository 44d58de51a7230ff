"""Run outputs: metrics.jsonl (one object per learner step), wandb, and the progress bar."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from agentrl.console import verbose
from agentrl.redaction import redact


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


class MetricsWriter:
    def __init__(self, run_dir: str, config: dict[str, Any], wandb_cfg: Any, total_steps: int,
                 progress: bool = True, first_step: int = 0) -> None:
        """`first_step` > 0: a resumed run, which keeps the rows up to that step and appends after them."""
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, "metrics.jsonl")
        kept = _rows_up_to(self.path, first_step) if first_step else []
        self._file = open(self.path, "w")
        self._file.writelines(kept)
        self._wandb = None
        mode = wandb_cfg.mode
        if mode != "disabled":
            if mode == "auto":
                mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
            try:
                import wandb

                # its banner and run summary only at trainer.log_level=debug
                self._wandb = wandb.init(project=wandb_cfg.project, name=os.path.basename(run_dir),
                                         dir=run_dir, mode=mode, config=config, reinit="finish_previous",
                                         settings=wandb.Settings(silent=not verbose()))
            except Exception as e:  # metrics must never take the run down
                print(f"[agentrl] wandb disabled: {redact(str(e))}")
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=first_step, desc="train", unit="step", dynamic_ncols=True)

    def log(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log(row, step=int(row["step"]))
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(reward=f"{row['reward_mean']:.3f}", stale=f"{row['staleness_mean']:.2f}",
                                  idle=f"{row['learner_idle_frac']:.2f}")

    def close(self) -> None:
        self._file.close()
        if self._bar is not None:
            self._bar.close()
        if self._wandb is not None:
            self._wandb.finish()


def _rows_up_to(path: str, step: int) -> list[str]:
    """The lines of a metrics file whose step is at most `step` (a resume drops the steps it redoes)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
