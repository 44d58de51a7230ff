"""The `agentrl` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys


def _train(args: argparse.Namespace) -> int:
    from agentrl.config import ConfigError, check_plugins, load_config
    from agentrl.data.prompts import DataError

    try:
        cfg = load_config(args.config, args.overrides)
        check_plugins(cfg)
    except (ConfigError, DataError) as e:
        print(f"agentrl: {e}", file=sys.stderr)
        return 2
    from agentrl.training.orchestrator import ActorFailure, train

    try:
        summary = train(cfg)
    except DataError as e:
        print(f"agentrl: {e}", file=sys.stderr)
        return 2
    except ActorFailure as e:
        print(f"agentrl: {e}", file=sys.stderr)
        return 1
    print(f"[agentrl] {summary.steps} steps in {summary.wall_s:.0f}s; prompts admitted {summary.admitted}, "
          f"trained {summary.trained}, dropped as stale {summary.dropped_stale}, failed {sum(summary.failed.values())}")
    print(f"[agentrl] metrics:    {summary.run_dir}/metrics.jsonl")
    print(f"[agentrl] checkpoint: {summary.checkpoint}")
    return 0


def _build_models(args: argparse.Namespace) -> int:
    from agentrl.models.tiny import TINY_NAMES, ensure_model

    for name in args.names or TINY_NAMES:
        print(ensure_model(name, args.cache_dir))
    return 0


def _score(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from agentrl.records import RewardInput
    from agentrl.rewards import get_reward_fn, score_async

    try:
        fn = get_reward_fn(args.preset)
    except ValueError as e:
        print(f"agentrl: {e}", file=sys.stderr)
        return 2

    async def score_all(out) -> int:  # one event loop for all lines: async rewards (judges) keep their sessions
        with open(args.file) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    inp = RewardInput(question=row.get("question", ""), turns=list(row["turns"]), answer=None,
                                      ground_truth=row["ground_truth"],
                                      candidate_answers=list(row.get("candidate_answers") or []))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    print(f"agentrl: {args.file} line {n}: bad row ({type(e).__name__}: {e})", file=sys.stderr)
                    return 2
                try:
                    result = await score_async(fn, inp, dict(row.get("options") or {}))
                except ValueError as e:
                    print(f"agentrl: {args.file} line {n}: {e}", file=sys.stderr)
                    return 2
                out.write(json.dumps({**row, "score": result.total, **result.components}) + "\n")
        return 0

    if not args.out:
        return asyncio.run(score_all(sys.stdout))
    with open(args.out, "w") as out:
        return asyncio.run(score_all(out))


def _tool(args: argparse.Namespace) -> int:
    import asyncio

    from agentrl.config import ConfigError, load_config
    from agentrl.envs.tool import TOOL_REGISTRY, TrajectoryState, load_tool

    if args.list or not args.name:
        load_tool("lookup")  # registers the built-in tools
        for name, cls in sorted(TOOL_REGISTRY.items()):
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            print(f"{name:14s} {doc}")
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
        # a tool of the config's env.tools by its name (plugins too), else any registered tool
        tools = {t.name: t for t in (load_tool(spec, cfg) for spec in cfg.env.tools)}
        tool = tools.get(args.name) or load_tool(args.name, cfg)
    except (ConfigError, ValueError) as e:
        print(f"agentrl: {e}", file=sys.stderr)
        return 2
    kv = dict(a.split("=", 1) for a in args.arg)
    images = [open(kv.pop("image"), "rb").read()] if "image" in kv else []
    state = TrajectoryState(question=kv.pop("question", ""), images=images, data_id=kv.pop("data_id", ""),
                            image_urls=[kv.pop("image_url")] if "image_url" in kv else [])

    async def once() -> int:
        try:
            obs = await tool.run(tool.parse_args(kv.get("query", "")), state)
        except Exception as e:
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
    from agentrl.envs.cache_import import UntrustedPickle, import_pickle

    try:
        n = import_pickle(args.file, args.out, trusted=args.trust_pickle)
    except (UntrustedPickle, ValueError) as e:
        print(f"agentrl: {e}", file=sys.stderr)
        return 2
    print(f"[agentrl] imported {n} cached image searches into {args.out}")
    return 0


def _serve_retriever(args: argparse.Namespace) -> int:
    from agentrl.envs.retriever import serve

    serve(args.corpus, args.host, args.port, args.retrieval)
    return 0


_MODULE_COMMANDS: list[tuple[str, str, str]] = [
    ("bench", "agentrl.bench.async_bench", "benchmarks: agentrl bench async [--quick | --sweep]"),
    ("eval", "agentrl.evaluation.evaluate", "evaluate: agentrl eval CONFIG --data FILE [--workflow direct|rag|on_demand]"),
    ("build-balanced", "agentrl.evaluation.balanced", "label search_free / search_required and write a balanced parquet"),
]


def main(argv: list[str] | None = None) -> int:
    # Plugins (tools, rewards) named by import path resolve from the current directory, as with `python -m`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    parser = argparse.ArgumentParser(prog="agentrl", description="Asynchronous agentic RL on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train: agentrl train CONFIG [key=value ...]")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-5 rollout.n=8")
    p.set_defaults(fn=_train)
    p = sub.add_parser("build-models", help="build the tiny models (no download)")
    p.add_argument("names", nargs="*")
    p.add_argument("--cache-dir", default="")
    p.set_defaults(fn=_build_models)
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
    p.set_defaults(fn=_serve_retriever)
    # Larger commands live in their own modules; each gives add_arguments(parser) and run(args) -> exit code.
    for name, module, help_text in _MODULE_COMMANDS:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(fn=mod.run)
    # dotted overrides may follow options (`agentrl tool NAME --arg q=x env.tools=[...]`)
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
