"""`agentrl build-balanced`: label each question `search_free` or `search_required` with the current model,
and write a search-balanced veRL parquet (the seed's FVQA-train: about 3,400 search-required to 1,600
search-free of 5,000).

For each row the model is sampled k times in the `direct` workflow (no search) and k times with search
(`on_demand`, or the scripted `rag`), through the eval machinery (agentrl/evaluation/evaluate.py) and the configured
reward. A row is `search_free` when at least t of its k direct samples are correct; else `search_required`
when at least `--min-search-correct` of its searched samples are correct; else `unsolved` (left out: the
model cannot answer it either way). The parquet keeps every original column, sets `category` (and
`data_id` where missing); `OUT.labels.jsonl` lists every row's counts and label.

    agentrl build-balanced CONFIG --data FILE --out OUT.parquet [-k 4] [-t 2] [--ratio 0.68] [--total 5000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
from dataclasses import dataclass

from agentrl.errors import UserError

SEARCH_FREE, SEARCH_REQUIRED, UNSOLVED = "search_free", "search_required", "unsolved"
SEED_RATIO = 3400 / 5000  # the seed's share of search-required questions


@dataclass
class RowLabel:
    """One question's counts of correct samples without and with search, and its label."""

    row_id: int
    data_id: str
    k: int
    direct_correct: int
    search_correct: int
    category: str


def label(direct_correct: int, search_correct: int, t: int, min_search_correct: int = 1) -> str:
    """search_free when at least t direct samples are correct; else search_required when searching helps."""
    if direct_correct >= t:
        return SEARCH_FREE
    if search_correct >= min_search_correct:
        return SEARCH_REQUIRED
    return UNSOLVED


def select_balanced(labels: list[RowLabel], ratio: float, total: int = 0, seed: int = 0) -> list[RowLabel]:
    """The largest set (at most `total` when > 0) with `ratio` of it search_required, drawn with a seed from
    each class; shuffled."""
    rng = random.Random(seed)
    req = [x for x in labels if x.category == SEARCH_REQUIRED]
    free = [x for x in labels if x.category == SEARCH_FREE]
    limits = [total] if total > 0 else []
    if ratio > 0:
        limits.append(int(len(req) / ratio))
    if ratio < 1:
        limits.append(int(len(free) / (1 - ratio)))
    size = min(limits) if limits else 0
    n_req = min(len(req), round(size * ratio))
    n_free = min(len(free), size - n_req)
    chosen = rng.sample(req, n_req) + rng.sample(free, n_free)
    rng.shuffle(chosen)
    return chosen


def write_balanced(data: str, chosen: list[RowLabel], out: str) -> int:
    """The chosen rows of `data`, every column as it was, with `category` set; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agentrl.data.prompts import raw_records  # the same streamed reader the prompt stream uses

    by_row = {x.row_id: x for x in chosen}
    records = {}
    for index, raw in enumerate(raw_records(data, 256)):
        if index in by_row:
            records[index] = {**raw, "data_id": raw.get("data_id") or by_row[index].data_id,
                              "category": by_row[index].category}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    pq.write_table(pa.Table.from_pylist([records[x.row_id] for x in chosen]), out)
    return len(chosen)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("config", help="a run config (model, env, tools, reward)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    parser.add_argument("--data", required=True, help="a veRL-format .parquet or .jsonl file of questions")
    parser.add_argument("--out", required=True, help="the balanced parquet to write")
    parser.add_argument("-k", type=int, default=4, help="samples per question in each workflow")
    parser.add_argument("-t", type=int, default=2, help="search_free: correct without search at least t of k")
    parser.add_argument("--min-search-correct", type=int, default=1,
                        help="search_required: correct with search at least this many of k")
    parser.add_argument("--search-workflow", default="on_demand", choices=["on_demand", "rag"])
    parser.add_argument("--ratio", type=float, default=SEED_RATIO, help="share of search_required rows (0.68)")
    parser.add_argument("--total", type=int, default=0, help="rows to write at most (0: as many as the ratio allows)")
    parser.add_argument("--temperature", type=float, default=None, help="default: rollout.temperature")
    parser.add_argument("--limit", type=int, default=0, help="label only the first N questions")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns 0. Raises UserError (bad input) or ActorFailure (an actor died); the
    command line reports them (agentrl/cli.py)."""
    from agentrl.evaluation.evaluate import evaluate_rows, prepare, run_with_actors

    if not (args.k >= 1 and 1 <= args.t <= args.k):
        raise UserError("-k must be >= 1 and -t in 1..k")
    if not 0 <= args.ratio <= 1:
        raise UserError("--ratio must be in [0, 1]")
    cfg, rows = prepare(args.config, args.overrides, args.data, ["direct", args.search_workflow], args.limit)
    temp = cfg.rollout.temperature if args.temperature is None else args.temperature

    async def work(actors):
        direct = await evaluate_rows(actors.envs, rows, "direct", args.k, temp, tag="balance")
        search = await evaluate_rows(actors.envs, rows, args.search_workflow, args.k, temp, tag="balance")
        return direct, search

    direct, search = run_with_actors(cfg, work)
    labels = []
    for i, row in enumerate(rows):  # evaluate_rows returns k items per row, in row order
        d = sum(it.correct for it in direct[i * args.k:(i + 1) * args.k])
        s = sum(it.correct for it in search[i * args.k:(i + 1) * args.k])
        labels.append(RowLabel(row.row_id, row.data_id, args.k, d, s, label(d, s, args.t, args.min_search_correct)))
    chosen = select_balanced(labels, args.ratio, args.total, args.seed)
    n = write_balanced(args.data, chosen, args.out)
    with open(os.path.splitext(args.out)[0] + ".labels.jsonl", "w") as f:
        for x in labels:
            f.write(json.dumps(dataclasses.asdict(x)) + "\n")
    counts = {c: sum(x.category == c for x in labels) for c in (SEARCH_REQUIRED, SEARCH_FREE, UNSOLVED)}
    picked = sum(x.category == SEARCH_REQUIRED for x in chosen)
    print(f"[agentrl] labelled {len(labels)}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"[agentrl] wrote {n} rows ({picked} search_required, {n - picked} search_free) to {args.out}")
    return 0
