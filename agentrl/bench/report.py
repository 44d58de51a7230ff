"""What `agentrl bench async` measures and shows: interval arithmetic over the spans of a run, the
per-mode summary, the markdown table and the PNG timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentrl.training.accounting import lost_groups

Interval = tuple[float, float]


def _clip(intervals: list[Interval], lo: float, hi: float) -> list[Interval]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)]


def union_length(intervals: list[Interval], lo: float, hi: float) -> float:
    """Seconds of [lo, hi] covered by at least one interval."""
    total, end = 0.0, lo
    for a, b in sorted(_clip(intervals, lo, hi)):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def busy_fraction(intervals: list[Interval], lo: float, hi: float) -> float:
    """Share of the window [lo, hi] in which something was running."""
    return union_length(intervals, lo, hi) / (hi - lo) if hi > lo else 0.0


def mean_concurrency(intervals: list[Interval], lo: float, hi: float) -> float:
    """Average number of intervals running at once over [lo, hi] (Little's law: rate x latency)."""
    return sum(b - a for a, b in _clip(intervals, lo, hi)) / (hi - lo) if hi > lo else 0.0


def max_concurrency(intervals: list[Interval], lo: float = float("-inf"), hi: float = float("inf")) -> int:
    """The most intervals running at one instant (an interval ending at t does not overlap one starting at t)."""
    return max(_concurrency_curve(_clip(intervals, lo, hi), 0.0)[1], default=0)


@dataclass
class RunTrace:
    """What one benchmark run recorded: its metrics rows, the learner loop's marks, the trajectories'
    spans, and the generator's busy seconds sampled over time."""

    mode: str
    rows: list[dict[str, Any]]
    marks: list[tuple[float, float, float, float]]  # per step: batch asked, train start, sync start, sync end
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # trained trajectories' spans
    gen_busy: list[tuple[float, float]] = field(default_factory=list)  # (time, engine busy seconds so far)
    warmup_steps: int = 1
    groups: dict[str, int] = field(default_factory=dict)  # the run's ledger (summary.json's groups_* counts)

    @property
    def window(self) -> Interval:
        """Steady state: from the end of the warm-up steps to the end of the last step."""
        return self.marks[self.warmup_steps - 1][3], self.marks[-1][3]

    def kind(self, kind: str) -> list[Interval]:
        return [(a, b) for k, a, b in self.spans if k == kind]


def _interp(samples: list[tuple[float, float]], t: float) -> float:
    """Linear interpolation of a sampled, non-decreasing counter at time t."""
    if not samples:
        return 0.0
    prev = samples[0]
    for cur in samples:
        if cur[0] >= t:
            if cur[0] == prev[0]:
                return cur[1]
            return prev[1] + (cur[1] - prev[1]) * (t - prev[0]) / (cur[0] - prev[0])
        prev = cur
    return samples[-1][1]


def summarize(trace: RunTrace) -> dict[str, Any]:
    """The per-mode numbers of the benchmark (bench/async.json's `sync` and `async` objects)."""
    lo, hi = trace.window
    rows = trace.rows[trace.warmup_steps:]
    samples = sum(r["samples"] for r in rows)
    learner = [(m[1], m[2]) for m in trace.marks]
    syncs = [(m[2], m[3]) for m in trace.marks]
    tools = trace.kind("tool")
    gen_busy = (_interp(trace.gen_busy, hi) - _interp(trace.gen_busy, lo)) / (hi - lo) if trace.gen_busy else 0.0
    return {
        "steps": len(trace.rows), "steps_measured": len(rows), "samples": samples, "window_s": hi - lo,
        "samples_per_s": samples / (hi - lo),
        "wall_s_all_steps": trace.marks[-1][3] - trace.marks[0][0],
        "step_s_mean": (hi - lo) / max(len(rows), 1),
        "learner_busy_frac": busy_fraction(learner, lo, hi),
        "learner_wait_frac": busy_fraction([(m[0], m[1]) for m in trace.marks], lo, hi),
        "weight_sync_frac": busy_fraction(syncs, lo, hi),
        "generator_busy_frac": min(gen_busy, 1.0),
        "staleness_mean": sum(r["staleness_mean"] for r in rows) / max(len(rows), 1),
        "staleness_max": max((r["staleness_max"] for r in rows), default=0),
        "token_staleness_max": max((r.get("loss/token_staleness_max", 0) for r in rows), default=0),
        "groups_dropped_stale": trace.rows[-1]["groups_dropped_stale"] if trace.rows else 0,
        "tool_concurrency_mean": mean_concurrency(tools, lo, hi),
        "tool_concurrency_max": max_concurrency(tools, lo, hi),
        "tool_calls": sum(r["tool_calls"] for r in rows),
        "tool_errors": sum(r["tool_errors"] for r in rows),
        "tool_latency_p50": sum(r["tool_latency_p50"] for r in rows) / max(len(rows), 1),
        "weight_sync_s_mean": sum(r["weight_sync_s"] for r in rows) / max(len(rows), 1),
        "learner_s_mean": sum(r["time/learner_s"] for r in rows) / max(len(rows), 1),
        "profile": {k: sum(r[k] for r in rows) / max(len(rows), 1) for k in rows[0] if k.startswith("time/")}
        if rows else {},
        "groups": trace.groups,
        "lost_groups": lost_groups(trace.groups) if trace.groups else None,
    }


def sweep_table(points: list[dict[str, Any]]) -> str:
    """Markdown table of sweep points (each: the varied setting, and its mode summaries)."""
    head = ("| setting | sync samples/s | async samples/s | speedup | learner busy (async) | "
            "staleness mean / max | tool concurrency | dropped |")
    lines = [head, "|" + " --- |" * 8]
    for p in points:
        a, s = p["async"], p.get("sync")
        lines.append(
            f"| {p['setting']} | {s['samples_per_s']:.2f} | " if s else f"| {p['setting']} | – | ")
        lines[-1] += (f"{a['samples_per_s']:.2f} | {p['speedup']:.2f}× | " if s else f"{a['samples_per_s']:.2f} | – | ")
        lines[-1] += (f"{a['learner_busy_frac']:.0%} | {a['staleness_mean']:.2f} / {a['staleness_max']} | "
                      f"{a['tool_concurrency_mean']:.1f} | {a['groups_dropped_stale']} |")
    return "\n".join(lines)


def plot_timeline(traces: list[RunTrace], path: str) -> None:
    """One panel per run on one time scale (then the last run again on its own scale): learner steps,
    its waits for data, weight syncs, and the number of generation turns and tool calls in flight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = max(t.marks[-1][3] - t.marks[0][0] for t in traces)
    panels = [(t, span, "") for t in traces] + [(traces[-1], 0.0, " (zoomed)")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 2.5 * len(panels)), squeeze=False)
    for ax, (tr, seconds, note) in zip(axes[:, 0], panels, strict=True):
        t0 = tr.marks[0][0]
        end = seconds or tr.marks[-1][3] - t0
        bars = {"learner step": ([(m[1], m[2]) for m in tr.marks], "tab:blue", 3),
                "learner waiting for data": ([(m[0], m[1]) for m in tr.marks], "tab:gray", 3),
                "weight sync": ([(m[2], m[3]) for m in tr.marks], "tab:red", 2)}
        for label, (ivs, colour, y) in bars.items():
            ax.broken_barh([(a - t0, max(b - a, end / 500)) for a, b in ivs], (y + 0.1, 0.8), color=colour,
                           label=label)
        for y, kind, colour in ((1, "generation", "tab:green"), (0, "tool", "tab:orange")):
            ivs = tr.kind(kind)
            if not ivs:
                continue
            xs, ys = _concurrency_curve(ivs, t0)
            peak = max(ys, default=0) or 1
            ax.fill_between(xs, y + 0.1, [y + 0.1 + 0.8 * v / peak for v in ys], step="post", color=colour,
                            label=f"{'generation turns' if kind == 'generation' else 'tool calls'} in flight "
                                  f"(height: 0 to {peak})")
        ax.set_xlim(0, end)
        ax.set_ylim(0, 4)
        ax.set_yticks([0.5, 1.5, 2.5, 3.5], ["tool calls", "generation", "weight sync", "learner"])
        ax.set_title(f"{tr.mode}{note}: {len(tr.marks)} learner steps in {tr.marks[-1][3] - t0:.0f} s", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the first batch was asked for")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_traces(traces: list[RunTrace], path: str) -> None:
    """The raw spans and marks, so the timeline can be drawn again (`python -m agentrl.bench.report`)."""
    import dataclasses
    import json

    with open(path, "w") as f:
        json.dump([dataclasses.asdict(t) for t in traces], f)


def load_traces(path: str) -> list[RunTrace]:
    import json

    with open(path) as f:
        return [RunTrace(**{**d, "marks": [tuple(m) for m in d["marks"]], "spans": [tuple(s) for s in d["spans"]]})
                for d in json.load(f)]


def _concurrency_curve(intervals: list[Interval], t0: float) -> tuple[list[float], list[int]]:
    """The number in flight after each start (+1) or end (-1), in time order; at one instant ends come first."""
    events = sorted([(a - t0, 1) for a, _ in intervals] + [(b - t0, -1) for _, b in intervals])
    xs, ys, cur = [], [], 0
    for t, d in events:
        cur += d
        xs.append(t)
        ys.append(cur)
    return xs, ys


if __name__ == "__main__":
    import sys

    plot_timeline([t for t in load_traces(sys.argv[1]) if t.mode in ("sync", "async")], sys.argv[2])
