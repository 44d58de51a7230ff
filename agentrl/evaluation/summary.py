"""Evaluation records and metrics: one `EvalItem` per sample, the summary per data source and overall,
and the printed tables (one run; several runs side by side in the layout of the paper's Table 1).

Search metrics count executed tool calls: an item "searched" when it made any tool call; its image part is
`image_search`, its text part any other tool (`text_search`, the demo's `lookup`). `search_fail_ratio`
is the share of items with at least one failed tool call.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from agentrl.errors import UserError
from agentrl.grammar import IMAGE_SEARCH_TOOL
from agentrl.records import DataRow, Trajectory


@dataclass
class EvalItem:
    """One sample of one data row under one workflow, as results.jsonl stores it."""

    data_id: str
    data_source: str
    workflow: str
    sample: int
    question: str
    ground_truth: list[str]
    turns: list[str]
    tool_calls: list[dict[str, Any]]  # tool, arguments, ok, error, cached, latency_s
    answer: str | None
    finish_reason: str
    score: float
    components: dict[str, float]
    response_tokens: int
    category: str = ""

    @classmethod
    def from_trajectory(cls, row: DataRow, traj: Trajectory, workflow: str, sample: int) -> EvalItem:
        reward = traj.reward
        return cls(data_id=row.data_id, data_source=row.data_source or "unknown", workflow=workflow, sample=sample,
                   question=row.question, ground_truth=list(row.ground_truth), turns=list(traj.turn_texts),
                   tool_calls=[dataclasses.asdict(c) for c in traj.tool_calls], answer=traj.answer,
                   finish_reason=traj.finish_reason, score=reward.total if reward else 0.0,
                   components=dict(reward.components) if reward else {}, response_tokens=traj.num_model_tokens,
                   category=row.category)

    @property
    def correct(self) -> bool:
        return self.components.get("accuracy", 0.0) >= 1.0

    @property
    def image_searched(self) -> bool:
        return any(c["tool"] == IMAGE_SEARCH_TOOL for c in self.tool_calls)

    @property
    def text_searched(self) -> bool:
        return any(c["tool"] != IMAGE_SEARCH_TOOL for c in self.tool_calls)


@dataclass
class EvalMetrics:
    """Metrics of a set of items; ratios are shares of items, means are per item."""

    items: int = 0
    accuracy: float = 0.0
    search_ratio: float = 0.0
    search_image_only_ratio: float = 0.0
    search_text_only_ratio: float = 0.0
    search_both_ratio: float = 0.0
    search_fail_ratio: float = 0.0
    tool_calls_mean: float = 0.0
    turns_mean: float = 0.0
    response_tokens_mean: float = 0.0

    @classmethod
    def of(cls, items: list[EvalItem]) -> EvalMetrics:
        n = len(items)
        if n == 0:
            return cls()

        def share(pred: Any) -> float:
            return sum(1 for it in items if pred(it)) / n

        return cls(
            items=n, accuracy=share(lambda it: it.correct),
            search_ratio=share(lambda it: bool(it.tool_calls)),
            search_image_only_ratio=share(lambda it: it.image_searched and not it.text_searched),
            search_text_only_ratio=share(lambda it: it.text_searched and not it.image_searched),
            search_both_ratio=share(lambda it: it.image_searched and it.text_searched),
            search_fail_ratio=share(lambda it: any(not c["ok"] for c in it.tool_calls)),
            tool_calls_mean=sum(len(it.tool_calls) for it in items) / n,
            turns_mean=sum(len(it.turns) for it in items) / n,
            response_tokens_mean=sum(it.response_tokens for it in items) / n)


@dataclass
class EvalSummary:
    """What summary.json holds: the run's description, metrics overall and per data source."""

    label: str
    workflow: str
    model: str
    data: str
    samples: int
    temperature: float
    overall: EvalMetrics = field(default_factory=EvalMetrics)
    by_source: dict[str, EvalMetrics] = field(default_factory=dict)
    # rows with a `category` (search_free / search_required: `agentrl build-balanced`, `agentrl make-toy`)
    by_category: dict[str, EvalMetrics] = field(default_factory=dict)

    @classmethod
    def of(cls, items: list[EvalItem], **describe: Any) -> EvalSummary:
        sources = sorted({it.data_source for it in items})
        categories = sorted({it.category for it in items if it.category})
        return cls(**describe, overall=EvalMetrics.of(items),
                   by_source={s: EvalMetrics.of([it for it in items if it.data_source == s]) for s in sources},
                   by_category={c: EvalMetrics.of([it for it in items if it.category == c]) for c in categories})

    @classmethod
    def load(cls, path: str) -> EvalSummary:
        """A summary.json written by `write_results`; UserError (one line, naming the file) if it is not one."""
        try:
            with open(path) as f:
                d = json.load(f)
            return cls(**{**d, "overall": EvalMetrics(**d["overall"]),
                          "by_source": {k: EvalMetrics(**v) for k, v in d["by_source"].items()},
                          "by_category": {k: EvalMetrics(**v) for k, v in d.get("by_category", {}).items()}})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # ValueError: JSON, UTF-8
            raise UserError(f"{path}: not an eval summary.json ({type(e).__name__}: {e})") from None

    def flat(self, prefix: str = "eval/") -> dict[str, float]:
        """Overall metrics as flat keys (`eval/accuracy`, ...) for metrics.jsonl and wandb, and per category
        accuracy and search ratio (`eval/search_free/accuracy`, ...)."""
        out = {f"{prefix}{k}": float(v) for k, v in dataclasses.asdict(self.overall).items()}
        for c, m in self.by_category.items():
            out.update({f"{prefix}{c}/accuracy": m.accuracy, f"{prefix}{c}/search_ratio": m.search_ratio})
        return out


def write_results(out_dir: str, items: list[EvalItem], summary: EvalSummary) -> None:
    """results.jsonl (one line per item) and summary.json."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.jsonl"), "w") as f:
        for it in items:
            f.write(json.dumps(dataclasses.asdict(it)) + "\n")
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(dataclasses.asdict(summary), f, indent=1)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def summary_table(summary: EvalSummary) -> str:
    """One run: a row per data source and one overall; percentages except the means."""
    header = ["data_source", "items", "acc", "search", "img only", "txt only", "both", "fail", "tool calls",
              "turns", "resp tokens"]
    rows = []
    named = [*summary.by_source.items(), *((f"category {c}", m) for c, m in summary.by_category.items())]
    for name, m in [*named, ("overall", summary.overall)]:
        rows.append([name, str(m.items), _pct(m.accuracy), _pct(m.search_ratio), _pct(m.search_image_only_ratio),
                     _pct(m.search_text_only_ratio), _pct(m.search_both_ratio), _pct(m.search_fail_ratio),
                     f"{m.tool_calls_mean:.2f}", f"{m.turns_mean:.2f}", f"{m.response_tokens_mean:.1f}"])
    return f"{summary.label}  ({summary.workflow}, {summary.model})\n" + _render(header, rows)


def before_after_table(before: EvalSummary, after: EvalSummary, steps: tuple[int, int]) -> str:
    """Held-out accuracy and search ratio per category and overall, at two steps of a run."""
    b, a = steps
    header = ["held-out", "items", f"acc step {b}", f"acc step {a}", f"search step {b}", f"search step {a}"]
    rows = []
    for name in [*after.by_category, "overall"]:
        mb = before.overall if name == "overall" else before.by_category.get(name, EvalMetrics())
        ma = after.overall if name == "overall" else after.by_category[name]
        rows.append([name, str(ma.items), _pct(mb.accuracy), _pct(ma.accuracy), _pct(mb.search_ratio),
                     _pct(ma.search_ratio)])
    return _render(header, rows)


def compare_table(summaries: list[EvalSummary]) -> str:
    """Several runs side by side, as the paper's Table 1: a row per run (workflow or checkpoint), accuracy
    per data source and their average, then the search ratio per data source and its average."""
    sources = sorted({s for sm in summaries for s in sm.by_source})
    header = ["model / workflow", *sources, "avg", *[f"SR {s}" for s in sources], "SR avg"]
    rows = []
    for sm in summaries:
        acc = [sm.by_source[s].accuracy if s in sm.by_source else None for s in sources]
        sr = [sm.by_source[s].search_ratio if s in sm.by_source else None for s in sources]

        def cells(vals: list[float | None]) -> list[str]:
            present = [v for v in vals if v is not None]
            avg = sum(present) / len(present) if present else 0.0
            return [_pct(v) if v is not None else "-" for v in vals] + [_pct(avg)]

        rows.append([sm.label, *cells(acc), *cells(sr)])
    return _render(header, rows)
