"""The learner group: `learner.num_ranks` DeepSpeed ranks (`agentrl.actors.learner.LearnerRank`) behind one
actor that the orchestrator talks to as to one learner.

The group places its ranks with Ray placement groups (`learner.num_gpus` and `learner.resources` per
rank; `learner.ranks_per_node` ranks to a node group), joins them at rank 0's address, and turns each
call into per-rank work: a learner step's batch becomes one `RankPlan` per rank (`agentrl.batching`),
balanced by tokens, with the token mean taken over the whole step across all ranks, so N ranks make the
update one rank would make on the same batch. The ranks are the group's own actors: they die with it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from agentrl.actors.learner import LearnerRank
from agentrl.actors.weight_buffers import unpack
from agentrl.batching import group_sequences, masked_tokens, plan_passes, plan_step, trajectory_sequence
from agentrl.config import Config, ConfigError
from agentrl.errors import ActorFailure
from agentrl.records import (
    LearnerStepStats,
    PackedWeights,
    RankPlan,
    RankStepResult,
    TrainBatch,
    Trajectory,
    WeightSnapshot,
)

PLACEMENT_TIMEOUT_S = 120.0


def rank_bundle(cfg: Config) -> dict[str, float]:
    """What one rank asks of a node: its GPUs and custom resources (and a token CPU share: a bundle may
    not be empty)."""
    lc = cfg.learner
    bundle = {"CPU": 0.01, **{k: float(v) for k, v in lc.resources.items()}}
    if lc.num_gpus:
        bundle["GPU"] = float(lc.num_gpus)
    return bundle


class LearnerGroup:
    """Ray actor: the learner as one handle. Every public method starts the ranks on first use."""

    def __init__(self, cfg: Config, model_path: str, total_steps: int, runtime_env: dict[str, Any],
                 name: str | None = None) -> None:
        self.cfg, self.lc = cfg, cfg.learner
        self.model_path, self.total_steps = model_path, total_steps
        self.runtime_env, self.name = runtime_env, name
        self.group_size = cfg.rollout.n  # every group must be whole
        self.step = 0
        self.policy_version = 0
        self._weight_group: tuple[str, int] | None = None
        self.ranks: list[Any] = []
        self._pgs: list[Any] = []
        self._started: asyncio.Task | None = None

    # ---- the ranks -------------------------------------------------------------------------------
    async def setup(self) -> None:
        """Place the ranks and join them into one process group (once; later calls wait for the first)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start_ranks())
        await self._started

    async def _start_ranks(self) -> None:
        lc, bundle = self.lc, rank_bundle(self.cfg)
        per = lc.ranks_per_node or lc.num_ranks
        strategy = "STRICT_PACK" if lc.ranks_per_node else "PACK"
        self._pgs = [placement_group([bundle] * per, strategy=strategy) for _ in range(lc.num_ranks // per)]
        try:
            await asyncio.wait_for(asyncio.gather(*[pg.ready() for pg in self._pgs]), PLACEMENT_TIMEOUT_S)
        except TimeoutError:
            raise ConfigError(f"the learner's {lc.num_ranks} ranks cannot be placed in {PLACEMENT_TIMEOUT_S:.0f}s: "
                              f"each asks for {bundle} (learner.num_gpus, learner.resources), "
                              f"{per} to a node (learner.ranks_per_node)") from None
        for r in range(lc.num_ranks):
            strategy_r = PlacementGroupSchedulingStrategy(self._pgs[r // per], placement_group_bundle_index=r % per)
            opts: dict[str, Any] = {"num_cpus": bundle["CPU"], "num_gpus": lc.num_gpus,
                                    "resources": {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")},
                                    "scheduling_strategy": strategy_r, "runtime_env": self.runtime_env}
            if self.name:
                opts["name"] = f"{self.name}-rank-{r}"
            self.ranks.append(ray.remote(LearnerRank).options(**opts).remote(
                self.model_path, lc, self.total_steps, r, lc.num_ranks, self.cfg.rollout.temperature,
                self.cfg.model.dtype, self.cfg.trainer.seed, self.cfg.model.vision))
        host, port = await self._call(self.ranks[0].open_rendezvous.remote(), 0)
        await self._on_every_rank("init", [(host, port)] * lc.num_ranks)

    async def _call(self, ref: Any, rank: int) -> Any:
        try:
            return await ref
        except ray.exceptions.RayActorError as e:
            raise ActorFailure(f"learner rank {rank} died: {e}") from None

    async def _each(self, method: str, args_per_rank: list[tuple]) -> list[Any]:
        """`method` on every rank with its own arguments; a dead rank fails the call, named."""
        await self.setup()
        return await self._on_every_rank(method, args_per_rank)

    async def _on_every_rank(self, method: str, args_per_rank: list[tuple]) -> list[Any]:
        refs = [getattr(h, method).remote(*args) for h, args in zip(self.ranks, args_per_rank, strict=True)]
        return list(await asyncio.gather(*[self._call(ref, r) for r, ref in enumerate(refs)]))

    async def rank_nodes(self) -> list[str]:
        """The Ray node of each rank, in rank order (the run's placement.json)."""
        await self.setup()
        return list(await asyncio.gather(*[h.__ray_call__.remote(_node_id) for h in self.ranks]))

    def shutdown(self) -> None:
        """Kill the ranks and free their placement."""
        for h in self.ranks:
            ray.kill(h)
        for pg in self._pgs:
            remove_placement_group(pg)
        self.ranks, self._pgs = [], []

    # ---- training --------------------------------------------------------------------------------
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

    async def train_step(self, batch: TrainBatch) -> LearnerStepStats:
        """A learner step on B whole groups, then `policy_version += 1`.

        The groups are split into `learner.mini_batches` mini-batches (whole groups), one optimizer step
        each, all repeated `learner.epochs` times; each mini-batch is split across the ranks by tokens.
        The reported `lr` is the step's rate (the schedule's clock is the learner step); `loss` and `grad_norm`
        are means over its optimizer steps, the `extra` stats token-weighted means over all its tokens.
        """
        if self.lc.slowdown_s:
            await asyncio.sleep(self.lc.slowdown_s)
        t0 = time.perf_counter()
        self._check_groups(batch)
        stale_mean, stale_max = self._token_staleness(batch)
        groups = group_sequences(batch, self.lc.scale_rewards, self.lc.overlong_filter)
        plans = plan_step(groups, self.lc.num_ranks, self.lc.mini_batches, self.lc.epochs, self.lc.micro_batch_tokens)
        seqs = [s for g in groups for s in g]
        stats = await self._run(plans, "policy", time.perf_counter() - t0, len(seqs), masked_tokens(seqs))
        stats.extra.update(token_staleness_mean=stale_mean, token_staleness_max=float(stale_max))
        self.policy_version += 1
        stats.policy_version = self.policy_version
        return stats

    async def sft_step(self, trajectories: list[Trajectory]) -> LearnerStepStats:
        """One supervised optimizer step on these trajectories (`agentrl sft`, the warm start): the masked
        token-mean NLL of the model turns (observations and the prompt are not trained), split across the
        ranks as `train_step`, at `learner.lr` under `learner.lr_schedule`. `loss` is under the weights
        before the step. The policy version does not change."""
        t0 = time.perf_counter()
        seqs = [trajectory_sequence(t) for t in trajectories]
        plans = plan_step([seqs], self.lc.num_ranks, 1, 1, self.lc.micro_batch_tokens)
        return await self._run(plans, "sft", time.perf_counter() - t0, len(seqs), masked_tokens(seqs))

    async def _run(self, plans: list[RankPlan], objective: str, t_plan: float, samples: int,
                   tokens: int) -> LearnerStepStats:
        """Run the ranks' plans and merge what they report into one step's stats (`tokens`: the batch's
        masked tokens; the stats are weighted by the tokens of every update)."""
        t0 = time.perf_counter()
        results: list[RankStepResult] = await self._each("train", [(p, objective) for p in plans])
        losses = [sum(r.losses[k] for r in results) for k in range(len(plans[0].updates))]
        norms = results[0].grad_norms  # the global norm: the same on every rank
        weight = sum(r.tokens for r in results)
        sums: dict[str, float] = {}
        for r in results:
            for k, v in r.stat_sums.items():
                sums[k] = sums.get(k, 0.0) + v
        self.step += 1
        return LearnerStepStats(step=self.step, policy_version=self.policy_version, loss=sum(losses) / len(losses),
                                grad_norm=sum(norms) / len(norms), lr=results[0].lrs[0], tokens=tokens,
                                samples=samples, train_s=t_plan + time.perf_counter() - t0,
                                extra={k: v / max(weight, 1) for k, v in sums.items()})

    # ---- diagnostics -----------------------------------------------------------------------------
    async def compute_loss(self, batch: TrainBatch) -> float:
        """The loss of a batch under the current weights, without updating them."""
        seqs = [s for g in group_sequences(batch, self.lc.scale_rewards, self.lc.overlong_filter) for s in g]
        passes = plan_passes(seqs, self.lc.num_ranks, self.lc.micro_batch_tokens)
        return sum(await self._each("loss", [(mbs, masked_tokens(seqs)) for mbs in passes]))

    async def compute_logprobs(self, trajectories: list[Trajectory]) -> list[list[float]]:
        """The learner's log-probs of each response token (to compare with the behaviour ones)."""
        seqs = [trajectory_sequence(t) for t in trajectories]
        return (await self._each("logprobs", [(seqs,)] * self.lc.num_ranks))[0]  # every rank: ZeRO-3 gathers

    async def token_gradients(self, batch: TrainBatch, proximal: list[list[float]]) -> list[list[float]]:
        """d loss / d log-prob of every response token under the current weights, with these proximal
        log-probs (one list per trajectory, in batch order), the loss normalised over the whole batch: the
        parameters' gradient is the sum of these times d log-prob / d parameters, so a token with 0 here
        does not move the update. Diagnostics; the weights are not changed."""
        seqs = [s for g in group_sequences(batch, self.lc.scale_rewards, self.lc.overlong_filter) for s in g]
        for s, prox in zip(seqs, proximal, strict=True):
            s.proximal = list(prox)
        return (await self._each("token_gradients", [(seqs, masked_tokens(seqs))] * self.lc.num_ranks))[0]

    # ---- weights ---------------------------------------------------------------------------------
    async def weights_ref(self) -> list[Any]:
        """[a reference to the current weights' snapshot] (rank 0's; the list keeps Ray from resolving
        it here): the engines fetch it straight from rank 0's node. Every rank takes part (ZeRO-3)."""
        await self.setup()
        refs = [h.get_weights.remote(self.policy_version) for h in self.ranks]
        await asyncio.gather(*[self._call(ref, r) for r, ref in enumerate(refs[1:], start=1)])
        return [refs[0]]

    async def weight_group(self) -> tuple[str, int] | None:
        """(id, members) of the weight group rank 0 hosts (`rollout.weight_sync=collective`), or None."""
        return self._weight_group

    async def open_weight_group(self, world_size: int) -> tuple[str, int, str]:
        """Rank 0 hosts a new weight group of `world_size` members; returns where it meets (rank 0's node and
        the port of its store there) and its backend: NCCL when the ranks have GPUs, else gloo."""
        await self.setup()
        self._weight_group = None
        host, port = await self._call(self.ranks[0].open_weight_store.remote(world_size), 0)
        return host, port, "nccl" if self.lc.num_gpus > 0 else "gloo"

    async def join_weight_group(self, world_size: int, group_id: str, backend: str) -> None:
        """Rank 0 joins the weight group it hosts; returns when every member has joined."""
        self._weight_group = None
        await self._call(self.ranks[0].join_weight_group.remote(world_size, backend), 0)
        self._weight_group = (group_id, world_size)

    async def broadcast_weights(self, bucket_bytes: int) -> int:
        """The current weights to the weight group (every rank takes part under ZeRO-3); returns their version."""
        try:
            await self._each("broadcast_weights", [(self.policy_version, bucket_bytes)] * self.lc.num_ranks)
        except BaseException:
            self._weight_group = None  # a member failed: the group is rebuilt before the next push
            raise
        return self.policy_version

    async def weights_data_ref(self, packed: PackedWeights) -> list[Any]:
        """[a reference to `packed` (a snapshot from `weights_ref`) with its bytes] (for engines on other
        nodes: Ray's object store carries them, one object fetched once per node)."""
        return await self._call(self.ranks[0].packed_data.remote(packed), 0)

    async def get_weights(self) -> WeightSnapshot:
        """The current weights by name (copies), tagged with the current policy version."""
        [ref] = await self.weights_ref()
        [data_ref] = await self.weights_data_ref(await self._call(ref, 0))
        packed = await self._call(data_ref, 0)
        return WeightSnapshot(packed.version, {k: v.clone() for k, v in unpack(packed).items()})

    async def save_pretrained(self, path: str) -> str:
        """Write the current weights in Hugging Face format (loadable by transformers and vLLM)."""
        return (await self._each("save_pretrained", [(path,)] * self.lc.num_ranks))[0]

    async def save_checkpoint(self, folder: str) -> str:
        """A resumable checkpoint in `folder`: the weights in Hugging Face format and every rank's
        DeepSpeed state (optimizer, schedule clock, RNG) under `folder/deepspeed`."""
        await self.save_pretrained(folder)
        await self._each("save_state", [(folder,)] * self.lc.num_ranks)
        return folder

    async def load_checkpoint(self, folder: str, step: int, policy_version: int) -> None:
        """Continue from `save_checkpoint`'s folder, at this learner step and policy version."""
        await self._each("load_state", [(folder,)] * self.lc.num_ranks)
        self.step, self.policy_version = step, policy_version

    async def kill_rank(self, rank: int) -> None:
        """Kill one rank (`faults.kill_learner_rank_at_step`): the next call fails naming it."""
        await self.setup()
        ray.kill(self.ranks[rank])


def _node_id(actor: Any) -> str:
    return ray.get_runtime_context().get_node_id()
