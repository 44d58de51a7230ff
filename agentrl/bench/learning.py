"""`agentrl bench learning [--ablate-penalty]`: does RL teach a policy *when* to search? The seeds' findings
at CPU scale, on the toy knowledge task (`agentrl.data.toy`).

1. `agentrl make-toy` into WORK/toy (`--seed`, `--entities`, `--train-unknown`);
2. the warm start: SFT on WORK/toy/sft.jsonl (`agentrl.training.sft.warm_start`, cached);
3. the eval *before*: the warm start on the held-out questions (`trainer.eval_workflow`, `trainer.eval_samples`
   samples per row at `rollout.temperature`);
4. GRPO with the `mmsearch_r1` reward (configs/learn_toy.yaml), evaluated on the held-out questions every
   `trainer.eval_every` steps; the last of those evals is the *after*.

Writes `bench/learning.json` (`before` and `after`: per category `accuracy` and `search_ratio`; `checkpoint`:
the trained model's folder; the curves per step) and `docs/bench_learning.png` (reward, accuracy and search
ratio per category over the steps). `--ablate-penalty` sets the search penalty to 0 and writes
`bench/learning_ablation.json` and `docs/bench_learning_ablation.png` (the seed's Finding 5: without the
penalty the policy searches on questions it could answer directly).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

from agentrl.errors import UserError

CATEGORIES = ("search_free", "search_required")
METRICS = ("accuracy", "search_ratio")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("--config", default="configs/learn_toy.yaml", help="the run (model, RL, SFT, eval)")
    parser.add_argument("--ablate-penalty", action="store_true", help="search penalty 0 (reward.options)")
    parser.add_argument("--seed", type=int, default=0, help="the toy task's seed")
    parser.add_argument("--entities", type=int, default=48, help="the toy task's entities")
    parser.add_argument("--train-unknown", type=int, default=400,
                        help="more unknown entities asked in training only (agentrl make-toy --train-unknown)")
    parser.add_argument("--search-rate", type=float, default=None,
                        help="the share of warm-start demonstrations that search (agentrl make-toy --search-rate)")
    parser.add_argument("--work", default="", help="where the task and the run go (default runs/bench_learning"
                                                   "[_ablation])")
    parser.add_argument("--out", default="", help="the JSON (default bench/learning[_ablation].json)")
    parser.add_argument("--plot", default="", help="the PNG (default docs/bench_learning[_ablation].png)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. trainer.total_steps=40")


def by_category(summary: Any) -> dict[str, dict[str, float]]:
    """{category: {accuracy, search_ratio, items}} of an EvalSummary."""
    return {c: {"accuracy": m.accuracy, "search_ratio": m.search_ratio, "items": m.items}
            for c, m in summary.by_category.items()}


def curves(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per step: reward; per eval step: accuracy and search ratio of each category."""
    out: dict[str, list[Any]] = {"step": [r["step"] for r in rows], "reward_mean": [r["reward_mean"] for r in rows]}
    evals = [r for r in rows if f"eval/{CATEGORIES[0]}/accuracy" in r]
    out["eval_step"] = [r["step"] for r in evals]
    for c in CATEGORIES:
        for m in METRICS:
            out[f"{c}/{m}"] = [r.get(f"eval/{c}/{m}") for r in evals]
    return out


def plot(result: dict[str, Any], path: str) -> None:
    """Reward per step, and accuracy and search ratio per category at step 0 (before) and each eval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["curves"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(c["step"], c["reward_mean"])
    axes[0].set_title("reward (mean per step)")
    for ax, m in zip(axes[1:], METRICS, strict=True):
        for cat in CATEGORIES:
            ax.plot([0, *c["eval_step"]], [result["before"][cat][m], *c[f"{cat}/{m}"]], marker="o", label=cat)
        ax.set_title(f"held-out {m.replace('_', ' ')}")
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
    for ax in axes:
        ax.set_xlabel("step")
    fig.suptitle(result["setup"]["command"])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _config(args: argparse.Namespace, toy: str, work: str) -> Any:
    from agentrl.config import load_config

    paths = [f"data.source={toy}/train.parquet", f"tools.text_search.corpus={toy}/corpus.jsonl",
             f"trainer.eval_data={toy}/heldout.parquet", f"sft.data={toy}/sft.jsonl",
             f"trainer.output_dir={work}", "trainer.run_name=rl"]
    ablation = ["reward.options.search_penalty=0.0"] if args.ablate_penalty else []
    cfg = load_config(args.config, [*paths, *args.overrides, *ablation])
    if not cfg.trainer.eval_every or cfg.trainer.total_steps % cfg.trainer.eval_every:
        raise UserError("trainer.eval_every must divide trainer.total_steps (the last eval is the 'after')")
    return cfg


def _evaluate_before(cfg: Any, out_dir: str) -> Any:
    """The warm start on the held-out questions, as the run's periodic eval will evaluate later steps."""
    from agentrl.evaluation.evaluate import periodic_eval, run_with_actors
    from agentrl.evaluation.summary import EvalSummary

    async def work(groups: Any) -> None:
        await periodic_eval(groups.envs, cfg, out_dir)

    run_with_actors(cfg, work)
    return EvalSummary.load(os.path.join(out_dir, "summary.json"))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; returns 0. Raises UserError (bad input) or ActorFailure (an actor died)."""
    import ray

    from agentrl.actors.factory import connect_ray
    from agentrl.data.toy import SEARCH_RATE, write_toy
    from agentrl.evaluation.summary import EvalSummary
    from agentrl.training.orchestrator import train
    from agentrl.training.sft import warm_start

    name = "learning_ablation" if args.ablate_penalty else "learning"
    work = os.path.abspath(args.work or os.path.join("runs", f"bench_{name}"))
    out = args.out or os.path.join("bench", f"{name}.json")
    toy = os.path.join(work, "toy")
    try:
        rate = SEARCH_RATE if args.search_rate is None else args.search_rate
        write_toy(toy, args.seed, args.entities, train_unknown=args.train_unknown, search_rate=rate)
    except ValueError as e:
        raise UserError(f"bench learning: {e}") from None
    cfg = _config(args, toy, work)
    t0 = time.perf_counter()
    started_here = connect_ray()
    try:
        cfg = warm_start(cfg)
        t_sft = time.perf_counter() - t0
        before = _evaluate_before(cfg, os.path.join(work, "rl", "eval", "step_0"))
        summary = train(dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, data="")))
    finally:
        if started_here:
            ray.shutdown()
    run_dir = summary.run_dir
    after = EvalSummary.load(os.path.join(run_dir, "eval", f"step_{cfg.trainer.total_steps}", "summary.json"))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    result = {"before": by_category(before), "after": by_category(after), "checkpoint": summary.checkpoint,
              "warm_start": cfg.model.path, "curves": curves(rows),
              "setup": {"command": "agentrl bench learning " + " ".join(sys.argv[3:]).strip(),
                        "toy": {"seed": args.seed, "entities": args.entities,
                                "train_unknown": args.train_unknown, "search_rate": rate,
                                "dir": toy},
                        "search_penalty": 0.0 if args.ablate_penalty else
                        float(cfg.reward.options.get("search_penalty", 0.1)),
                        "steps": cfg.trainer.total_steps, "eval_samples": cfg.trainer.eval_samples,
                        "warm_start_s": t_sft, "wall_s": time.perf_counter() - t0, "rl_wall_s": summary.wall_s,
                        "config": dataclasses.asdict(cfg)}}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    png = args.plot or os.path.join("docs", f"bench_{name}.png")
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    plot(result, png)
    for when in ("before", "after"):
        cells = ", ".join(f"{c}: accuracy {m['accuracy']:.2f} search {m['search_ratio']:.2f}"
                          for c, m in result[when].items())
        print(f"[bench] {when:6s} {cells}")
    print(f"[bench] {result['setup']['wall_s'] / 60:.1f} min; wrote {out} and {png}")
    return 0
