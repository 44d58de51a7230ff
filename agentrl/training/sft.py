"""`agentrl sft`: supervised fine-tuning on trajectory JSONL (`agentrl.data.trajectories`) with the learner's
DeepSpeed engine: the toy task's warm start (`agentrl make-toy` writes `sft.jsonl`), or the seed's SFT
baseline on distilled trajectories.

    agentrl sft CONFIG --data FILE.jsonl [--out DIR] [key=value ...]

Each trajectory is tokenised as the agent loop builds an RL sequence (`agentrl.envs.agent_loop`): the
prompt by `initial_prompt` (the `env.protocol`'s system prompt and the question, in the model's chat
template), a model turn's text as the model's tokens (loss mask 1), an observation with `ChatFormat`'s
turn markers (loss mask 0). The learner (built by `agentrl.actors.factory.create_learner`) takes one
optimizer step per `sft.batch_size` trajectories (`LearnerActor.sft_step`: the masked token-mean
cross-entropy, micro-batched by `learner.micro_batch_tokens`) at the constant rate `sft.lr`, for
`sft.epochs` passes over the file in a seeded order (`sft.seed`). Each step is a line of
`RUN/sft_metrics.jsonl` (RUN = `trainer.output_dir/trainer.run_name`); the model is saved in Hugging Face
format (loadable by transformers and vLLM) to `--out`, else `sft.out`, else `RUN/checkpoints/sft`.
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

    from agentrl.envs.agent_loop import ChatFormat, RolloutContext, initial_prompt
    from agentrl.envs.protocol import get_protocol
    from agentrl.models import get_adapter
    from agentrl.records import DataRow, SamplingConfig, Trajectory

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ctx = RolloutContext(chat=ChatFormat(tokenizer), protocol=get_protocol(cfg.env.protocol, dict(cfg.env.tool_tags)),
                         tools={}, env=cfg.env, sampling=SamplingConfig(max_tokens=cfg.env.max_tokens_per_turn),
                         eos_token_id=tokenizer.eos_token_id, adapter=get_adapter(model_path, cfg.model.vision))
    out = []
    for demo in demos:
        prompt, _ = initial_prompt(DataRow(row_id=demo.row, question=demo.question, ground_truth=[]), ctx)
        traj = Trajectory(f"sft-{demo.row}", f"sft-{demo.row}", demo.row, prompt)
        ended = False
        for role, text in demo.turns:
            if role == "model":
                ids = ctx.chat.encode(text)
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
    learner_cfg = dataclasses.replace(cfg.learner, lr=cfg.sft.lr, lr_schedule="constant", kl_coef=0.0)
    learner = create_learner(dataclasses.replace(cfg, learner=learner_cfg), model_path, len(steps), name=None)
    run_dir = os.path.join(cfg.trainer.output_dir, cfg.trainer.run_name)
    os.makedirs(run_dir, exist_ok=True)
    summary = SftSummary(len(steps), cfg.sft.epochs, len(trajs))
    per_epoch = len(steps) // cfg.sft.epochs
    try:
        with open(os.path.join(run_dir, "sft_metrics.jsonl"), "w") as metrics:
            for i, batch in enumerate(steps):
                stats = await guarded(learner.sft_step.remote(batch))
                summary.losses.append(stats.loss)
                metrics.write(json.dumps({"step": stats.step, "epoch": i // per_epoch, "loss": stats.loss,
                                          "grad_norm": stats.grad_norm, "lr": stats.lr, "tokens": stats.tokens,
                                          "samples": stats.samples, "train_s": stats.train_s}) + "\n")
                metrics.flush()
        summary.checkpoint = await guarded(learner.save_pretrained.remote(out))
    finally:
        ray.kill(learner)
    return summary


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
