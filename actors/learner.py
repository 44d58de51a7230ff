"""The learner: DeepSpeed over a Hugging Face causal LM, trained with the GRPO/DAPO loss.

Sequences arrive as token ids exactly as the generators produced them (prompt + response with loss
mask); the learner never re-tokenises. After each update it publishes weights as `policy_version + 1`.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from agentrl.actors.weights import ObjectStoreReload
from agentrl.algorithms import PolicyLossConfig, group_advantages, policy_loss, scheduled_lr, split_evenly
from agentrl.config import LearnerConfig, VisionConfig
from agentrl.records import LearnerStepStats, TrainBatch, Trajectory, WeightSnapshot


@dataclass
class _Sequence:
    ids: list[int]
    prompt_len: int
    mask: list[int]  # per response token
    behaviour: list[float]
    advantage: float
    images: list[bytes] = field(default_factory=list)  # every image of the sequence, in order
    proximal: list[float] | None = None  # the policy's log-probs at the start of the step (several updates)


def pack_by_tokens(seqs: list[Any], max_tokens: int) -> list[list[Any]]:
    """Dynamic micro-batching: sort by length and pack so that the padded size of each micro-batch
    (longest x count, image tokens included) stays within max_tokens; a longer sequence goes alone."""
    out: list[list[Any]] = []
    cur: list[Any] = []
    longest = 0
    for s in sorted(seqs, key=lambda s: len(s.ids)):
        new_longest = max(longest, len(s.ids))
        if cur and new_longest * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur, new_longest = [], len(s.ids)
        cur.append(s)
        longest = new_longest
    if cur:
        out.append(cur)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LearnerActor:
    """Ray actor owning the trained model: a GRPO/DAPO step per batch of groups (DeepSpeed), then the new
    weights published for the generators as the next policy version."""

    def __init__(self, model_path: str, cfg: LearnerConfig, total_steps: int, temperature: float = 1.0,
                 dtype: str = "float32", seed: int = 0, group_size: int = 0,
                 vision: VisionConfig | None = None) -> None:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if cfg.cpu_threads > 0:  # Ray starts actors with one intra-op thread
            torch.set_num_threads(cfg.cpu_threads)
        for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                     "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
            os.environ.setdefault(k, v)
        import deepspeed

        from agentrl.models import get_adapter

        torch.manual_seed(seed)
        self.torch = torch
        self.cfg = cfg
        self.total_steps = total_steps
        self.temperature = temperature
        self.dtype = getattr(torch, dtype)
        self.model_path = model_path
        # The same adapter as the environment's: placeholders, pixels and mrope positions agree.
        self.adapter = get_adapter(model_path, vision)
        model = self.adapter.load_model(self.dtype)
        self.ref_model = None
        if cfg.kl_coef > 0:
            self.ref_model = self.adapter.load_model(self.dtype).eval()
            self.ref_model.requires_grad_(False)
        ds_config: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": cfg.grad_clip,
            "zero_optimization": {"stage": cfg.zero_stage},
            "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay,
                                                      "torch_adam": True}},
            "bf16": {"enabled": dtype == "bfloat16"},
            "fp16": {"enabled": False},
            "steps_per_print": 10**9,
        }
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config)
        self.device = self.engine.device
        self.group_size = group_size  # 0: do not check
        self.step = 0
        self.optimizer_steps = 0  # the lr schedule's clock: mini_batches * epochs per learner step
        self.policy_version = 0
        self.transport = ObjectStoreReload()
        self.loss_cfg = PolicyLossConfig(cfg.clip_low, cfg.clip_high, cfg.kl_coef, cfg.entropy_coef,
                                         cfg.importance_cap, cfg.importance_mode)

    # ---- batch preparation -------------------------------------------------------------------
    def _check_groups(self, batch: TrainBatch) -> None:
        """GRPO needs every sample of a prompt: refuse a batch holding part of a group."""
        for g in batch.groups:
            ids = {t.group_id for t in g.trajectories}
            if ids != {g.group_id} or (self.group_size and len(g.trajectories) != self.group_size):
                raise ValueError(f"learner got part of group {g.group_id}: {len(g.trajectories)} samples, "
                                 f"expected {self.group_size}")
        seen = [g.group_id for g in batch.groups]
        if len(seen) != len(set(seen)):
            raise ValueError(f"learner got a group twice in one batch: {seen}")

    def _token_staleness(self, batch: TrainBatch) -> tuple[float, int]:
        """Versions behind the learner of every trained token, from the versions recorded per token."""
        ages = [self.policy_version - v for g in batch.groups for t in g.trajectories
                for v, m in zip(t.policy_versions, t.loss_mask, strict=True) if m]
        return (sum(ages) / len(ages) if ages else 0.0), max(ages, default=0)

    def _group_sequences(self, batch: TrainBatch) -> list[list[_Sequence]]:
        """The batch's sequences, one list per group, with GRPO advantages and the overlong filter applied."""
        groups = []
        for group in batch.groups:
            advs = group_advantages(group.rewards, scale=self.cfg.scale_rewards)
            seqs = []
            for traj, adv in zip(group.trajectories, advs, strict=True):
                mask = list(traj.loss_mask)
                if self.cfg.overlong_filter and traj.truncated:
                    mask = [0] * len(mask)
                seqs.append(_Sequence(traj.prompt_ids + traj.response_ids, len(traj.prompt_ids), mask,
                                      list(traj.behaviour_logprobs), adv, list(traj.images)))
            groups.append(seqs)
        return groups

    def _sequences(self, batch: TrainBatch) -> list[_Sequence]:
        return [s for g in self._group_sequences(batch) for s in g]

    def _set_proximal(self, seqs: list[_Sequence]) -> None:
        """Decoupled PPO: record the policy's log-probs before the step's first update (no gradient)."""
        self.engine.eval()
        with self.torch.no_grad():
            for mb in pack_by_tokens(seqs, self.cfg.micro_batch_tokens):
                lp, _ = self._forward(self.engine, mb)
                for s, part in zip(mb, lp.split([len(s.mask) for s in mb]), strict=True):
                    s.proximal = part.float().cpu().tolist()
        self.engine.train()

    def _forward(self, model: Any, mb: list[_Sequence], need_entropy: bool = False) -> tuple[Any, Any]:
        """Log-probs (and entropies) of every response token of the micro-batch, flattened."""
        torch = self.torch
        inputs = self.adapter.forward_inputs([(s.ids, s.images) for s in mb], self.device)
        ids = inputs["input_ids"]
        logits = model(**inputs, use_cache=False).logits.float()
        logits = logits[:, :-1] / self.temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        token_lp = logp_all.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        lps, ents = [], []
        for i, s in enumerate(mb):
            sl = slice(s.prompt_len - 1, len(s.ids) - 1)  # position t-1 predicts token t
            lps.append(token_lp[i, sl])
            if need_entropy:
                p = logp_all[i, sl].exp()
                ents.append(-(p * logp_all[i, sl]).sum(-1))
        return torch.cat(lps), (torch.cat(ents) if need_entropy else None)

    # ---- public API --------------------------------------------------------------------------
    def _loss(self, mb: list[_Sequence], total_tokens: int, logp: Any = None) -> tuple[Any, dict[str, float]]:
        """The micro-batch's loss; `logp` given: with these log-probs instead of a forward (no entropy term)."""
        torch = self.torch
        ent = None
        if logp is None:
            logp, ent = self._forward(self.engine, mb, self.cfg.entropy_coef > 0)
        mask = torch.tensor([m for s in mb for m in s.mask], device=logp.device, dtype=logp.dtype)
        behaviour = torch.tensor([b for s in mb for b in s.behaviour], device=logp.device, dtype=logp.dtype)
        adv = torch.tensor([s.advantage for s in mb for _ in s.mask], device=logp.device, dtype=logp.dtype)
        ref = None
        if self.ref_model is not None:
            with torch.no_grad():
                ref, _ = self._forward(self.ref_model, mb)
        # One update per step: the proximal policy is the current one (the ratio is 1); several: the
        # policy at the start of the step, recorded by _set_proximal.
        proximal = logp.detach()
        if mb[0].proximal is not None:
            proximal = torch.tensor([p for s in mb for p in s.proximal], device=logp.device, dtype=logp.dtype)
        return policy_loss(logp, proximal, behaviour, adv, mask, self.loss_cfg, total_tokens,
                           entropy=ent, ref_logprobs=ref)

    def train_step(self, batch: TrainBatch) -> LearnerStepStats:
        """A learner step on B whole groups, then `policy_version += 1`.

        The groups are split into `learner.mini_batches` mini-batches (whole groups), one optimizer step
        each, all repeated `learner.epochs` times. The reported `lr` is the rate of the step's FIRST
        optimizer step; `loss` and `grad_norm` are means over its optimizer steps, the `extra` stats
        token-weighted means over all its micro-batches.
        """
        if self.cfg.slowdown_s:
            time.sleep(self.cfg.slowdown_s)
        t0 = time.perf_counter()
        self._check_groups(batch)
        stale_mean, stale_max = self._token_staleness(batch)
        mini_batches = [[s for g in part for s in g]
                        for part in split_evenly(self._group_sequences(batch), self.cfg.mini_batches)]
        seqs = [s for mini in mini_batches for s in mini]
        updates = [mini for _ in range(self.cfg.epochs) for mini in mini_batches]
        if len(updates) > 1:
            self._set_proximal(seqs)
        first_lr = self._lr(0)
        self.engine.train()
        losses, norms, sums, weight = [], [], {}, 0
        for mini in updates:
            loss, norm, stats, n = self._update(mini)
            losses.append(loss)
            norms.append(norm)
            weight += n
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        extra = {k: v / max(weight, 1) for k, v in sums.items()}
        extra.update(token_staleness_mean=stale_mean, token_staleness_max=float(stale_max))
        self.step += 1
        self.policy_version += 1
        return LearnerStepStats(step=self.step, policy_version=self.policy_version, loss=sum(losses) / len(losses),
                                grad_norm=sum(norms) / len(norms), lr=first_lr, tokens=sum(sum(s.mask) for s in seqs),
                                samples=len(seqs), train_s=time.perf_counter() - t0, extra=extra)

    def _lr(self, ahead: int) -> float:
        """The rate of optimizer step `self.optimizer_steps + ahead` under `learner.lr_schedule`."""
        c = self.cfg
        total = self.total_steps * c.mini_batches * c.epochs
        return scheduled_lr(c.lr_schedule, self.optimizer_steps + ahead, c.lr, c.warmup_steps, total, c.min_lr_ratio)

    def _update(self, seqs: list[_Sequence], loss_fn: Any = None) -> tuple[float, float, dict[str, float], int]:
        """One optimizer step on a mini-batch, micro-batched by token count, with `loss_fn` (default: the
        policy loss). Returns its loss, gradient norm, token-weighted stat sums and token count."""
        # DAPO's token-level mean per optimizer step: the loss is divided by THIS mini-batch's masked
        # token count, so every optimizer step is a mean over its own tokens.
        tokens = sum(sum(s.mask) for s in seqs)
        lr = self._lr(0)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        mbs = pack_by_tokens(seqs, self.cfg.micro_batch_tokens)
        loss_sum, sums = 0.0, {}
        for i, mb in enumerate(mbs):
            loss, stats = (loss_fn or self._loss)(mb, tokens)
            self.engine.set_gradient_accumulation_boundary(i == len(mbs) - 1)
            self.engine.backward(loss)
            self.engine.step()
            loss_sum += float(loss.detach())
            n = sum(sum(s.mask) for s in mb)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v * n
        self.optimizer_steps += 1
        return loss_sum, float(self.engine.get_global_grad_norm() or 0.0), sums, tokens

    def _sft_loss(self, mb: list[_Sequence], total_tokens: int) -> tuple[Any, dict[str, float]]:
        """Supervised fine-tuning: the negative log-likelihood of the masked tokens, summed and divided by
        the optimizer step's masked token count (a token-level mean, as the policy loss)."""
        logp, _ = self._forward(self.engine, mb)
        mask = self.torch.tensor([m for s in mb for m in s.mask], device=logp.device, dtype=logp.dtype)
        return -(logp * mask).sum() / max(total_tokens, 1), {}

    def sft_step(self, trajectories: list[Trajectory]) -> LearnerStepStats:
        """One supervised optimizer step on these trajectories (`agentrl sft`): the masked token-mean
        cross-entropy of the tokens with loss mask 1 (model turns; observations and the prompt are not
        trained), micro-batched as `train_step`, at `learner.lr` under `learner.lr_schedule`. `loss` is the
        masked mean NLL under the weights before the step. The policy version does not change."""
        t0 = time.perf_counter()
        seqs = [_Sequence(t.prompt_ids + t.response_ids, len(t.prompt_ids), list(t.loss_mask),
                          [0.0] * len(t.loss_mask), 0.0, list(t.images)) for t in trajectories]
        lr = self._lr(0)
        self.engine.train()
        loss, norm, _, tokens = self._update(seqs, self._sft_loss)
        self.step += 1
        return LearnerStepStats(step=self.step, policy_version=self.policy_version, loss=loss, grad_norm=norm,
                                lr=lr, tokens=tokens, samples=len(seqs), train_s=time.perf_counter() - t0)

    def compute_loss(self, batch: TrainBatch) -> float:
        """The loss of a batch under the current weights, without updating them."""
        seqs = self._sequences(batch)
        total = sum(sum(s.mask) for s in seqs)
        with self.torch.no_grad():
            return sum(float(self._loss(mb, total)[0]) for mb in pack_by_tokens(seqs, self.cfg.micro_batch_tokens))

    def token_gradients(self, batch: TrainBatch, proximal: list[list[float]]) -> list[list[float]]:
        """d loss / d log-prob of every response token under the current weights, with these proximal
        log-probs (one list per trajectory, in batch order), the loss normalised over the whole batch: the
        parameters' gradient is the sum of these times d log-prob / d parameters, so a token with 0 here
        does not move the update. Diagnostics; the weights are not changed."""
        seqs = self._sequences(batch)
        total = sum(sum(s.mask) for s in seqs)
        out = []
        for s, prox in zip(seqs, proximal, strict=True):
            s.proximal = list(prox)
            with self.torch.no_grad():
                lp, _ = self._forward(self.engine, [s])
            leaf = lp.detach().requires_grad_(True)
            loss, _ = self._loss([s], total, logp=leaf)
            loss.backward()
            out.append(leaf.grad.cpu().tolist())
        return out

    def compute_logprobs(self, trajectories: list[Trajectory]) -> list[list[float]]:
        """The learner's log-probs of each response token (to compare with the behaviour ones)."""
        out = []
        with self.torch.no_grad():
            for t in trajectories:
                s = _Sequence(t.prompt_ids + t.response_ids, len(t.prompt_ids), t.loss_mask,
                              t.behaviour_logprobs, 0.0, list(t.images))
                lp, _ = self._forward(self.engine, [s])
                out.append(lp.cpu().tolist())
        return out

    def get_weights(self) -> WeightSnapshot:
        """The current weights, tagged with the current policy version (agentrl/actors/weights.py ships them)."""
        return self.transport.snapshot(self._state_dict(), self.policy_version)

    def _state_dict(self) -> dict[str, Any]:
        if self.cfg.zero_stage == 3:
            import deepspeed

            params = list(self.engine.module.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                return {k: v.clone() for k, v in self.engine.module.state_dict().items()}
        return self.engine.module.state_dict()

    def save_pretrained(self, path: str) -> str:
        """Write the current weights in Hugging Face format (loadable by transformers and vLLM)."""
        from transformers import AutoProcessor, AutoTokenizer

        self.engine.module.save_pretrained(path, state_dict=self._state_dict(), safe_serialization=True)
        # A vision-language checkpoint needs its processor too (vLLM and transformers load it from here).
        loader = AutoProcessor if self.adapter.is_multimodal else AutoTokenizer
        loader.from_pretrained(self.model_path).save_pretrained(path)
        return path
