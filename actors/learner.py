"""A learner rank: one data-parallel DeepSpeed process over a Hugging Face causal LM, trained with the
GRPO/DAPO loss on the share of each step that the learner group (`agentrl.actors.learner_group`) plans
for it.

Sequences arrive as token ids exactly as the generators produced them (prompt + response with loss
mask); the learner never re-tokenises. The ranks join one torch.distributed group (NCCL on GPUs, gloo
on the CPU); DeepSpeed averages their gradients, ZeRO shards what `learner.zero_stage` says.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from agentrl.actors.weights import ObjectStoreTransport
from agentrl.algorithms import PolicyLossConfig, policy_loss, scheduled_lr
from agentrl.config import LearnerConfig, VisionConfig
from agentrl.logprobs import LogProbHead
from agentrl.records import PackedWeights, RankPlan, RankStepResult, TrainSequence

# ZeRO-3 gathers parameters for a snapshot in buckets of this many bytes: never a whole extra copy on a GPU
GATHER_BUCKET_BYTES = 256 * 2**20
DEEPSPEED_TAG = "deepspeed"  # a checkpoint's DeepSpeed state lives in CHECKPOINT/deepspeed


def deepspeed_config(cfg: LearnerConfig, dtype: str, train: bool = True) -> dict[str, Any]:
    """The DeepSpeed config of a rank (`train=False`: the frozen KL reference model's). bf16 keeps fp32
    master weights and Adam states, accumulates and reduces gradients in fp32."""
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.offload in ("optimizer", "all") and train:
        zero["offload_optimizer"] = {"device": "cpu"}
    if cfg.offload == "all":
        zero["offload_param"] = {"device": "cpu"}
    bf16 = dtype == "bfloat16"
    out: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
    }
    if train:
        out["gradient_clipping"] = cfg.grad_clip
        out["optimizer"] = {"type": "AdamW", "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay,
                                                        "torch_adam": True}}
        out["zero_force_ds_cpu_optimizer"] = False  # offload with torch's Adam: no compiled CPU-Adam op needed
        if bf16:
            out["data_types"] = {"grad_accum_dtype": "fp32"}
            out["communication_data_type"] = "fp32"
    return out


def with_logprob_head(model: Any) -> Any:
    """The Hugging Face model with its `LogProbHead` as the submodule `logprob_head`: the log-probs go through
    the output head in chunks (no full-vocabulary logits), and ZeRO-3 treats it as a module of the model."""
    model.logprob_head = LogProbHead(model.get_output_embeddings())
    return model



@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """`torch.load` restricted to tensors and plain containers (and the few DeepSpeed types its
    checkpoints hold) while DeepSpeed loads a checkpoint: it asks for `weights_only=False` itself."""
    import torch

    original = torch.load

    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def checkpoint_safe_globals() -> list[Any]:
    """The non-tensor types DeepSpeed's checkpoints hold (ZeRO 0-3, fp32 and bf16): plain data classes."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]

class LearnerRank:
    """Ray actor: rank `rank` of `world_size`. Constructed cheaply; `init` joins the process group and
    builds the DeepSpeed engine (all ranks at once: the rendezvous waits for every rank)."""

    def __init__(self, model_path: str, cfg: LearnerConfig, total_steps: int, rank: int, world_size: int,
                 temperature: float = 1.0, dtype: str = "float32", seed: int = 0,
                 vision: VisionConfig | None = None) -> None:
        self.model_path, self.cfg, self.total_steps = model_path, cfg, total_steps
        self.rank, self.world_size = rank, world_size
        self.temperature, self.dtype_name, self.seed, self.vision = temperature, dtype, seed, vision
        self.learner_steps = 0  # the lr schedule's clock: one tick per learner step, as the seed's
        self._store: Any = None  # rank 0's rendezvous store (open_rendezvous), kept open while the group lives
        self._weight_store: Any = None  # rank 0's weight group store (open_weight_store)
        self.weight_group: Any = None
        self.transport = ObjectStoreTransport()
        self.loss_cfg = PolicyLossConfig(cfg.clip_low, cfg.clip_high, cfg.kl_coef, cfg.entropy_coef,
                                         cfg.importance_cap, cfg.importance_mode)

    def open_weight_store(self, world_size: int) -> tuple[str, int]:
        """Rank 0: host a new weight group's store (`host_weight_store`) for `world_size` members; returns
        this node's address and the store's port, where the engines join it."""
        import ray

        from agentrl.actors.weight_buffers import host_weight_store

        self.weight_group = None  # the previous group goes before the new one meets
        host = ray.util.get_node_ip_address()
        self._weight_store = host_weight_store(host, world_size)
        return host, self._weight_store.port

    def open_rendezvous(self) -> tuple[str, int]:
        """Rank 0: open the learner group's store on a port the OS assigns as it binds, and return this node's
        address and that port. (A port found free and bound later can be taken in between: parallel runs on
        one machine failed with EADDRINUSE.)"""
        import ray
        from torch.distributed import TCPStore

        host = ray.util.get_node_ip_address()
        self._store = TCPStore(host, 0, self.world_size, is_master=True, wait_for_workers=False)
        return host, self._store.port

    def init(self, master_addr: str, master_port: int) -> None:
        """Join the process group at rank 0's store (`open_rendezvous`) and build the DeepSpeed engine (and the
        KL reference model)."""
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if self.cfg.cpu_threads > 0:  # Ray starts actors with one intra-op thread
            torch.set_num_threads(self.cfg.cpu_threads)
        # Ray gives each rank its own GPU(s) as device 0: the local rank is always 0
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        store = self._store or torch.distributed.TCPStore(master_addr, master_port, self.world_size, is_master=False)
        # joined here, DeepSpeed uses this group instead of making its own at MASTER_PORT
        torch.distributed.init_process_group(get_accelerator().communication_backend_name(), store=store,
                                             rank=self.rank, world_size=self.world_size)

        from agentrl.models import get_adapter

        torch.manual_seed(self.seed)
        self.torch = torch
        self.dtype = getattr(torch, self.dtype_name)
        # The same adapter as the environment's: placeholders, pixels and mrope positions agree.
        self.adapter = get_adapter(self.model_path, self.vision)
        model = with_logprob_head(self.adapter.load_model(self.dtype))
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=deepspeed_config(self.cfg, self.dtype_name))
        model.logprob_head.register_with_zero3()
        self.device = self.engine.device
        self.ref: Any = None
        if self.cfg.kl_coef > 0:
            self.ref = self._reference_model()

    def _reference_model(self) -> Any:
        """The frozen KL reference on the learner's device; under ZeRO-3 sharded like the policy."""
        import deepspeed

        ref = with_logprob_head(self.adapter.load_model(self.dtype)).eval()
        ref.requires_grad_(False)
        if self.cfg.zero_stage == 3:
            engine, *_ = deepspeed.initialize(model=ref, config=deepspeed_config(self.cfg, self.dtype_name, False))
            engine.eval()  # DeepSpeed's eval() returns None, not the engine
            ref.logprob_head.register_with_zero3()
            return engine
        return ref.to(self.device)

    # ---- forward and loss ----------------------------------------------------------------------
    def _forward(self, model: Any, mb: list[TrainSequence], need_entropy: bool = False) -> tuple[Any, Any]:
        """Log-probs (and entropies) of every response token of the micro-batch, flattened.

        The backbone's last hidden states go through the output head only at response positions, in
        chunks (`agentrl.logprobs`): no full-vocabulary fp32 logits of every position."""
        torch = self.torch
        inputs = self.adapter.forward_inputs([(s.ids, s.images) for s in mb], self.device)
        ids = inputs["input_ids"]
        # through the model's (or DeepSpeed engine's) own forward, which ZeRO-3's bookkeeping needs; no logits
        out = model(**inputs, use_cache=False, output_hidden_states=True,
                    logits_to_keep=torch.zeros(0, dtype=torch.long, device=ids.device))
        hidden = out.hidden_states[-1]  # the last layer's, after the final norm
        module = getattr(model, "module", model)  # a DeepSpeed engine wraps the Hugging Face model
        rows = [(i, slice(s.prompt_len - 1, len(s.ids) - 1)) for i, s in enumerate(mb)]  # t-1 predicts t
        picked = torch.cat([hidden[i, sl] for i, sl in rows])
        targets = torch.cat([ids[i, sl.start + 1:sl.stop + 1] for i, sl in rows])
        return module.logprob_head(picked, targets, self.temperature, need_entropy)

    def _tensor(self, values: list[float], like: Any) -> Any:
        return self.torch.tensor(values, device=like.device, dtype=like.dtype)

    def _loss(self, mb: list[TrainSequence], total_tokens: int, logp: Any = None) -> tuple[Any, dict[str, float]]:
        """The micro-batch's share of the step's loss (divided by the masked tokens of every rank); `logp`
        given: with these log-probs instead of a forward (no entropy term)."""
        ent = None
        if logp is None:
            logp, ent = self._forward(self.engine, mb, self.cfg.entropy_coef > 0)
        mask = self._tensor([m for s in mb for m in s.mask], logp)
        behaviour = self._tensor([b for s in mb for b in s.behaviour], logp)
        adv = self._tensor([s.advantage for s in mb for _ in s.mask], logp)
        ref = None
        if self.ref is not None:
            with self.torch.no_grad():
                ref, _ = self._forward(self.ref, mb)
        # One update per step: the proximal policy is the current one (the ratio is 1); several: the policy
        # at the start of the step, recorded by _set_proximal (a padding sequence has none: it is masked).
        parts = logp.detach().split([len(s.mask) for s in mb])
        proximal = self.torch.cat([part if s.proximal is None else self._tensor(s.proximal, logp)
                                   for s, part in zip(mb, parts, strict=True)])
        return policy_loss(logp, proximal, behaviour, adv, mask, self.loss_cfg, total_tokens,
                           entropy=ent, ref_logprobs=ref)

    def _sft_loss(self, mb: list[TrainSequence], total_tokens: int) -> tuple[Any, dict[str, float]]:
        """Supervised fine-tuning: the negative log-likelihood of the masked tokens, summed and divided by
        the optimizer step's masked token count (a token-level mean, as the policy loss)."""
        logp, _ = self._forward(self.engine, mb)
        mask = self._tensor([m for s in mb for m in s.mask], logp)
        return -(logp * mask).sum() / max(total_tokens, 1), {}

    def _set_proximal(self, micro_batches: list[list[TrainSequence]]) -> None:
        """Decoupled PPO: record the policy's log-probs before the step's first update (no gradient)."""
        self.engine.eval()
        with self.torch.no_grad():
            for mb in micro_batches:
                lp, _ = self._forward(self.engine, mb)
                for s, part in zip(mb, lp.split([len(s.mask) for s in mb]), strict=True):
                    s.proximal = part.float().cpu().tolist()
        self.engine.train()

    # ---- updates -------------------------------------------------------------------------------
    def _lr(self) -> float:
        """The rate of this learner step's optimizer steps under `learner.lr_schedule` (one per step)."""
        c = self.cfg
        return scheduled_lr(c.lr_schedule, self.learner_steps, c.lr, c.warmup_steps, self.total_steps, c.min_lr_ratio)

    def _grad_norm(self) -> float | None:
        """The gradient norm where DeepSpeed keeps none (ZeRO stage 0 in fp32): the reduced gradients'."""
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        if not grads:
            return None
        return float(self.torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))

    def _update(self, micro_batches: list[list[TrainSequence]], total_tokens: int,
                loss_fn: Any) -> tuple[float, float, float, dict[str, float]]:
        """One optimizer step over this rank's micro-batches; returns its loss share, the gradient norm,
        the rate used and the token-weighted stat sums."""
        lr = self._lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss_sum, sums, norm = 0.0, {}, None
        for i, mb in enumerate(micro_batches):
            loss, stats = loss_fn(mb, total_tokens)
            last = i == len(micro_batches) - 1
            self.engine.set_gradient_accumulation_boundary(last)
            # DeepSpeed averages gradients over the ranks; the loss is this rank's share of the whole
            # step's token mean, so the sum over ranks is wanted: scale by the rank count.
            self.engine.backward(loss * self.world_size)
            if last and self.cfg.zero_stage == 0:
                norm = self._grad_norm()
            self.engine.step()
            loss_sum += float(loss.detach())
            n = sum(sum(s.mask) for s in mb)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v * n
        ds_norm = self.engine.get_global_grad_norm()
        norm = float(ds_norm) if ds_norm is not None else norm
        return loss_sum, float(norm or 0.0), lr, sums

    def train(self, plan: RankPlan, objective: str = "policy") -> RankStepResult:
        """Run this rank's share of a learner step: the proximal pass (several updates), then one optimizer
        step per planned update. `objective`: "policy" (GRPO/DAPO) or "sft" (masked NLL)."""
        if plan.proximal:
            self._set_proximal(plan.proximal)
        loss_fn = self._loss if objective == "policy" else self._sft_loss
        self.engine.train()
        out = RankStepResult([], [], [], {}, 0)
        for micro_batches, total in zip(plan.updates, plan.update_tokens, strict=True):
            loss, norm, lr, sums = self._update(micro_batches, total, loss_fn)
            out.losses.append(loss)
            out.grad_norms.append(norm)
            out.lrs.append(lr)
            out.tokens += sum(sum(s.mask) for mb in micro_batches for s in mb)
            for k, v in sums.items():
                out.stat_sums[k] = out.stat_sums.get(k, 0.0) + v
        self.learner_steps += 1
        return out

    # ---- diagnostics ---------------------------------------------------------------------------
    def loss(self, micro_batches: list[list[TrainSequence]], total_tokens: int) -> float:
        """This rank's share of a batch's loss under the current weights (no update)."""
        with self.torch.no_grad():
            return sum(float(self._loss(mb, total_tokens)[0]) for mb in micro_batches)

    def logprobs(self, seqs: list[TrainSequence]) -> list[list[float]]:
        """The learner's log-probs of each response token, one sequence at a time (no padding effects)."""
        with self.torch.no_grad():
            return [self._forward(self.engine, [s])[0].cpu().tolist() for s in seqs]

    def token_gradients(self, seqs: list[TrainSequence], total_tokens: int) -> list[list[float]]:
        """d loss / d log-prob of every response token (see `LearnerGroup.token_gradients`)."""
        out = []
        for s in seqs:
            with self.torch.no_grad():
                lp, _ = self._forward(self.engine, [s])
            leaf = lp.detach().requires_grad_(True)
            loss, _ = self._loss([s], total_tokens, logp=leaf)
            loss.backward()
            out.append(leaf.grad.cpu().tolist())
        return out

    # ---- weights -------------------------------------------------------------------------------
    def get_weights(self, version: int) -> PackedWeights | None:
        """The full weights as a snapshot of `version` on rank 0 (None elsewhere). Under ZeRO-3 every rank
        must call this: the parameters are gathered bucket by bucket."""
        state = self._full_state()
        return None if state is None else self.transport.snapshot(state, version)

    def packed_data(self, packed: PackedWeights) -> list[Any]:
        """Rank 0: [a reference to `packed` (a packing `get_weights` made) with its bytes] in the object
        store, for engines on other nodes; fails, naming the buffer, when it has been packed again since."""
        import ray

        return [ray.put(self.transport.with_data(packed))]

    def join_weight_group(self, world_size: int, backend: str) -> None:
        """Rank 0: join the weight group (`rollout.weight_sync=collective`) it hosts (`open_weight_store`) as
        its rank 0."""
        from agentrl.actors.weight_buffers import WeightGroup

        self.weight_group = WeightGroup(self._weight_store, 0, world_size, backend)

    def broadcast_weights(self, version: int, bucket_bytes: int) -> None:
        """The weights of `version` to the weight group's engines (rank 0 sends; under ZeRO-3 every rank
        takes part in gathering them)."""
        from agentrl.actors.weight_buffers import send_packed

        state = self._full_state()
        if state is not None:
            packed = self.transport.with_data(self.transport.snapshot(state, version))
            send_packed(self.weight_group, packed, bucket_bytes)

    def _full_state(self) -> dict[str, Any] | None:
        """Every tensor of the model's state dict on rank 0's CPU (None on the other ranks)."""
        module = self.engine.module
        if self.cfg.zero_stage != 3:
            return {k: v.detach().cpu() for k, v in module.state_dict().items()} if self.rank == 0 else None
        import deepspeed

        params = dict(module.named_parameters(remove_duplicate=False))
        names = list(module.state_dict().keys())
        out: dict[str, Any] = {}
        bucket: list[str] = []
        size = 0
        for i, name in enumerate(names):
            if name in params:
                bucket.append(name)
                size += params[name].ds_numel * params[name].element_size()
            if bucket and (size >= GATHER_BUCKET_BYTES or i == len(names) - 1):
                unique = list({id(params[n]): params[n] for n in bucket}.values())
                with deepspeed.zero.GatheredParameters(unique, modifier_rank=None):
                    if self.rank == 0:
                        out.update({n: params[n].detach().to("cpu", copy=True) for n in bucket})
                bucket, size = [], 0
        if self.rank != 0:
            return None
        buffers = dict(module.named_buffers())
        out.update({n: buffers[n].detach().cpu() for n in names if n not in params and n in buffers})
        return out

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_state(self, folder: str) -> None:
        """DeepSpeed's checkpoint of this rank under `folder/deepspeed` (the optimizer sharded as ZeRO keeps
        it), with the schedule's clock and the RNG state. Every rank calls this (it is collective)."""
        client = {"learner_steps": self.learner_steps, "torch_rng": self.torch.get_rng_state()}
        self.engine.save_checkpoint(folder, tag=DEEPSPEED_TAG, client_state=client, save_latest=False)

    def load_state(self, folder: str) -> None:
        """Continue from `save_state`'s checkpoint: weights, optimizer, schedule clock and RNG. The files
        are read as data only (`weights_only`): a run folder is outside input, and DeepSpeed's own loader
        would unpickle anything in them (code runs)."""
        import pickle

        try:
            with weights_only_loads():
                path, client = self.engine.load_checkpoint(folder, tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                                           load_lr_scheduler_states=False)
        except pickle.UnpicklingError:
            raise ValueError(f"{folder}/{DEEPSPEED_TAG}: a file holds more than tensors and plain data; not "
                             "loaded (unpickling it could run code)") from None
        if path is None:
            raise FileNotFoundError(f"{folder}/{DEEPSPEED_TAG}: no DeepSpeed checkpoint of rank {self.rank}")
        self.learner_steps = int(client["learner_steps"])
        self.torch.set_rng_state(client["torch_rng"])

    def save_pretrained(self, path: str) -> str:
        """Write the current weights in Hugging Face format from rank 0 (every rank takes part in the gather)."""
        state = self._full_state()
        if state is not None:
            from transformers import AutoProcessor, AutoTokenizer

            self.engine.module.save_pretrained(path, state_dict=state, safe_serialization=True)
            # A vision-language checkpoint needs its processor too (vLLM and transformers load it from here).
            loader = AutoProcessor if self.adapter.is_multimodal else AutoTokenizer
            loader.from_pretrained(self.model_path).save_pretrained(path)
        return path
