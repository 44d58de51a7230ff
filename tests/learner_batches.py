"""A real batch for learner tests: tokenised trajectories of the tiny model with behaviour log-probs near
the learner's own."""

from __future__ import annotations

import random
from typing import Any

import ray

from agentrl.data.synthetic import synthetic_rows
from agentrl.records import RewardResult, TrainBatch, Trajectory, TrajectoryGroup


def real_batch(path: str, learner: Any, groups: int, n: int) -> TrainBatch:
    """Tokenised trajectories of the tiny model (model turn, observation with mask 0, model turn), with
    behaviour log-probs near the learner's own (as if sampled by a slightly older policy) and rewards
    that differ inside every group."""
    from transformers import AutoTokenizer

    from agentrl.envs.chat_format import ChatFormat

    chat, rng = ChatFormat(AutoTokenizer.from_pretrained(path)), random.Random(0)
    out = []
    for g, row in enumerate(synthetic_rows(groups)):
        trajs = []
        for k in range(n):
            t = Trajectory(f"g{g}-{k}", f"g{g}", row.row_id, chat.prompt_ids("Answer.", row.question))
            t.append(chat.encode(f"<reason>look up {row.question[:12]}</reason><search>x{k}</search>"), trainable=True)
            t.append(chat.observation_ids("<information>nothing</information>", False), trainable=False)
            t.append(chat.encode(f"<answer>{rng.choice(['lilac', 'teal', 'amber'])}</answer>"), trainable=True)
            t.reward = RewardResult(float(k % 2))
            trajs.append(t)
        out.append(TrajectoryGroup(f"g{g}", 0, trajs))
    trajs = [t for g in out for t in g.trajectories]
    for t, lps in zip(trajs, ray.get(learner.compute_logprobs.remote(trajs)), strict=True):
        t.behaviour_logprobs = [lp + rng.uniform(-0.3, 0.3) if m else 0.0
                                for lp, m in zip(lps, t.loss_mask, strict=True)]
        t.policy_versions = [0 if m else -1 for m in t.loss_mask]
    return TrainBatch(groups=out)
