"""The learner's update on a real batch (DeepSpeed, the tiny model): mini-batches make clip-higher bite,
clipped tokens move nothing, one update per step is the plain GRPO/DAPO step, and the lr in the metrics
is the one the update used."""

from __future__ import annotations

import math

import pytest
import ray

from agentrl.actors.factory import create_learner
from agentrl.algorithms import group_advantages, sigmoid_decay_lr
from agentrl.config import load_config
from agentrl.records import TrainBatch
from tests.learner_batches import real_batch

pytestmark = pytest.mark.slow

GROUPS, N = 8, 2


def learner_for(path: str, *overrides: str):
    cfg = load_config("configs/demo.yaml", [f"rollout.n={N}", *overrides])
    return cfg, create_learner(cfg, path, total_steps=10, name=None)


def token_advantages(batch: TrainBatch) -> list[list[float]]:
    return [[adv] * len(t.loss_mask) for g in batch.groups
            for t, adv in zip(g.trajectories, group_advantages(g.rewards), strict=True)]


def test_mini_batches_clip_and_clipped_tokens_get_no_gradient(cluster, tiny_text_path):
    cfg, learner = learner_for(tiny_text_path, "learner.mini_batches=4", "learner.lr=1e-2")
    batch = real_batch(tiny_text_path, learner, GROUPS, N)
    trajs = [t for g in batch.groups for t in g.trajectories]
    proximal = ray.get(learner.compute_logprobs.remote(trajs))  # the policy at the start of the step
    stats = ray.get(learner.train_step.remote(batch))
    assert stats.extra["clip_frac"] > 0  # later mini-batches see a moved policy: the ratio leaves [0.8, 1.3]
    lc = cfg.learner
    assert stats.lr == pytest.approx(sigmoid_decay_lr(0, lc.lr, lc.warmup_steps, lc.min_lr_ratio))

    # after the step, against the same proximal policy: which tokens does the loss still move?
    current = ray.get(learner.compute_logprobs.remote(trajs))
    grads = ray.get(learner.token_gradients.remote(batch, proximal))
    clipped = free = 0
    for t, cur, prox, grad, advs in zip(trajs, current, proximal, grads, token_advantages(batch), strict=True):
        for c, p, gr, a, m in zip(cur, prox, grad, advs, t.loss_mask, strict=True):
            ratio = math.exp(c - p)
            if not m or a == 0:
                assert gr == 0.0
            elif (a > 0 and ratio > 1 + lc.clip_high + 1e-4) or (a < 0 and ratio < 1 - lc.clip_low - 1e-4):
                assert gr == 0.0  # the clipped term is taken: no gradient
                clipped += 1
            elif 1 - lc.clip_low + 1e-4 < ratio < 1 + lc.clip_high - 1e-4:
                assert gr != 0.0
                free += 1
    assert clipped > 0 and free > 0

    # the schedule's clock is the learner step, as the seed's (veRL steps its scheduler once per training
    # step): the second step's four optimizer steps train at the rate of step 1, not of optimizer step 4
    second = ray.get(learner.train_step.remote(batch)).lr
    assert second == pytest.approx(sigmoid_decay_lr(1, lc.lr, lc.warmup_steps, lc.min_lr_ratio))
    assert second != pytest.approx(sigmoid_decay_lr(4, lc.lr, lc.warmup_steps, lc.min_lr_ratio))
    ray.kill(learner)


def test_one_mini_batch_and_one_epoch_is_the_plain_step(cluster, tiny_text_path):
    """mini_batches=1, epochs=1: proximal = current (ratio 1), so the loss is -sum(w * A) / tokens with
    w = min(pi / behaviour, cap), and the gradient is that formula's."""
    import torch
    from transformers import AutoModelForCausalLM

    from agentrl.algorithms import PolicyLossConfig, policy_loss

    cfg, learner = learner_for(tiny_text_path)
    batch = real_batch(tiny_text_path, learner, GROUPS, N)
    trajs = [t for g in batch.groups for t in g.trajectories]
    before = ray.get(learner.compute_logprobs.remote(trajs))
    stats = ray.get(learner.train_step.remote(batch))
    num = den = 0.0
    for t, lps, advs in zip(trajs, before, token_advantages(batch), strict=True):
        for lp, b, a, m in zip(lps, t.behaviour_logprobs, advs, t.loss_mask, strict=True):
            num += m * -min(math.exp(lp - b), cfg.learner.importance_cap) * a
            den += m
    assert stats.loss == pytest.approx(num / den, rel=1e-4, abs=1e-7)
    assert stats.extra["clip_frac"] == 0.0

    # the same formula by hand on the Hugging Face model: the same gradient norm as the learner's step
    model = AutoModelForCausalLM.from_pretrained(tiny_text_path, dtype=torch.float32)
    loss_cfg = PolicyLossConfig(importance_cap=cfg.learner.importance_cap)
    for t, advs in zip(trajs, token_advantages(batch), strict=True):
        ids = torch.tensor([t.prompt_ids + t.response_ids])
        logits = model(ids).logits[0, len(t.prompt_ids) - 1:-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(t.response_ids)[:, None])[:, 0]
        loss, _ = policy_loss(lp, lp.detach(), torch.tensor(t.behaviour_logprobs), torch.tensor(advs),
                              torch.tensor(t.loss_mask), loss_cfg, total_tokens=int(den))
        loss.backward()
    norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters() if p.grad is not None))
    assert stats.grad_norm == pytest.approx(norm, rel=1e-3)
    ray.kill(learner)

