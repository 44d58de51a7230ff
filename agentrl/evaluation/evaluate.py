"""`agentrl eval`: evaluate a policy on a veRL-format file in the seed's workflows, through the same actors
as training (engines, environment and reward actors, built by agentrl/actors/factory.py).

    agentrl eval CONFIG --data FILE [--workflow direct|rag|on_demand[,...]] [--out DIR] [-n N] [key=value ...]
    agentrl eval --compare a/summary.json b/summary.json ...

Greedy by default (`-n 1`, temperature 0); with `-n N` each row is sampled N times at
`--temperature` (default: `rollout.temperature`). Each workflow writes `results.jsonl` and `summary.json`
(metrics in agentrl/evaluation/summary.py) to `--out` (to `--out/<workflow>` when several are given), prints the
table, and logs to wandb (`trainer.wandb`). `--compare` prints runs side by side in the paper's Table 1
layout. During training, `trainer.eval_every` runs `evaluate_rows` on `trainer.eval_data`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar  # noqa: UP035

from agentrl.errors import UserError
from agentrl.evaluation.summary import EvalItem, EvalSummary, compare_table, summary_table, write_results
from agentrl.grammar import WORKFLOWS, check_workflow
from agentrl.records import DataRow

if TYPE_CHECKING:  # omegaconf, torch and Ray load with the command that needs them, not with every CLI command
    from agentrl.actors.factory import ActorGroups
    from agentrl.config import Config

T = TypeVar("T")


def load_rows(path: str, limit: int = 0, on_bad_row: str = "fail") -> list[DataRow]:
    """The rows of one pass over a file, in file order (at most `limit` when > 0)."""
    from agentrl.data.prompts import PromptStream

    rows = []
    for row in PromptStream(path, shuffle=False, on_bad_row=on_bad_row).once():
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    return rows


async def evaluate_rows(envs: list[Any], rows: list[DataRow], workflow: str, n: int = 1, temperature: float = 0.0,
                        max_rows_in_flight: int = 64, tag: str = "eval") -> list[EvalItem]:
    """Run every row's n samples under one workflow on the environment actors (round-robin), scored and
    returned in row order; at most `max_rows_in_flight` rows run at once."""
    slots = asyncio.Semaphore(max_rows_in_flight)

    async def one(k: int, row: DataRow) -> list[EvalItem]:
        async with slots:
            trajs = await envs[k % len(envs)].evaluate.remote(row, f"{tag}-{workflow}-{k}", workflow, n, temperature)
        return [EvalItem.from_trajectory(row, t, workflow, i) for i, t in enumerate(trajs)]

    per_row = await asyncio.gather(*[one(k, row) for k, row in enumerate(rows)])
    return [it for items in per_row for it in items]


async def periodic_eval(envs: list[Any], cfg: Config, out_dir: str) -> dict[str, float]:
    """The eval during training (`trainer.eval_every`): `trainer.eval_data` in `trainer.eval_workflow` on the
    training run's own environment actors; writes results to out_dir and returns the eval/* metrics."""
    t = cfg.trainer
    rows = load_rows(t.eval_data, t.eval_limit, cfg.data.on_bad_row)
    temp = 0.0 if t.eval_samples == 1 else cfg.rollout.temperature
    items = await evaluate_rows(envs, rows, t.eval_workflow, t.eval_samples, temp, tag=os.path.basename(out_dir))
    summary = EvalSummary.of(items, label=_label(cfg, t.eval_workflow, ""), workflow=t.eval_workflow,
                             model=cfg.model.path, data=os.path.abspath(t.eval_data), samples=t.eval_samples,
                             temperature=temp)
    write_results(out_dir, items, summary)
    return summary.flat()


def _label(cfg: Config, workflow: str, given: str) -> str:
    return given or f"{os.path.basename(cfg.model.path.rstrip('/'))} {workflow}"


def run_with_actors(cfg: Config, work: Callable[[ActorGroups], Awaitable[T]]) -> T:
    """Start the rollout side (engines, reward actors, environment actors; no queue, no learner), run `work`
    with them, stop them. Joins RAY_ADDRESS or starts a local cluster. An actor crash raises ActorFailure
    naming the actor."""
    # the factory loads torch before Ray connects
    from agentrl.actors.factory import connect_ray, create_actors, guarded, start_actors, stop_actors
    from agentrl.models.tiny import ensure_model

    started_here = connect_ray()

    async def main() -> T:
        groups = None
        try:
            model_path = os.path.abspath(ensure_model(cfg.model.path, cfg.model.cache_dir))
            groups = create_actors(cfg, model_path, env_prefix="eval-env")
            await guarded(start_actors(groups), groups)
            return await guarded(work(groups), groups)
        finally:
            if groups is not None:
                await stop_actors(groups)

    try:
        return asyncio.run(main())
    finally:
        if started_here:
            import ray

            ray.shutdown()


def run_eval(cfg: Config, rows: list[DataRow], data: str, workflows: list[str], out_dir: str, n: int = 1,
             temperature: float | None = None, label: str = "") -> list[EvalSummary]:
    """Evaluate one model on the rows of one file in each workflow (one set of actors for all); writes and
    returns the summaries."""
    from agentrl.metrics import MetricsWriter

    temp = (0.0 if n == 1 else cfg.rollout.temperature) if temperature is None else temperature

    async def work(actors: ActorGroups) -> list[EvalSummary]:
        summaries = []
        for wf in workflows:
            items = await evaluate_rows(actors.envs, rows, wf, n, temp)
            summary = EvalSummary.of(items, label=_label(cfg, wf, label if len(workflows) == 1 else ""),
                                     workflow=wf, model=cfg.model.path, data=os.path.abspath(data), samples=n,
                                     temperature=temp)
            wf_dir = out_dir if len(workflows) == 1 else os.path.join(out_dir, wf)
            write_results(wf_dir, items, summary)
            writer = MetricsWriter(wf_dir, {**dataclasses.asdict(cfg), "eval": dataclasses.asdict(summary)},
                                   cfg.trainer.wandb, 1, progress=False)
            writer.log({"step": 0, **summary.flat()})
            writer.close()
            summaries.append(summary)
        return summaries

    return run_with_actors(cfg, work)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("config", nargs="?", help="a run config (model, env, tools, reward)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.path=runs/x/checkpoints/final")
    parser.add_argument("--data", default="", help="a veRL-format .parquet or .jsonl file")
    parser.add_argument("--workflow", default="on_demand",
                        help=f"one of {', '.join(WORKFLOWS)}, or several separated by commas")
    parser.add_argument("--out", default="", help="output folder (default runs/eval/<workflow>)")
    parser.add_argument("-n", "--samples", type=int, default=1, help="samples per row (1: greedy)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature (default 0 with -n 1, else rollout.temperature)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N rows")
    parser.add_argument("--label", default="", help="the run's name in tables (default: model and workflow)")
    parser.add_argument("--compare", nargs="+", default=None, metavar="SUMMARY",
                        help="print these summary.json files side by side (Table 1 layout) and exit")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns 0. Raises UserError (bad input) or ActorFailure (an actor died); the
    command line reports them (agentrl/cli.py)."""
    if args.compare:
        print(compare_table([EvalSummary.load(p) for p in args.compare]))
        return 0
    workflows = [w.strip() for w in args.workflow.split(",") if w.strip()]
    bad = [w for w in workflows if w not in WORKFLOWS]
    if bad or not workflows:
        raise UserError(f"--workflow: '{bad[0] if bad else args.workflow}' is not one of {', '.join(WORKFLOWS)}")
    if not args.config:
        raise UserError("eval needs a CONFIG")
    if args.samples < 1:
        raise UserError("-n/--samples must be >= 1")
    cfg, rows = prepare(args.config, args.overrides, args.data, workflows, args.limit)
    out = args.out or os.path.join("runs", "eval", "-".join(workflows))
    summaries = run_eval(cfg, rows, args.data, workflows, out, args.samples, args.temperature, args.label)
    for s in summaries:
        print(summary_table(s) + "\n")
    if len(summaries) > 1:
        print(compare_table(summaries) + "\n")
    print(f"[agentrl] results: {out}")
    return 0


def prepare(config: str, overrides: list[str], data: str, workflows: list[str],
            limit: int = 0) -> tuple[Config, list[DataRow]]:
    """The config and the rows, checked before any actor starts: UserError with one line naming the bad
    thing (config key, file, row, field, workflow)."""
    from agentrl.actors.factory import check_plugins
    from agentrl.config import load_config
    from agentrl.console import configure_driver_logging, resolve_level

    if not os.path.isfile(data):
        raise UserError(f"--data: '{data}' does not exist")
    cfg = load_config(config, overrides)
    configure_driver_logging(resolve_level(cfg.trainer.log_level))
    check_plugins(cfg)
    for wf in workflows:
        try:
            check_workflow(wf, cfg.env.protocol, cfg.env.tools)
        except ValueError as e:
            raise UserError(str(e)) from None
    return cfg, load_rows(data, limit, cfg.data.on_bad_row)
