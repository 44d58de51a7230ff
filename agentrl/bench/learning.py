"""`agentrl bench learning [--task toy|facts] [--model M] [--ablate-penalty]`: does RL teach a policy *when* to
search? The seeds' findings at CPU scale, on the toy knowledge task (`agentrl.data.toy`, a tiny random model)
or on the real-knowledge task (`agentrl.data.facts`, a pretrained model such as `smollm2-135m`).

1. `agentrl make-toy` into WORK/toy (`--seed`, `--entities`, `--train-unknown`), or `agentrl make-facts` into
   WORK/facts (the base model's knowledge measured once; a later run with the same model, seed and
   temperature reuses the measurement);
2. the warm start: SFT on the task's sft.jsonl (`agentrl.training.sft.warm_start`, cached);
3. GRPO with the `mmsearch_r1` reward (configs/learn_toy.yaml, configs/learn_smollm2.yaml), evaluated on the
   held-out questions at its start (`trainer.eval_before`: the warm start, the *before*) and every
   `trainer.eval_every` steps (the last eval is the *after*), in `trainer.eval_workflow` with
   `trainer.eval_samples` samples per row at `rollout.temperature`;
4. facts: the trained model in each workflow (`workflows`: `direct`, `rag`, `on_demand`) on the held-out
   questions, `trainer.eval_samples` samples per row. The base model's direct accuracy is make-facts'
   measurement (`setup.facts.base_known_rate`: free-form replies; in the protocol's format the base model
   answers nothing, it has never seen the tags).

Writes `bench/learning.json` (facts: `bench/learning_<model family>.json`; `before` and `after`: per category
`accuracy` and `search_ratio`; `checkpoint`: the trained model's folder; the curves per step) and
`docs/bench_learning.png` (reward, accuracy and search ratio per category over the steps). `--ablate-penalty`
sets the search penalty to 0 and writes `bench/learning[_<model family>]_ablation.json` and its plot (the seed's
Finding 5: without the penalty the policy searches on questions it could answer directly).
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
TASK_CONFIGS = {"toy": "configs/learn_toy.yaml", "facts": "configs/learn_smollm2.yaml"}
WORKFLOWS = ("direct", "rag", "on_demand")
METRICS = ("accuracy", "search_ratio")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("--task", default="toy", choices=list(TASK_CONFIGS), help="the knowledge task")
    parser.add_argument("--model", default="", help="model.path (default: the task config's)")
    parser.add_argument("--config", default="", help="the run (model, RL, SFT, eval); default configs/"
                                                     "learn_toy.yaml or, for facts, configs/learn_smollm2.yaml")
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
    """Per step: reward and each category's search ratio in training (`train/<category>/search_ratio`, None
    where a step had none of it); per eval step: held-out accuracy and search ratio of each category."""
    out: dict[str, list[Any]] = {"step": [r["step"] for r in rows], "reward_mean": [r["reward_mean"] for r in rows]}
    for c in CATEGORIES:
        out[f"train/{c}/search_ratio"] = [r.get(f"search_ratio/{c}") for r in rows]
    evals = [r for r in rows if f"eval/{CATEGORIES[0]}/accuracy" in r]
    out["eval_step"] = [r["step"] for r in evals]
    for c in CATEGORIES:
        for m in METRICS:
            out[f"{c}/{m}"] = [r.get(f"eval/{c}/{m}") for r in evals]
    return out


def plot(result: dict[str, Any], path: str) -> None:
    """Reward per step, and accuracy and search ratio per category at step 0 (before) and each eval (the search
    ratio also per training step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["curves"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(c["step"], c["reward_mean"])
    axes[0].set_title("reward (mean per step)")
    for ax, m in zip(axes[1:], METRICS, strict=True):
        for cat in CATEGORIES:
            line = ax.plot([0, *c["eval_step"]], [result["before"][cat][m], *c[f"{cat}/{m}"]], marker="o", label=cat)
            train = c.get(f"train/{cat}/{m}", [])
            if any(v is not None for v in train):  # the training samples' rate per step, faint
                ax.plot(c["step"], train, color=line[0].get_color(), alpha=0.35, label=f"{cat} (training)")
        ax.set_title(f"held-out {m.replace('_', ' ')}")
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
    for ax in axes:
        ax.set_xlabel("step")
    fig.suptitle(result["setup"]["command"])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def bench_name(args: argparse.Namespace) -> str:
    """learning[_ablation] for the toy task; learning_<model family>[_ablation] (e.g. learning_smollm2) for facts."""
    model = os.path.basename((args.model or "smollm2-135m").rstrip("/"))
    name = "learning" if args.task == "toy" else f"learning_{model.split('-')[0]}"
    return f"{name}_ablation" if args.ablate_penalty else name


def _config(args: argparse.Namespace, task: str, work: str) -> Any:
    from agentrl.config import load_config

    paths = [f"data.source={task}/train.parquet", f"tools.text_search.corpus={task}/corpus.jsonl",
             f"trainer.eval_data={task}/heldout.parquet", f"sft.data={task}/sft.jsonl",
             f"trainer.output_dir={work}", "trainer.run_name=rl"] + ([f"model.path={args.model}"] if args.model else [])
    ablation = ["reward.options.search_penalty=0.0"] if args.ablate_penalty else []
    cfg = load_config(args.config or TASK_CONFIGS[args.task], [*paths, *args.overrides, *ablation])
    if not cfg.trainer.eval_every or cfg.trainer.total_steps % cfg.trainer.eval_every:
        raise UserError("trainer.eval_every must divide trainer.total_steps (the last eval is the 'after')")
    if not cfg.trainer.eval_before:
        raise UserError("trainer.eval_before must be true (the first eval is the 'before')")
    return cfg


def _write_task(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """Write the task's files into `task`; returns its settings for the result's `setup`. The facts task is
    measured with the config's model at its sampling temperature."""
    if args.task == "toy":
        from agentrl.data.toy import SEARCH_RATE, write_toy

        rate = SEARCH_RATE if args.search_rate is None else args.search_rate
        try:
            write_toy(task, args.seed, args.entities, train_unknown=args.train_unknown, search_rate=rate)
        except ValueError as e:
            raise UserError(f"bench learning: {e}") from None
        return {"seed": args.seed, "entities": args.entities, "train_unknown": args.train_unknown,
                "search_rate": rate, "dir": task}
    from agentrl.config import load_config
    from agentrl.data.facts import read_measured, real_facts, write_facts
    from agentrl.evaluation.knowledge import measure_known
    from agentrl.models.tiny import ensure_model

    # the model and temperature only: the task's files, which the full check wants, are not written yet
    sampling = [o for o in args.overrides if o.startswith(("model.", "rollout."))]
    cfg = load_config(args.config or TASK_CONFIGS[args.task],
                      [*([f"model.path={args.model}"] if args.model else []), *sampling], check=False)
    model = ensure_model(cfg.model.path, cfg.model.cache_dir)
    old = os.path.join(task, "facts.json")
    measured = None
    if os.path.isfile(old):
        with open(old) as f:
            prev = json.load(f)
        if (prev["model"], prev["seed"], prev["temperature"]) == (model, args.seed, cfg.rollout.temperature):
            measured = read_measured(old)
    if measured is None:
        measured = measure_known(model, real_facts(), cfg.rollout.temperature, seed=args.seed)
    write_facts(task, model, measured, args.seed, cfg.rollout.temperature)
    with open(old) as f:
        facts = json.load(f)
    return {"seed": args.seed, "dir": task, "counts": facts["counts"], "temperature": facts["temperature"],
            "base_known_rate": _base_rate(facts)}


def _base_rate(facts: dict[str, Any]) -> dict[str, float]:
    """The base model's measured rate of right free-form answers on the asked real facts, train and held-out."""
    rates: dict[str, list[float]] = {"train": [], "heldout": []}
    for r in facts["real"]:
        if r["asked"]:
            rates["heldout" if r["heldout"] else "train"].append(r["known_rate"])
    return {k: sum(v) / len(v) for k, v in rates.items() if v}


def _evaluate_workflows(cfg: Any, model: str, workflows: tuple[str, ...], out_dir: str) -> dict[str, Any]:
    """`model` on the held-out questions in each workflow: {workflow: {accuracy, search_ratio, by_category}}."""
    from agentrl.evaluation.evaluate import load_rows, run_eval

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=model))
    rows = load_rows(cfg.trainer.eval_data)
    summaries = run_eval(cfg, rows, cfg.trainer.eval_data, list(workflows), out_dir, n=cfg.trainer.eval_samples,
                         temperature=cfg.rollout.temperature)
    return {wf: {"accuracy": s.overall.accuracy, "search_ratio": s.overall.search_ratio,
                 "by_category": by_category(s)}
            for wf, s in zip(workflows, summaries, strict=True)}


def _train(cfg: Any, work: str, facts: bool) -> tuple[Any, dict[str, Any]]:
    """Warm start, RL (its first eval is the warm start's: `trainer.eval_before`) and (facts) the workflow
    evals; returns the run's summary and extras."""
    from agentrl.training.orchestrator import train
    from agentrl.training.sft import warm_start

    t0 = time.perf_counter()
    extras: dict[str, Any] = {}
    cfg = warm_start(cfg)
    extras["warm_start_s"] = time.perf_counter() - t0
    summary = train(dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, data="")))
    if facts:
        extras["workflows"] = _evaluate_workflows(cfg, summary.checkpoint, WORKFLOWS, os.path.join(work, "workflows"))
    extras["warm_start"] = cfg.model.path
    return summary, extras


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; returns 0. Raises UserError (bad input) or ActorFailure (an actor died)."""
    import ray

    from agentrl.actors.factory import connect_ray
    from agentrl.evaluation.summary import EvalSummary

    name = bench_name(args)
    work = os.path.abspath(args.work or os.path.join("runs", f"bench_{name}"))
    out = args.out or os.path.join("bench", f"{name}.json")
    task = os.path.join(work, args.task)
    t0 = time.perf_counter()
    task_setup = _write_task(args, task)
    cfg = _config(args, task, work)
    started_here = connect_ray()
    try:
        summary, extras = _train(cfg, work, args.task == "facts")
    finally:
        if started_here:
            ray.shutdown()
    run_dir = summary.run_dir
    before, after = (EvalSummary.load(os.path.join(run_dir, "eval", f"step_{s}", "summary.json"))
                     for s in (0, cfg.trainer.total_steps))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    result = {"before": by_category(before), "after": by_category(after), "checkpoint": summary.checkpoint,
              "warm_start": extras.pop("warm_start"), **extras, "curves": curves(rows),
              "setup": {"command": "agentrl bench learning " + " ".join(sys.argv[3:]).strip(),
                        "task": args.task, args.task: task_setup,
                        "search_penalty": 0.0 if args.ablate_penalty else
                        float(cfg.reward.options.get("search_penalty", 0.1)),
                        "steps": cfg.trainer.total_steps, "eval_samples": cfg.trainer.eval_samples,
                        "warm_start_s": extras.get("warm_start_s"), "wall_s": time.perf_counter() - t0,
                        "rl_wall_s": summary.wall_s, "config": dataclasses.asdict(cfg)}}
    result.pop("warm_start_s", None)
    _write(result, out, args.plot or os.path.join("docs", f"bench_{name}.png"))
    return 0


def _write(result: dict[str, Any], out: str, png: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    plot(result, png)
    for when in ("before", "after"):
        cells = ", ".join(f"{c}: accuracy {m['accuracy']:.2f} search {m['search_ratio']:.2f}"
                          for c, m in result[when].items())
        print(f"[bench] {when:6s} {cells}")
    for wf, m in result.get("workflows", {}).items():
        print(f"[bench] {wf:9s} accuracy {m['accuracy']:.2f} search {m['search_ratio']:.2f}")
    print(f"[bench] {result['setup']['wall_s'] / 60:.1f} min; wrote {out} and {png}")
