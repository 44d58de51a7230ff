"""GRPO advantages, the clipped decoupled loss, mini-batches, the learning-rate schedules, and the chunked
log-probs."""

import math

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from agentrl.algorithms import (
    PolicyLossConfig,
    behaviour_kl,
    group_advantages,
    lr_at,
    policy_loss,
    scheduled_lr,
    sigmoid_decay_lr,
    split_evenly,
)
from agentrl.logprobs import token_logprobs


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


def test_warmup_sigmoid_warms_up_from_zero_then_decays_to_the_floor():
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


def test_clipped_tokens_get_no_gradient_and_are_counted_in_clip_frac():
    cfg = PolicyLossConfig(clip_low=0.2, clip_high=0.3)
    # ratios e^0.5 (A>0: clipped at 1.3), e^-0.5 (A<0: clipped at 0.8), e^0.1 (inside), e^0.5 with A<0
    # (the unclipped term is the pessimistic one: it keeps its gradient)
    logp = torch.tensor([0.5, -0.5, 0.1, 0.5], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, stats = policy_loss(logp, torch.zeros(4), torch.zeros(4), adv, torch.ones(4), cfg, total_tokens=4)
    loss.backward()
    assert logp.grad[0] == 0.0 and logp.grad[1] == 0.0
    assert logp.grad[2] != 0.0 and logp.grad[3] != 0.0
    assert stats["clip_frac"] == pytest.approx(0.5)


def test_mask_mode_drops_tokens_whose_importance_weight_exceeds_the_cap():
    cfg = PolicyLossConfig(importance_cap=2.0, importance_mode="mask")
    logp = torch.tensor([-1.0, -1.0, -1.0, -1.0], requires_grad=True)
    # weights proximal/behaviour: 1.5 (kept), e^4 (dropped), 1 (kept), NaN behaviour (on-policy, kept)
    behaviour = torch.tensor([-1.0 - math.log(1.5), -5.0, -1.0, float("nan")])
    loss, stats = policy_loss(logp, logp.detach(), behaviour, torch.ones(4), torch.ones(4), cfg, total_tokens=4)
    assert float(loss) == pytest.approx(-(1.5 + 0.0 + 1.0 + 1.0) / 4)  # the denominator keeps every token
    assert stats["is_masked_frac"] == pytest.approx(0.25)
    loss.backward()
    assert logp.grad[1] == 0.0 and all(logp.grad[i] != 0.0 for i in (0, 2, 3))
    truncated, stats = _loss([-1.0], [-1.0], [-5.0], [1.0], PolicyLossConfig(importance_cap=2.0))
    assert float(truncated) == pytest.approx(-2.0) and stats["is_masked_frac"] == 0.0


def test_groups_are_split_into_whole_mini_batches():
    assert split_evenly(list("abcdefghij"), 4) == [list("abc"), list("def"), list("gh"), list("ij")]
    assert split_evenly(list("ab"), 4) == [["a"], ["b"]]  # fewer groups than mini-batches
    assert split_evenly(list("abc"), 1) == [list("abc")]


def test_sigmoid_decay_starts_at_the_full_rate_and_falls_to_the_floor():
    lr, w, f = 1e-5, 10, 0.9
    assert sigmoid_decay_lr(0, lr, w, f) == pytest.approx(lr, rel=1e-4)
    assert sigmoid_decay_lr(w, lr, w, f) == pytest.approx(lr * (f + (1 - f) / 2))
    assert sigmoid_decay_lr(10 * w, lr, w, f) == pytest.approx(f * lr)
    assert sigmoid_decay_lr(10**9, lr, w, f) == pytest.approx(f * lr)  # no overflow
    for t in (0, 3, 10, 12, 17):  # the formula itself
        assert sigmoid_decay_lr(t, lr, w, f) == pytest.approx(lr * ((1 - f) / (1 + math.exp((t - w) / (0.1 * w))) + f))
    lrs = [sigmoid_decay_lr(t, lr, w, f) for t in range(40)]
    assert all(b <= a for a, b in zip(lrs, lrs[1:], strict=False))
    # W = 0: the decay is over before the first step
    assert [sigmoid_decay_lr(t, lr, 0, f) for t in (0, 1, 50)] == [pytest.approx(f * lr)] * 3


def test_each_schedule_by_name():
    assert scheduled_lr("sigmoid_decay", 0, 1.0, 4, 100, 0.5) == sigmoid_decay_lr(0, 1.0, 4, 0.5)
    assert scheduled_lr("warmup_sigmoid", 0, 1.0, 4, 100, 0.5) == lr_at(0, 1.0, 4, 100, 0.5) < 0.1
    assert scheduled_lr("constant", 77, 1.0, 4, 100, 0.5) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        scheduled_lr("cosine", 0, 1.0, 4, 100, 0.5)


def test_behaviour_kl_estimates_kl_of_the_behaviour_to_the_proximal_policy():
    """Tokens sampled from a known behaviour distribution mu: the metric converges to KL(mu || pi_prox),
    which is positive, and is never negative token by token."""
    g = torch.Generator().manual_seed(0)
    mu = torch.softmax(torch.randn(50, generator=g), -1)
    prox = torch.softmax(torch.randn(50, generator=g), -1)
    tokens = torch.multinomial(mu, 200_000, replacement=True, generator=g)
    behaviour, proximal = mu.log()[tokens], prox.log()[tokens]
    n = len(tokens)
    _, stats = policy_loss(proximal.clone(), proximal, behaviour, torch.zeros(n), torch.ones(n), PolicyLossConfig(), n)
    exact = float((mu * (mu.log() - prox.log())).sum())
    assert exact > 0.1
    assert stats["behaviour_kl"] == pytest.approx(exact, rel=0.05)
    assert float(behaviour_kl(proximal, behaviour).min()) >= 0.0


def full_vocab_logprobs(hidden, head, targets, temperature):
    """The learner's former computation: every position's fp32 logits, a scaled copy, a log-softmax copy."""
    logits = head(hidden).float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp_all.gather(-1, targets[:, None])[:, 0], entropy


def test_chunked_logprobs_give_the_full_softmax_loss_and_gradients():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(32, 3000, bias=False)
    hidden = torch.randn(700, 32, generator=g, requires_grad=True)
    targets = torch.randint(0, 3000, (700,), generator=g)
    weights = torch.randn(700, generator=g)
    grads = []
    for fn in (full_vocab_logprobs,
               lambda h, m, t, temp: token_logprobs(h, m.weight, t, temp, True, chunk_bytes=4 * 3000 * 64)):
        head.zero_grad()
        hidden.grad = None
        lp, ent = fn(hidden, head, targets, 0.7)
        ((lp * weights).sum() + 0.1 * ent.sum()).backward()
        grads.append((lp.detach(), ent.detach(), hidden.grad.clone(), head.weight.grad.clone()))
    for ref, new in zip(*grads, strict=True):  # log-probs, entropies, d/d hidden, d/d head weight
        assert float((new - ref).norm() / ref.norm()) <= 1e-5


class PeakTensorBytes(TorchDispatchMode):
    """The peak of the bytes held by tensors that ops create while the mode is on (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[StorageWeakRef, int] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.live.setdefault(StorageWeakRef(t.untyped_storage()), t.untyped_storage().nbytes())
        self.live = {k: n for k, n in self.live.items() if not k.expired()}
        self.peak = max(self.peak, sum(self.live.values()))
        return out


def test_a_150k_vocabulary_micro_batch_of_8k_tokens_needs_under_a_quarter_of_the_full_softmax_memory():
    """Measured on fake tensors (shapes and storage sizes, no data), so the full-softmax side's ~14 GB is
    counted, not allocated: forward and backward of one micro-batch's log-probs and entropies."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    vocab, tokens, hidden_size = 150_000, 8192, 64
    peaks = []
    for fn in (full_vocab_logprobs, lambda h, m, t, temp: token_logprobs(h, m.weight, t, temp, need_entropy=True)):
        with FakeTensorMode():
            head = torch.nn.Linear(hidden_size, vocab, bias=False)
            hidden = torch.randn(tokens, hidden_size, requires_grad=True)
            targets = torch.randint(0, vocab, (tokens,))
            with PeakTensorBytes() as peak:
                lp, ent = fn(hidden, head, targets, 1.0)
                (lp.sum() + ent.sum()).backward()
        peaks.append(peak.peak)
    full, chunked = peaks
    assert full > 3 * tokens * vocab * 4  # at least three fp32 copies of every position's logits
    assert chunked <= full / 4
    print(f"one micro-batch: full softmax {full / 2**30:.2f} GiB, chunked {chunked / 2**30:.2f} GiB")
