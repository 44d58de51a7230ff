"""The `agentrl` command line."""

from __future__ import annotations

import argparse
import os
import sys


def _train(args: argparse.Namespace) -> int:
    from agentrl.config import ConfigError, check_plugins, load_config

    try:
        cfg = load_config(args.config, args.overrides)
        check_plugins(cfg)
    except ConfigError as e:
        print(f"agentrl: {e}", file=sys.stderr)
        return 2
    from agentrl.orchestrator import ActorFailure, train

    try:
        summary = train(cfg)
    except ActorFailure as e:
        print(f"agentrl: {e}", file=sys.stderr)
        return 1
    print(f"[agentrl] {summary.steps} steps in {summary.wall_s:.0f}s; prompts admitted {summary.admitted}, "
          f"trained {summary.trained}, dropped as stale {summary.dropped_stale}, failed {sum(summary.failed.values())}")
    print(f"[agentrl] metrics:    {summary.run_dir}/metrics.jsonl")
    print(f"[agentrl] checkpoint: {summary.checkpoint}")
    return 0


def _build_models(args: argparse.Namespace) -> int:
    from agentrl.tiny_models import TINY_NAMES, ensure_model

    for name in args.names or TINY_NAMES:
        print(ensure_model(name, args.cache_dir))
    return 0


def _score(args: argparse.Namespace) -> int:
    import json

    from agentrl.rewards import RewardInput, get_reward_fn

    try:
        fn = get_reward_fn(args.preset)
    except ValueError as e:
        print(f"agentrl: {e}", file=sys.stderr)
        return 2
    out = open(args.out, "w") if args.out else sys.stdout
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
            result = fn(inp, dict(row.get("options") or {}))
            out.write(json.dumps({**row, "score": result.total, **result.components}) + "\n")
    if args.out:
        out.close()
    return 0


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
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
