"""GRPO/DAPO pieces: group advantages, the clipped policy loss, the learning-rate schedule.

Pure functions over tensors, shared by the learner and the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def group_advantages(rewards: list[float], scale: bool = True, eps: float = 1e-6) -> list[float]:
    """GRPO: reward minus the group mean, divided by the group std when `scale` (Dr.GRPO: not)."""
    r = torch.tensor(rewards, dtype=torch.float64)
    adv = r - r.mean()
    if scale and len(rewards) > 1:
        adv = adv / (r.std(unbiased=True) + eps)
    return adv.tolist()


@dataclass
class PolicyLossConfig:
    clip_low: float = 0.2
    clip_high: float = 0.3
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    importance_cap: float = 2.0


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
    """Decoupled clipped surrogate, token-level aggregated (DAPO).

    ratio = pi_theta / pi_proximal is clipped to [1 - clip_low, 1 + clip_high]; the importance weight
    pi_proximal / pi_behaviour (truncated at `importance_cap`) corrects for tokens sampled by an older
    policy version in the generators. All tensors are [T] over the tokens of a micro-batch; the sum is
    divided by `total_tokens`, the masked token count of the whole step, so micro-batches add up to a
    token-level mean.
    """
    mask = mask.to(logprobs.dtype)
    # NaN marks tokens sampled under a decoding constraint (env.turn_regex): vLLM's log-probs there are
    # of the constrained distribution, which the learner cannot recompute, so they count as on-policy.
    behaviour_logprobs = torch.where(torch.isnan(behaviour_logprobs), proximal_logprobs.detach(), behaviour_logprobs)
    ratio = torch.exp(logprobs - proximal_logprobs.detach())
    clipped = torch.clamp(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    is_weight = torch.exp(proximal_logprobs - behaviour_logprobs).clamp(max=cfg.importance_cap).detach()
    per_token = -is_weight * surrogate
    if cfg.kl_coef > 0 and ref_logprobs is not None:
        # k3, the low-variance non-negative KL estimator
        log_ratio = ref_logprobs.detach() - logprobs
        per_token = per_token + cfg.kl_coef * (torch.exp(log_ratio) - log_ratio - 1.0)
    if cfg.entropy_coef > 0 and entropy is not None:
        per_token = per_token - cfg.entropy_coef * entropy
    loss = (per_token * mask).sum() / max(total_tokens, 1)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        stats = {
            "clip_frac": float((((ratio - clipped).abs() > 1e-9).to(mask.dtype) * mask).sum() / n),
            "is_weight_mean": float((is_weight * mask).sum() / n),
            "behaviour_kl": float(((proximal_logprobs - behaviour_logprobs) * mask).sum() / n),
        }
    return loss, stats


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float,
          steepness: float = 10.0) -> float:
    """The seed's schedule: sigmoid warm-up to the base rate, then a sigmoid decay to min_ratio * base."""

    def s_curve(x: float) -> float:  # 0 -> 0, 1 -> 1, S-shaped, normalised
        lo, hi = 1 / (1 + math.exp(steepness / 2)), 1 / (1 + math.exp(-steepness / 2))
        return (1 / (1 + math.exp(-steepness * (x - 0.5))) - lo) / (hi - lo)

    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * s_curve((step + 1) / warmup_steps)
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / decay_steps, 0.0), 1.0)
    return base_lr * (1.0 - (1.0 - min_ratio) * s_curve(progress))
