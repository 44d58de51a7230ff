"""GRPO advantages, the clipped decoupled loss, and the seed's learning-rate schedule."""

import math

import pytest
import torch

from agentrl.algorithms import PolicyLossConfig, group_advantages, lr_at, policy_loss


def test_group_advantages_are_centred_and_scaled():
    adv = group_advantages([1.0, 0.0, 0.0, 1.0])
    assert sum(adv) == pytest.approx(0.0)
    assert adv[0] == pytest.approx(-adv[1])
    assert group_advantages([1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]
    assert group_advantages([2.0, 0.0], scale=False) == [1.0, -1.0]


def _loss(logp, prox, behav, adv, cfg=None):
    n = len(logp)
    return policy_loss(torch.tensor(logp, requires_grad=True), torch.tensor(prox), torch.tensor(behav),
                       torch.tensor(adv), torch.ones(n), cfg or PolicyLossConfig(), total_tokens=n)


def test_on_policy_loss_is_minus_mean_advantage():
    loss, _ = _loss([-1.0, -2.0], [-1.0, -2.0], [-1.0, -2.0], [1.0, 3.0])
    assert float(loss) == pytest.approx(-2.0)


def test_clip_higher_bounds_the_ratio_asymmetrically():
    cfg = PolicyLossConfig(clip_low=0.2, clip_high=0.3)
    # ratio = e^1 for a positive advantage: clipped at 1.3
    loss, stats = _loss([0.0], [-1.0], [-1.0], [1.0], cfg)
    assert float(loss) == pytest.approx(-1.3)
    assert stats["clip_frac"] == 1.0
    # ratio = e^-1 for a negative advantage: the pessimistic bound is the clipped 0.8
    loss, _ = _loss([-1.0], [0.0], [0.0], [-1.0], cfg)
    assert float(loss) == pytest.approx(0.8)


def test_importance_weight_corrects_for_the_behaviour_policy_and_is_truncated():
    cfg = PolicyLossConfig(importance_cap=2.0)
    loss, stats = _loss([-1.0], [-1.0], [-1.0 - math.log(1.5)], [1.0], cfg)
    assert float(loss) == pytest.approx(-1.5)
    loss, stats = _loss([-1.0], [-1.0], [-5.0], [1.0], cfg)
    assert float(loss) == pytest.approx(-2.0) and stats["is_weight_mean"] == pytest.approx(2.0)


def test_masked_tokens_do_not_count():
    logp = torch.tensor([-1.0, -1.0], requires_grad=True)
    loss, _ = policy_loss(logp, logp.detach(), logp.detach(), torch.tensor([1.0, 100.0]),
                          torch.tensor([1.0, 0.0]), PolicyLossConfig(), total_tokens=1)
    assert float(loss) == pytest.approx(-1.0)
    loss.backward()
    assert logp.grad.tolist() == [-1.0, 0.0]


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 2e-6, warmup_steps=60, total_steps=300, min_ratio=0.9) for s in range(300)]
    assert lrs[0] < 1e-7 and lrs[59] == pytest.approx(2e-6)
    assert all(b >= a for a, b in zip(lrs[:59], lrs[1:60], strict=True))
    assert all(b <= a + 1e-18 for a, b in zip(lrs[60:-1], lrs[61:], strict=True))
    assert lrs[-1] == pytest.approx(1.8e-6, rel=1e-2)


def test_tokens_sampled_under_a_constraint_count_as_on_policy():
    """NaN behaviour log-probs (constrained turns) give importance weight 1, not a NaN loss."""
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    behaviour = torch.tensor([float("nan"), -2.5])
    loss, stats = policy_loss(logp, logp.detach(), behaviour, torch.tensor([1.0, 1.0]), torch.ones(2),
                              PolicyLossConfig(), total_tokens=2)
    assert torch.isfinite(loss)
    expected = -(1.0 + min(float(torch.exp(torch.tensor(0.5))), 2.0)) / 2
    assert float(loss) == pytest.approx(expected)
