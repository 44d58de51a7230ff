"""The `agentrl` command line.

One error policy for every subcommand, applied in `main`: a user error (`agentrl.errors.UserError`: a bad
config, data file or row, argument, or a missing file) is one line on stderr, `agentrl: <message>`, exit 2;
an actor failure (`agentrl.errors.ActorFailure`) exits 1. Subcommands raise; they do not print errors.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from typing import Any

from agentrl.console import configure_driver_logging, quiet_driver_libraries, resolve_level
from agentrl.errors import ActorFailure, UserError

EXIT_USER_ERROR, EXIT_ACTOR_FAILURE = 2, 1
# OS errors that mean a path the user gave is wrong (missing, a folder, not readable or writable)
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error raised as a UserError (one line) instead of usage text and exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("agentrl").strip()
        raise UserError(f"{command}: {message}" if command else message)


def _dry_run(args: argparse.Namespace) -> int:
    from agentrl.config import load_config
    from agentrl.training.dry_run import describe_cluster, dry_run

    plan = dry_run(load_config(args.config, args.overrides, check=False),
                   describe_cluster(args.nodes, args.gpus_per_node, args.gpu_memory_gib))
    print("\n".join(f"[agentrl] {line}" for line in plan.lines))
    print("\n".join(f"[agentrl] warning: {w}" for w in plan.warnings) or "[agentrl] memory: no warning")
    for problem in plan.problems:
        print(f"agentrl: {problem}", file=sys.stderr)
    print(f"[agentrl] dry run: {len(plan.problems)} problem(s); nothing was started")
    return EXIT_USER_ERROR if plan.problems else 0


def _train(args: argparse.Namespace) -> int:
    from agentrl.config import load_config

    if args.dry_run:
        return _dry_run(args)
    cfg = load_config(args.config, args.overrides)
    configure_driver_logging(resolve_level(cfg.trainer.log_level))
    from agentrl.actors.factory import check_plugins

    check_plugins(cfg)
    from agentrl.training.orchestrator import train

    summary = train(cfg)
    print(f"[agentrl] {summary.steps} steps in {summary.wall_s:.0f}s; groups admitted {summary.groups_admitted}, "
          f"trained {summary.groups_trained}, dropped as stale {summary.groups_dropped_stale}, "
          f"failed {summary.groups_failed}, in flight at stop {summary.groups_in_flight_at_stop}")
    print(f"[agentrl] metrics:    {summary.run_dir}/metrics.jsonl")
    print(f"[agentrl] checkpoint: {summary.checkpoint}")
    _print_before_after(summary.run_dir)
    return 0


def _print_before_after(run_dir: str) -> None:
    """The held-out table of the run's first and last evals (RUN/eval/step_N), when it has two."""
    from agentrl.evaluation.summary import EvalSummary, before_after_table

    evals = os.path.join(run_dir, "eval")
    steps = sorted(int(d.removeprefix("step_")) for d in (os.listdir(evals) if os.path.isdir(evals) else [])
                   if d.startswith("step_") and os.path.isfile(os.path.join(evals, d, "summary.json")))
    if len(steps) < 2:
        return
    before, after = (EvalSummary.load(os.path.join(evals, f"step_{s}", "summary.json")) for s in (steps[0], steps[-1]))
    print(f"[agentrl] held-out eval ({after.workflow}, {after.samples} sample(s) per question, % of items):")
    print(before_after_table(before, after, (steps[0], steps[-1])))


def _build_models(args: argparse.Namespace) -> int:
    from agentrl.models.tiny import TINY_NAMES, ensure_model

    unknown = [n for n in args.names if n not in TINY_NAMES]
    if unknown:
        raise UserError(f"build-models: '{unknown[0]}' is not one of {', '.join(TINY_NAMES)}")
    for name in args.names or TINY_NAMES:
        print(ensure_model(name, args.cache_dir))
    return 0


def _import_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agentrl.models.imported import PACKAGED_GGUF, import_gguf, packaged_gguf
    from agentrl.models.tiny import ensure_model

    if bool(args.name) == bool(args.gguf):
        raise UserError(f"import-model: give a name ({', '.join(PACKAGED_GGUF)}) or --gguf FILE, not both")
    if args.name and args.name not in PACKAGED_GGUF:
        raise UserError(f"import-model: '{args.name}' is not one of {', '.join(PACKAGED_GGUF)}")
    if args.gguf and not args.out:
        raise UserError("import-model: --gguf needs --out DIR")
    if args.out:
        print(import_gguf(Path(args.gguf) if args.gguf else packaged_gguf(args.name), Path(args.out)))
    else:
        print(ensure_model(args.name))
    return 0


def _make_example(args: argparse.Namespace) -> int:
    from agentrl.data.example import example_path, write_example

    if args.rows < 1:
        raise UserError("make-example: --rows must be >= 1")
    print(write_example(args.out, args.seed, args.rows) if args.out else example_path(args.seed))
    return 0


def _make_toy(args: argparse.Namespace) -> int:
    from agentrl.data.toy import write_toy

    try:
        rate = {} if args.search_rate is None else {"search_rate": args.search_rate}
        paths = write_toy(args.out, args.seed, args.entities, args.demos, args.fillers, args.train_unknown, **rate)
    except ValueError as e:  # a value out of range, named by its option
        raise UserError(f"make-toy: {e}") from None
    print(f"[agentrl] toy task (seed {args.seed}, {args.entities} entities) in {paths['sft.jsonl'].parent}: "
          + ", ".join(paths))
    return 0


def _make_facts(args: argparse.Namespace) -> int:
    from agentrl.data.facts import check_settings, real_facts, write_facts
    from agentrl.evaluation.knowledge import measure_known
    from agentrl.models.tiny import ensure_model

    try:
        check_settings(args.temperature, args.made_up)
    except ValueError as e:  # a value out of range, named by its option
        raise UserError(f"make-facts: {e}") from None
    model = ensure_model(args.model)
    measured = measure_known(model, real_facts(), args.temperature, seed=args.seed)
    paths = write_facts(args.out, model, measured, args.seed, args.temperature, args.made_up)
    counts = json.loads(paths["facts.json"].read_text())["counts"]
    print(f"[agentrl] facts task (seed {args.seed}, {args.model}) in {paths['facts.json'].parent}: "
          + "; ".join(f"{part} " + ", ".join(f"{c} {n}" for c, n in by.items()) for part, by in counts.items()))
    return 0


def _text_list(row: dict[str, Any], key: str, fail: Any, required: bool = False) -> list[str] | str:
    """`row[key]` as a string or a list of strings (one row of `agentrl score`)."""
    value = row.get(key)
    if value is None and not required:
        return []
    if isinstance(value, str) and key == "ground_truth":
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(key, "expected a list of strings" + (" or a string" if key == "ground_truth" else "")
                   + f", got {'nothing' if value is None else type(value).__name__}")
    return value


def _score_input(row: Any, where: str) -> tuple[Any, dict[str, Any]]:
    """(RewardInput, options) of one `agentrl score` row; UserError naming the row and the field."""
    from agentrl.records import RewardInput

    def fail(key: str, why: str) -> UserError:
        return UserError(f"{where}: field '{key}': {why}")

    if not isinstance(row.get("question", ""), str):
        raise fail("question", f"expected a string, got {type(row['question']).__name__}")
    options = {} if row.get("options") is None else row["options"]
    if not isinstance(options, dict):
        raise fail("options", f"expected an object, got {type(options).__name__}")
    for key, value in options.items():  # the presets read every option as a number, string or boolean
        if not isinstance(value, (str, int, float, bool)):
            raise fail(f"options.{key}", "expected a number, string or boolean, got "
                       + ("null" if value is None else type(value).__name__))
        if isinstance(value, float) and not math.isfinite(value):  # 1e999 reads as inf, NaN as nan
            raise fail(f"options.{key}", f"expected a finite number, got {value}")
    inp = RewardInput(question=row.get("question", ""), turns=list(_text_list(row, "turns", fail, True)),
                      answer=None, ground_truth=_text_list(row, "ground_truth", fail, True),
                      candidate_answers=list(_text_list(row, "candidate_answers", fail)))
    return inp, options


def _score(args: argparse.Namespace) -> int:
    """Score every row of a JSONL file of saved responses; rows are numbered as in data files (from 0,
    blank lines not counted)."""
    import asyncio
    import json

    from agentrl.data.prompts import DataError, jsonl_records
    from agentrl.rewards import get_reward_fn, score_async

    try:
        fn = get_reward_fn(args.preset)
    except ValueError as e:
        raise UserError(str(e)) from None

    async def score_all(out) -> int:  # one event loop for all lines: async rewards (judges) keep their sessions
        for n, row in enumerate(jsonl_records(args.file)):
            if isinstance(row, DataError):
                raise row
            inp, options = _score_input(row, f"{args.file} row {n}")
            try:
                result = await score_async(fn, inp, dict(options))
            except ValueError as e:  # a bad option or ground truth in the row
                raise UserError(f"{args.file} row {n}: {e}") from None
            out.write(json.dumps({**row, "score": result.total, **result.components}) + "\n")
        return 0

    if not os.path.isfile(args.file):
        raise UserError(f"score: '{args.file}' is not a file")
    if not args.out:
        return asyncio.run(score_all(sys.stdout))
    if os.path.exists(args.out) and os.path.samefile(args.file, args.out):
        raise UserError(f"score: --out '{args.out}' is the input file (it would be emptied before it is read)")
    with open(args.out, "w") as out:
        return asyncio.run(score_all(out))


TOOL_ARGS = ("query", "image", "image_url", "data_id", "question")  # what `agentrl tool --arg` takes


def _tool_arguments(pairs: list[str]) -> dict[str, str]:
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise UserError(f"tool: --arg '{bad[0]}' is not of the form KEY=VALUE")
    kv = dict(p.split("=", 1) for p in pairs)
    unknown = [k for k in kv if k not in TOOL_ARGS]
    if unknown:
        raise UserError(f"tool: --arg '{unknown[0]}' is not one of {', '.join(TOOL_ARGS)}")
    return kv


def _tool_images(kv: dict[str, str]) -> list[bytes]:
    """The `image=FILE` argument's bytes, checked to be an image."""
    from agentrl.images import check_image

    if "image" not in kv:
        return []
    with open(kv["image"], "rb") as f:
        data = f.read()
    try:
        return [check_image(data)]
    except ValueError as e:
        raise UserError(f"tool: --arg image='{kv['image']}': {e}") from None


def _tool(args: argparse.Namespace) -> int:
    import asyncio

    from agentrl.config import load_config
    from agentrl.envs.registry import TOOL_REGISTRY, load_tool
    from agentrl.envs.tool import TrajectoryState

    if args.list or not args.name:
        for name, cls in sorted(TOOL_REGISTRY.items()):
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            print(f"{name:14s} {doc}")
        return 0
    kv = _tool_arguments(args.arg)
    cfg = load_config(args.config, args.overrides)
    try:  # a tool of the config's env.tools by its name (plugins too), else any registered tool
        tools = {t.name: t for t in (load_tool(spec, cfg) for spec in cfg.env.tools)}
        tool = tools.get(args.name) or load_tool(args.name, cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        tool_args = tool.parse_args(kv.get("query", ""))
    except ValueError as e:  # a query the tool cannot take (an empty one, say)
        raise UserError(f"tool: {tool.name}: --arg query: {e}") from None
    state = TrajectoryState(question=kv.get("question", ""), images=_tool_images(kv), data_id=kv.get("data_id", ""),
                            image_urls=[kv["image_url"]] if "image_url" in kv else [])

    async def once() -> int:
        try:
            obs = await tool.run(tool_args, state)
        except Exception as e:  # the tool's backend failed: not the user's doing
            from agentrl.redaction import redact

            print(f"agentrl: {tool.name} failed: {redact(str(e))}", file=sys.stderr)
            return 1
        finally:
            await tool.close()
        print(obs.text)
        if obs.images:
            print(f"[{len(obs.images)} image(s)]")
        return 0

    return asyncio.run(once())


def _import_cache(args: argparse.Namespace) -> int:
    from agentrl.envs.cache_import import import_pickle

    report = import_pickle(args.file, args.out, trusted=args.trust_pickle)
    skipped = "".join(f"; skipped {n} ({why})" for why, n in sorted(report.skipped.items()))
    print(f"[agentrl] imported {report.imported} cached image searches into {args.out}{skipped}")
    return 0


def _serve_retriever(args: argparse.Namespace) -> int:
    from agentrl.envs.retriever import RequestLimits, serve

    if not 0 <= args.port <= 65535:
        raise UserError(f"serve-retriever: --port {args.port} is not in 0..65535")
    if args.max_queries < 1 or args.max_topk < 1:
        raise UserError("serve-retriever: --max-queries and --max-topk must be >= 1")
    serve(args.corpus, args.host, args.port, args.retrieval,
          RequestLimits(max_queries=args.max_queries, max_topk=args.max_topk))
    return 0


def _check_data(args: argparse.Namespace) -> int:
    """Validate every row of the configured data (`data.source`, and `trainer.eval_data` if set) without
    starting anything: exit 2 on the first bad row (or a file with no usable row), else 0."""
    from agentrl.config import SYNTHETIC_SOURCES, load_config
    from agentrl.data.prompts import check_file

    cfg = load_config(args.config, args.overrides)
    files = [f for f in (cfg.data.source, cfg.trainer.eval_data) if f and f not in SYNTHETIC_SOURCES]
    if not files:
        print(f"[agentrl] data.source is '{cfg.data.source}' (generated): no file to check")
    for path in files:
        check = check_file(path, cfg.data.on_bad_row)
        by_field = ", ".join(f"{k or 'file'}: {n}" for k, n in sorted(check.skipped.items()))
        print(f"[agentrl] {path}: {check.rows} rows OK, {sum(check.skipped.values())} skipped"
              + (f" ({by_field})" if by_field else ""))
    return 0


_MODULE_COMMANDS: list[tuple[str, str, str]] = [
    ("bench", "agentrl.bench.command", "benchmarks: agentrl bench async|learning|soak|weights [options]"),
    ("eval", "agentrl.evaluation.evaluate",
     "evaluate: agentrl eval CONFIG --data FILE [--workflow direct|rag|on_demand]"),
    ("sft", "agentrl.training.sft", "supervised fine-tuning: agentrl sft CONFIG --data FILE.jsonl [--out DIR]"),
    ("build-balanced", "agentrl.evaluation.balanced",
     "label search_free / search_required and write a balanced parquet"),
]


def _add_data_commands(sub: Any) -> None:
    """make-example and make-toy: the commands that write a dataset."""
    p = sub.add_parser("make-example", help="write the example dataset (veRL parquet, the release's layout)")
    p.add_argument("--out", default="", help="the parquet to write (default: built once in the cache; its path "
                                             "is printed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=5)
    p.set_defaults(fn=_make_example)
    p = sub.add_parser("make-toy", help="write the toy knowledge task: train/heldout parquet, corpus, sft.jsonl")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--seed", type=int, default=0, help="a new seed gives new entities")
    p.add_argument("--entities", type=int, default=48)
    p.add_argument("--demos", type=int, default=8, help="warm-start trajectories per known fact")
    p.add_argument("--fillers", type=int, default=400, help="known entities never asked (teach copying names)")
    p.add_argument("--train-unknown", type=int, default=0,
                   help="more unknown entities, asked in train.parquet only (new names for RL)")
    p.add_argument("--search-rate", type=float, default=None,
                   help="the share of warm-start demonstrations that search, whatever the fact (default 1/2)")
    p.set_defaults(fn=_make_toy)
    p = sub.add_parser("make-facts", help="write the real-knowledge task: facts the model knows (measured) and "
                                          "made-up ones only the corpus holds")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--seed", type=int, default=0, help="a new seed gives new made-up entities and a new split")
    p.add_argument("--model", default="smollm2-135m", help="the model whose knowledge is measured (model.path)")
    p.add_argument("--temperature", type=float, default=0.7, help="the sampling temperature RL will use")
    p.add_argument("--made-up", type=int, default=48, help="made-up entities per relation")
    p.set_defaults(fn=_make_facts)


def _add_local_commands(sub: Any) -> None:  # argparse's subparsers action
    p = sub.add_parser("train", help="train: agentrl train CONFIG [key=value ...]")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-5 rollout.n=8")
    p.add_argument("--dry-run", action="store_true",
                   help="check the run and print its placement and memory plan; start nothing (exit 2 on problems)")
    p.add_argument("--nodes", type=int, default=0, help="--dry-run: plan for this many nodes ...")
    p.add_argument("--gpus-per-node", type=int, default=0, help="... with this many GPUs each")
    p.add_argument("--gpu-memory-gib", type=float, default=0.0, help="--dry-run: each GPU's memory (default: "
                   "this machine's GPU, else 80 GiB, said as assumed)")
    p.set_defaults(fn=_train)
    p = sub.add_parser("build-models", help="build the tiny models (no download)")
    p.add_argument("names", nargs="*")
    p.add_argument("--cache-dir", default="")
    p.set_defaults(fn=_build_models)
    p = sub.add_parser("import-model", help="a GGUF model as a Hugging Face folder: agentrl import-model "
                                            "smollm2-135m | --gguf FILE --out DIR")
    p.add_argument("name", nargs="?", default="", help="a packaged model (default folder: in the cache, by content)")
    p.add_argument("--gguf", default="", help="a Llama or Qwen2 GGUF file")
    p.add_argument("--out", default="", help="the folder to write")
    p.set_defaults(fn=_import_model)
    _add_data_commands(sub)
    p = sub.add_parser("score", help="re-score saved responses: agentrl score --preset NAME FILE.jsonl")
    p.add_argument("file")
    p.add_argument("--preset", required=True, help="a reward name (mmsearch_r1, general, exact_match) or module:fn")
    p.add_argument("--out", default="", help="write here instead of standard output")
    p.set_defaults(fn=_score)
    p = sub.add_parser("tool", help="list tools, or call one once: agentrl tool NAME --config C --arg K=V")
    p.add_argument("name", nargs="?")
    p.add_argument("--list", action="store_true")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--arg", action="append", default=[], help="query=..., image=FILE, image_url=..., data_id=...")
    p.add_argument("overrides", nargs="*", help="dotted config overrides")
    p.set_defaults(fn=_tool)
    p = sub.add_parser("import-cache", help="convert a pickled FVQA image-search cache to a safe folder")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--trust-pickle", action="store_true",
                   help="the file is trusted: unpickling runs code it contains")
    p.set_defaults(fn=_import_cache)
    p = sub.add_parser("serve-retriever", help="serve a JSONL corpus over the Search-R1 retrieval API")
    p.add_argument("--corpus", default="", help="JSONL {id, title, contents}; default: the demo corpus")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--retrieval", default="bm25", choices=["bm25", "dense"])
    p.add_argument("--max-queries", type=int, default=512, help="queries one request may hold")
    p.add_argument("--max-topk", type=int, default=100, help="the largest topk a request may ask for")
    p.set_defaults(fn=_serve_retriever)
    p = sub.add_parser("check-data", help="validate every row of the configured data: agentrl check-data CONFIG")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.source=FILE data.on_bad_row=skip")
    p.set_defaults(fn=_check_data)


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand; the larger ones live in their own modules (`add_arguments(parser)`, `run(args)`)."""
    parser = _Parser(prog="agentrl", description="Asynchronous agentic RL on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_local_commands(sub)
    for name, module, help_text in _MODULE_COMMANDS:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(fn=mod.run)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    # dotted overrides may follow options (`agentrl tool NAME --arg q=x env.tools=[...]`)
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def _fail(message: str, code: int) -> int:
    print(f"agentrl: {message}", file=sys.stderr)
    return code


def _environment_level() -> str:
    """The level `AGENTRL_LOG_LEVEL` sets (info when unset); a value that is not a level is a user error."""
    try:
        return resolve_level("info")
    except ValueError as e:
        raise UserError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (0, 1 for an actor failure, 2 for a user error)."""
    # Plugins (tools, rewards) named by import path resolve from the current directory, as with `python -m`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        # quiet libraries unless AGENTRL_LOG_LEVEL says debug; a command that reads a config applies its
        # trainer.log_level (resolve_level: the variable wins) and records the level for the actors
        quiet_driver_libraries(_environment_level())
        args = _parse(argv)
        return args.fn(args)
    except UserError as e:
        return _fail("; ".join(line.strip() for line in str(e).splitlines() if line.strip()), EXIT_USER_ERROR)
    except _PATH_ERRORS as e:
        return _fail(f"{e.filename}: {e.strerror}" if e.filename else str(e), EXIT_USER_ERROR)
    except ActorFailure as e:
        return _fail(str(e), EXIT_ACTOR_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
