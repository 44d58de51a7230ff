"""GRPO/DAPO pieces: group advantages, the clipped policy loss, mini-batches, the learning-rate schedules.

Pure functions over tensors, shared by the learner and the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


def group_advantages(rewards: list[float], scale: bool = True, eps: float = 1e-6) -> list[float]:
    """GRPO: reward minus the group mean, divided by the group std when `scale` (Dr.GRPO: not)."""
    r = torch.tensor(rewards, dtype=torch.float64)
    adv = r - r.mean()
    if scale and len(rewards) > 1:
        adv = adv / (r.std(unbiased=True) + eps)
    return adv.tolist()


IMPORTANCE_MODES = ("truncate", "mask")
LR_SCHEDULES = ("sigmoid_decay", "warmup_sigmoid", "constant")


@dataclass
class PolicyLossConfig:
    """The loss terms of `learner.*`: clip range, KL and entropy coefficients, the behaviour correction."""

    clip_low: float = 0.2
    clip_high: float = 0.3
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    importance_cap: float = 2.0
    importance_mode: str = "truncate"  # "truncate": weight min(w, cap); "mask": tokens with w > cap dropped


def policy_loss(
    logprobs: torch.Tensor,
    proximal_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: PolicyLossConfig,
    total_tokens: int,
    entropy: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Decoupled clipped surrogate (AReaL), token-level aggregated (DAPO).

    ratio = pi_theta / pi_proximal is clipped to [1 - clip_low, 1 + clip_high]; the importance weight
    pi_proximal / pi_behaviour corrects for tokens sampled by an older policy version in the
    generators: truncated at `importance_cap` (`importance_mode="truncate"`), or, with "mask", tokens
    whose weight exceeds the cap are left out of the loss (counted in `is_masked_frac`). All tensors are
    [T] over the tokens of a micro-batch; the sum is divided by `total_tokens`, the masked token count of
    the whole optimizer step (its mini-batch), so micro-batches add up to a token-level mean.

    Stats: `clip_frac`, the share of tokens whose clipped term is the one taken (their gradient is 0);
    `is_weight_mean`; `is_masked_frac`; `behaviour_kl` (KL(behaviour || proximal)); `ref_kl` (k3, 0 without one).
    """
    mask = mask.to(logprobs.dtype)
    proximal_logprobs = proximal_logprobs.detach()
    # NaN marks tokens sampled under a decoding constraint (env.turn_regex): vLLM's log-probs there are
    # of the constrained distribution, which the learner cannot recompute, so they count as on-policy.
    behaviour_logprobs = torch.where(torch.isnan(behaviour_logprobs), proximal_logprobs, behaviour_logprobs)
    ratio = torch.exp(logprobs - proximal_logprobs)
    clipped = torch.clamp(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    raw_weight = torch.exp(proximal_logprobs - behaviour_logprobs)
    dropped = torch.zeros_like(mask)
    if cfg.importance_mode == "mask":
        dropped = (raw_weight > cfg.importance_cap).to(mask.dtype) * mask
        is_weight = torch.where(dropped > 0, torch.zeros_like(raw_weight), raw_weight)
    else:
        is_weight = raw_weight.clamp(max=cfg.importance_cap)
    per_token = -is_weight * surrogate
    ref_kl = torch.zeros_like(per_token)
    if cfg.kl_coef > 0 and ref_logprobs is not None:
        # k3, the low-variance non-negative KL estimator
        log_ratio = ref_logprobs.detach() - logprobs
        ref_kl = torch.exp(log_ratio) - log_ratio - 1.0
        per_token = per_token + cfg.kl_coef * ref_kl
    if cfg.entropy_coef > 0 and entropy is not None:
        per_token = per_token - cfg.entropy_coef * entropy
    # a dropped token leaves the loss altogether (KL and entropy terms too), as in AReaL's mask
    loss = (per_token * (mask - dropped)).sum() / max(total_tokens, 1)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        clip_taken = (clipped * advantages < ratio * advantages).to(mask.dtype) * (mask - dropped)
        stats = {
            "clip_frac": float(clip_taken.sum() / n),
            "is_weight_mean": float((is_weight * mask).sum() / n),
            "is_masked_frac": float(dropped.sum() / n),
            "behaviour_kl": float((behaviour_kl(proximal_logprobs, behaviour_logprobs) * mask).sum() / n),
            "ref_kl": float((ref_kl.detach() * mask).sum() / n),  # 0 without a KL term
        }
    return loss, stats


def behaviour_kl(proximal_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(mu || pi_prox) from tokens sampled by the behaviour policy mu: k3 with
    r = pi_prox / mu, r - 1 - log r. Unbiased (E_mu[r] = 1) and non-negative token by token; the plain
    mean of log pi_prox - log mu estimates -KL instead."""
    log_r = proximal_logprobs - behaviour_logprobs
    return torch.exp(log_r) - 1.0 - log_r


def split_evenly(items: list[Any], parts: int) -> list[list[Any]]:
    """Consecutive chunks of nearly equal size (the larger first); fewer when there are fewer items."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float,
          steepness: float = 10.0) -> float:
    """`warmup_sigmoid`: sigmoid warm-up from 0 to the base rate, then a sigmoid decay to min_ratio * base."""

    def s_curve(x: float) -> float:  # 0 -> 0, 1 -> 1, S-shaped, normalised
        lo, hi = 1 / (1 + math.exp(steepness / 2)), 1 / (1 + math.exp(-steepness / 2))
        return (1 / (1 + math.exp(-steepness * (x - 0.5))) - lo) / (hi - lo)

    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * s_curve((step + 1) / warmup_steps)
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / decay_steps, 0.0), 1.0)
    return base_lr * (1.0 - (1.0 - min_ratio) * s_curve(progress))


def sigmoid_decay_lr(step: int, base_lr: float, warmup_steps: int, min_ratio: float) -> float:
    """`sigmoid_decay`, the seed's original schedule, at learner step `step` (from 0):

    base_lr * ((1 - f) / (1 + exp((step - W) / (0.1 * W))) + f), W = warmup_steps, f = min_ratio.
    It starts at about the full rate and falls to f * base_lr after about W steps. W = 0 is the limit
    W -> 0: the decay is over before the first step, so the rate is f * base_lr throughout.
    """
    if warmup_steps <= 0:
        return base_lr * min_ratio
    x = (step - warmup_steps) / (0.1 * warmup_steps)
    # 1 / (1 + e^x) without overflow for large x
    s = math.exp(-x) / (1.0 + math.exp(-x)) if x >= 0 else 1.0 / (1.0 + math.exp(x))
    return base_lr * ((1.0 - min_ratio) * s + min_ratio)


def scheduled_lr(schedule: str, step: int, base_lr: float, warmup_steps: int, total_steps: int,
                 min_ratio: float) -> float:
    """The rate of learner step `step` (from 0) under `learner.lr_schedule`. The clock is the learner step,
    as the seed's scheduler (veRL steps it once per training step): every mini-batch and epoch of one
    step trains at the same rate."""
    if schedule == "sigmoid_decay":
        return sigmoid_decay_lr(step, base_lr, warmup_steps, min_ratio)
    if schedule == "warmup_sigmoid":
        return lr_at(step, base_lr, warmup_steps, total_steps, min_ratio)
    if schedule == "constant":
        return base_lr
    raise ValueError(f"unknown learner.lr_schedule '{schedule}' (one of {', '.join(LR_SCHEDULES)})")
