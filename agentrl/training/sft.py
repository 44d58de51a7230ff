"""`agentrl sft`: supervised fine-tuning on trajectory JSONL (`agentrl.data.trajectories`) with the learner's
DeepSpeed engine: the toy task's warm start (`agentrl make-toy` writes `sft.jsonl`), or the seed's SFT
baseline on distilled trajectories.

    agentrl sft CONFIG --data FILE.jsonl [--out DIR] [key=value ...]

Each trajectory is tokenised as the agent loop builds an RL sequence (`agentrl.envs.agent_loop`): the
prompt by `initial_prompt` (the `env.protocol`'s system prompt and the question, in the model's chat
template), a model turn's text as the model's tokens (loss mask 1), an observation with `ChatFormat`'s
turn markers (loss mask 0). The learner (built by `agentrl.actors.factory.create_learner`) takes one
optimizer step per `sft.batch_size` trajectories (`LearnerGroup.sft_step`: the masked token-mean
cross-entropy, micro-batched by `learner.micro_batch_tokens`) at the constant rate `sft.lr`, for
`sft.epochs` passes over the file in a seeded order (`sft.seed`). Each step is a line of
`RUN/sft_metrics.jsonl` (RUN = `trainer.output_dir/trainer.run_name`); the model is saved in Hugging Face
format (loadable by transformers and vLLM) to `--out`, else `sft.out`, else `RUN/checkpoints/sft`.

With `sft.data` set, `agentrl train` runs the same fine-tuning first (`warm_start`) and starts RL from its
checkpoint, which is kept under the cache root by content (data, SFT settings, model), so a second run
with the same inputs starts at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch, Ray and omegaconf load with the command, not with every CLI command
    from agentrl.config import Config
    from agentrl.data.trajectories import Demonstration
    from agentrl.records import Trajectory


STEPS_AHEAD = 4


@dataclass
class SftSummary:
    """What a fine-tuning run did: its steps' losses (masked mean NLL before each step) and the checkpoint."""

    steps: int
    epochs: int
    trajectories: int
    losses: list[float] = field(default_factory=list)
    checkpoint: str = ""

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_epoch_loss(self) -> float:
        """The mean loss of the last epoch's steps."""
        last = self.losses[-max(1, self.steps // self.epochs):]
        return sum(last) / len(last) if last else math.nan


def tokenise(demos: list[Demonstration], cfg: Config, model_path: str) -> list[Trajectory]:
    """The demonstrations as learner sequences, token for token as the agent loop would build them."""
    from transformers import AutoTokenizer

    from agentrl.envs.agent_loop import RolloutContext, initial_prompt
    from agentrl.envs.chat_format import ChatFormat
    from agentrl.envs.protocol import get_protocol
    from agentrl.models import get_adapter
    from agentrl.records import DataRow, SamplingConfig, Trajectory

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    protocol = get_protocol(cfg.env.protocol, dict(cfg.env.tool_tags), cfg.env.system_prompt)
    ctx = RolloutContext(chat=ChatFormat(tokenizer), protocol=protocol,
                         tools={}, env=cfg.env, sampling=SamplingConfig(max_tokens=cfg.env.max_tokens_per_turn),
                         eos_token_id=tokenizer.eos_token_id, adapter=get_adapter(model_path, cfg.model.vision))
    out = []
    for demo in demos:
        prompt, _ = initial_prompt(DataRow(row_id=demo.row, question=demo.question, ground_truth=[]), ctx)
        traj = Trajectory(f"sft-{demo.row}", f"sft-{demo.row}", demo.row, prompt)
        ended = False
        for role, text in demo.turns:
            if role == "model":
                ids = ctx.chat.encode_text(text)
                traj.append(ids, trainable=True)
                ended = bool(ids) and ids[-1] == ctx.eos_token_id  # as the agent loop decides it
            else:
                traj.append(ctx.chat.observation_ids(text, ended), trainable=False)
        out.append(traj)
    return out


def checkpoint_dir(cfg: Config, out: str = "") -> str:
    """Where the fine-tuned model goes: `out`, else `sft.out`, else RUN/checkpoints/sft."""
    t = cfg.trainer
    return os.path.abspath(out or cfg.sft.out or os.path.join(t.output_dir, t.run_name, "checkpoints", "sft"))


def batches(trajs: list[Any], cfg: Config) -> list[list[Any]]:
    """`sft.epochs` passes over the trajectories in a seeded order, cut into `sft.batch_size` batches."""
    rng, out, size = random.Random(cfg.sft.seed), [], cfg.sft.batch_size
    for _ in range(cfg.sft.epochs):
        order = rng.sample(trajs, len(trajs))
        out += [order[i:i + size] for i in range(0, len(order), size)]
    return out


async def _train(cfg: Config, trajs: list[Trajectory], model_path: str, out: str) -> SftSummary:
    import ray

    from agentrl.actors.factory import create_learner, guarded

    steps = batches(trajs, cfg)
    # the learner's engine and settings, at the constant SFT rate; no reference model (no KL term)
    learner_cfg = dataclasses.replace(cfg.learner, lr=cfg.sft.lr, lr_schedule="constant", kl_coef=0.0,
                                      cpu_threads=cfg.learner.cpu_threads or os.cpu_count() or 1)  # alone: every core
    learner = create_learner(dataclasses.replace(cfg, learner=learner_cfg), model_path, len(steps), name=None)
    run_dir = os.path.join(cfg.trainer.output_dir, cfg.trainer.run_name)
    os.makedirs(run_dir, exist_ok=True)
    summary = SftSummary(len(steps), cfg.sft.epochs, len(trajs))
    per_epoch = len(steps) // cfg.sft.epochs
    # a few steps submitted ahead: the learner runs them in order (a sync actor) while the driver ships the next
    ahead = [learner.sft_step.remote(b) for b in steps[:STEPS_AHEAD]]
    try:
        with open(os.path.join(run_dir, "sft_metrics.jsonl"), "w") as metrics:
            for i in range(len(steps)):
                stats = await guarded(ahead.pop(0))
                if i + STEPS_AHEAD < len(steps):
                    ahead.append(learner.sft_step.remote(steps[i + STEPS_AHEAD]))
                summary.losses.append(stats.loss)
                metrics.write(json.dumps({"step": stats.step, "epoch": i // per_epoch, "loss": stats.loss,
                                          "grad_norm": stats.grad_norm, "lr": stats.lr, "tokens": stats.tokens,
                                          "samples": stats.samples, "train_s": stats.train_s}) + "\n")
                metrics.flush()
        summary.checkpoint = await guarded(learner.save_pretrained.remote(out))
    finally:
        ray.kill(learner)
    return summary


def warm_start_key(cfg: Config, data: str, model_path: str) -> str:
    """What a warm start depends on: the data's bytes, the SFT settings, the model, how turns tokenise."""
    import hashlib

    h = hashlib.sha256()
    with open(data, "rb") as f:
        h.update(f.read())
    sft = {k: v for k, v in dataclasses.asdict(cfg.sft).items() if k not in ("out", "data")}
    learner = {k: getattr(cfg.learner, k) for k in ("micro_batch_tokens", "zero_stage", "grad_clip",
                                                    "weight_decay")}
    env = {k: getattr(cfg.env, k) for k in ("protocol", "system_prompt", "tool_tags", "max_tokens_per_turn")}
    h.update(json.dumps([sft, learner, env, model_path, cfg.model.dtype], sort_keys=True).encode())
    return h.hexdigest()[:16]


def warm_start(cfg: Config) -> Config:
    """`cfg` with `model.path` replaced by `model.path` fine-tuned on `sft.data` (nothing to do without
    `sft.data`). Built once under a file lock in `<cache root>/warm_starts/<key>` and reused; the caller
    has connected to Ray."""
    import asyncio
    import fcntl
    import shutil

    from agentrl.data.trajectories import read_demonstrations
    from agentrl.models.tiny import ensure_model
    from agentrl.paths import cache_root

    if not cfg.sft.data:
        return cfg
    model_path = os.path.abspath(ensure_model(cfg.model.path, cfg.model.cache_dir))
    root = cache_root() / "warm_starts"
    root.mkdir(parents=True, exist_ok=True)
    out = root / warm_start_key(cfg, cfg.sft.data, model_path)
    with open(f"{out}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs with the same warm start build it once
        if (out / "config.json").exists():
            print(f"[agentrl] warm start: {out} (cached; fine-tuned on {cfg.sft.data})", flush=True)
        else:
            demos = read_demonstrations(cfg.sft.data)
            print(f"[agentrl] warm start: fine-tuning {cfg.model.path} on {len(demos)} trajectories of {cfg.sft.data} "
                 f"for {cfg.sft.epochs} epochs (once; cached in {out})", flush=True)
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)  # left by a run that was stopped while fine-tuning
            s = asyncio.run(_train(cfg, tokenise(demos, cfg, model_path), model_path, str(tmp)))
            tmp.rename(out)
            print(f"[agentrl] warm start: loss {s.first_loss:.3f} -> {s.last_epoch_loss:.3f}", flush=True)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=str(out)))


def run_sft(cfg: Config, data: str, out: str = "") -> SftSummary:
    """Fine-tune `model.path` on the trajectories of `data`; joins RAY_ADDRESS or starts a local cluster
    (and stops it). A bad row is a UserError naming the file, the row and the field, before anything starts."""
    import asyncio

    import ray

    from agentrl.actors.factory import connect_ray
    from agentrl.data.trajectories import read_demonstrations
    from agentrl.models.tiny import ensure_model

    demos = read_demonstrations(data)
    model_path = os.path.abspath(ensure_model(cfg.model.path, cfg.model.cache_dir))
    trajs = tokenise(demos, cfg, model_path)
    started_here = connect_ray()
    try:
        return asyncio.run(_train(cfg, trajs, model_path, checkpoint_dir(cfg, out)))
    finally:
        if started_here:
            ray.shutdown()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    parser.add_argument("config", help="a run config (model, env.protocol, learner, sft)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.epochs=5 sft.lr=1e-4")
    parser.add_argument("--data", required=True, help="trajectory JSONL (agentrl make-toy writes DIR/sft.jsonl)")
    parser.add_argument("--out", default="", help="the checkpoint folder (default: sft.out, else "
                                                  "RUN/checkpoints/sft)")


def run(args: argparse.Namespace) -> int:
    """`agentrl sft`: fine-tune, print one line, exit 0."""
    from agentrl.config import load_config
    from agentrl.console import configure_driver_logging, resolve_level

    cfg = load_config(args.config, args.overrides)
    configure_driver_logging(resolve_level(cfg.trainer.log_level))
    s = run_sft(cfg, args.data, args.out)
    print(f"[agentrl] sft: {s.steps} steps on {s.trajectories} trajectories, loss {s.first_loss:.3f} -> "
          f"{s.last_epoch_loss:.3f}; checkpoint: {s.checkpoint}")
    return 0
