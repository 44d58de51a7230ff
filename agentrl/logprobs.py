"""Token log-probs and entropies through the output head without full-vocabulary logits.

The learner needs, at each response position, log p(token) under logits = hidden @ W^T / temperature
(and the entropy of that distribution). Computed plainly, that is [tokens, vocabulary] fp32 logits for the
whole micro-batch, then a scaled copy and a log-softmax copy, all kept for the backward pass: for the 7B
recipe (16k tokens, 152k vocabulary) about 10 GB each. `token_logprobs` walks the tokens in chunks of
about `LOGIT_CHUNK_BYTES` of logits, keeps only the per-token log-sum-exp (and entropy), and recomputes
each chunk's logits in its own backward: one chunk's logits are alive at a time, forward or backward.

`LogProbHead` is that computation as a module of the model, attached before DeepSpeed wraps it: DeepSpeed
ZeRO-3 gathers a module's parameters only around that module's own forward and backward, so the head's
weight is registered with it as an external parameter (`register_with_zero3`) and is whole whenever the
forward or the recomputation in the backward reads it.
"""

from __future__ import annotations

from typing import Any

import torch

LOGIT_CHUNK_BYTES = 64 * 2**20  # fp32 logits per chunk


def token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                   need_entropy: bool = False, chunk_bytes: int = LOGIT_CHUNK_BYTES
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fp32 log-probs of `targets` [N] under logits hidden [N, H] @ weight [V, H]^T / temperature, and
    (`need_entropy`) each position's entropy; values and gradients are those of log_softmax over the full
    logits."""
    chunk = max(1, chunk_bytes // (4 * weight.shape[0]))
    lp, ent = _ChunkedLogProbs.apply(hidden, weight, targets, temperature, need_entropy, chunk)
    return lp, (ent if need_entropy else None)


class LogProbHead(torch.nn.Module):
    """`token_logprobs` through a model's output head, as a module of that model (it owns no parameter:
    the head's weight stays the head's in the state dict)."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        if getattr(head, "bias", None) is not None:
            raise NotImplementedError("an output head with a bias is not supported")
        self._head = [head]  # in a list: not a submodule

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                need_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        return token_logprobs(hidden, self._head[0].weight, targets, temperature, need_entropy)

    def register_with_zero3(self) -> None:
        """Under ZeRO-3 (after `deepspeed.initialize`), let this module's forward and backward gather the
        head's weight, as they gather a module's own parameters."""
        weight = self._head[0].weight
        if hasattr(weight, "ds_id"):
            import deepspeed

            deepspeed.zero.register_external_parameter(self, weight)


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    return (hidden @ weight.t()).float() / temperature


class _ChunkedLogProbs(torch.autograd.Function):
    """Forward and backward chunk by chunk; saves hidden, targets, log-sum-exp and entropy only."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float,
                need_entropy: bool, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = hidden.shape[0]
        lp = hidden.new_empty(n, dtype=torch.float32)
        lse = hidden.new_empty(n, dtype=torch.float32)
        ent = hidden.new_zeros(n, dtype=torch.float32)
        for s in range(0, n, chunk):
            logits = _chunk_logits(hidden[s:s + chunk], weight, temperature)
            lse[s:s + chunk] = torch.logsumexp(logits, dim=-1)
            lp[s:s + chunk] = logits.gather(-1, targets[s:s + chunk, None])[:, 0] - lse[s:s + chunk]
            if need_entropy:
                p = torch.exp(logits - lse[s:s + chunk, None])
                ent[s:s + chunk] = lse[s:s + chunk] - (p * logits).sum(-1)
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        ctx.temperature, ctx.need_entropy, ctx.chunk = temperature, need_entropy, chunk
        return lp, ent

    @staticmethod
    def backward(ctx: Any, grad_lp: torch.Tensor, grad_ent: torch.Tensor | None) -> tuple[Any, ...]:
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        temperature, chunk = ctx.temperature, ctx.chunk
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], chunk):
            e = slice(s, s + chunk)
            logits = _chunk_logits(hidden[e], weight, temperature)
            p = torch.exp(logits - lse[e, None])
            dz = p * -grad_lp[e, None]  # d log p(t) / d z = onehot(t) - p
            dz.scatter_add_(-1, targets[e, None], grad_lp[e, None].float())
            if ctx.need_entropy and grad_ent is not None:  # d H / d z_k = -p_k (z_k - E_p[z]), E_p[z] = lse - H
                dz -= grad_ent[e, None] * p * (logits - (lse[e] - ent[e])[:, None])
            dz /= temperature
            if grad_hidden is not None:
                grad_hidden[e] = (dz @ weight.float()).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += dz.t() @ hidden[e].float()
        return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None, None, None
