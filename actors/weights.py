"""Weight transport: how a new policy version travels from the learner's parameters into the engines.

Three ends, each in one place:
- the learner takes a `snapshot` of its parameters (`LearnerRank.get_weights`, on rank 0);
- the driver fans one snapshot out to every engine (`broadcast`, `sync_weights`);
- each engine `apply`s it: an in-place load (`GeneratorActor.update_weights` holds requests back around
  it and keeps what the old weights computed from serving the new version).

Two transports, chosen by `rollout.weight_sync` (`weight_sync_method`):
- `object_store`: the parameters packed into one persistent flat buffer on learner rank 0, in a
  shared-memory file (`agentrl.actors.weight_buffers`). An engine on rank 0's node maps that buffer itself
  and loads from it in place through a vLLM worker extension: one copy, the packing, before the load. An
  engine on another node gets the bytes through Ray's object store (zero-copy serialisation; its node
  fetches the object once and every engine there maps it), copied into a persistent shared-memory file
  its engine process has mapped (`ObjectStoreTransport`, `broadcast`, `sync_weights`);
- `collective`: a process group of learner rank 0 and every engine's model process (gloo on the CPU, NCCL
  on GPUs), the packed buffer broadcast in buckets of `rollout.weight_bucket_mb` and loaded as it arrives
  (`collective_push`). The group is (re)built when the engines it holds change (a restart, another set).
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from agentrl.actors.weight_buffers import SharedWeightFile, WeightPacker
from agentrl.records import PackedWeights, WeightSnapshot

# the vLLM worker extension every engine is started with (`EngineWeightLoader`)
ENGINE_EXTENSION = "agentrl.actors.weight_buffers.EngineWeightLoader"


class WeightTransport(ABC):
    """The learner end (`snapshot`) and the engine end (`apply`) of a weight update."""

    @abstractmethod
    def snapshot(self, state: Mapping[str, Any], version: int) -> Any:
        """The learner's parameters (a state dict of tensors), tagged with their policy version, in the form
        the transport carries."""

    @abstractmethod
    async def apply(self, engine: Any, snapshot: Any) -> None:
        """Load `snapshot` into a running vLLM `AsyncLLM` in place (its caches are the caller's business)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the transport keeps between updates."""


class ObjectStoreTransport(WeightTransport):
    """Flat buffer -> (on the learner's node) mapped by the engine process, or (elsewhere) Ray's object store
    -> shared-memory file -> in-place load in the engine process."""

    def __init__(self, prefix: str = "agentrl-weights-") -> None:
        self.packer = WeightPacker()  # the learner's end, made lazily
        self.file = SharedWeightFile(prefix)  # the engine's end for bytes from another node: made on first use

    def snapshot(self, state: Mapping[str, Any], version: int) -> PackedWeights:
        return self.packer.pack(state, version)

    def with_data(self, packed: PackedWeights) -> PackedWeights:
        """The packed version with its bytes (for the object store or a collective broadcast)."""
        return self.packer.with_data(packed)

    async def apply(self, engine: Any, snapshot: PackedWeights | WeightSnapshot) -> None:
        if isinstance(snapshot, WeightSnapshot):  # tensors by name (a test's, a restore): packed here
            snapshot = self.packer.pack({k: torch.as_tensor(v) for k, v in snapshot.tensors.items()},
                                        snapshot.version)
            if snapshot.shared is None:
                snapshot = self.packer.with_data(snapshot)
        if snapshot.data is None:  # a buffer on this node: the engine maps it
            assert snapshot.shared is not None, "a packed version with neither bytes nor a shared buffer"
            where = {"path": snapshot.shared.path, "size": snapshot.shared.size, "key": snapshot.shared.buffer_id}
        else:
            where = self.file.write(snapshot)
        await engine.collective_rpc("agentrl_load_shared", kwargs={
            **where, "slots": [s.as_tuple() for s in snapshot.slots], "version": snapshot.version,
            "generation": snapshot.generation})
        if snapshot.data is not None:
            self.file.mapped()

    def close(self) -> None:
        self.file.close()
        self.packer.close()


async def broadcast(snapshot: Any, engines: list[Any]) -> float:
    """Load one snapshot (or an object ref to one: each engine's node fetches it once) into every engine
    (`GeneratorActor` handles); returns the slowest engine's seconds. An engine that died is skipped: Ray
    restarts it, and it serves only after the next push (see `GeneratorActor.update_weights`)."""
    from ray.exceptions import RayActorError

    results = await asyncio.gather(*[h.update_weights.remote(snapshot) for h in engines], return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, RayActorError):
            raise r
    return max((r for r in results if not isinstance(r, BaseException)), default=0.0)


def weight_sync_method(rollout: Any, learner: Any) -> str:
    """`rollout.weight_sync` resolved: `auto` is `collective` when the learner and every engine have a GPU of
    their own (one per engine: NCCL, `rollout.tensor_parallel_size=1`), else `object_store` (on the CPU the
    faster one: docs/benchmarks.md#weights)."""
    if rollout.weight_sync != "auto":
        return rollout.weight_sync
    on_gpus = rollout.num_gpus_per_engine >= 1 and rollout.tensor_parallel_size == 1 and learner.num_gpus >= 1
    return "collective" if on_gpus else "object_store"


async def sync_weights(learner: Any, engines: list[Any], method: str = "object_store", bucket_mb: int = 256) -> float:
    """The learner's current policy into every engine: the end of each training step; returns the slowest
    engine's seconds. The weights go from learner rank 0's node to the engines' nodes, never through the
    driver or the group actor. An engine that died is skipped: Ray restarts it, and it serves only after a
    later push."""
    if method == "collective":
        return await collective_push(learner, engines, bucket_mb << 20)
    [ref] = await learner.weights_ref.remote()
    packed = await ref  # the layout and where the buffer is (small): the bytes stay in rank 0's buffer
    nodes = await asyncio.gather(*[h.node_id.remote() for h in engines], return_exceptions=True)
    # an engine on another node gets the bytes, one on rank 0's node the record (one that died too:
    # `broadcast` skips it)
    is_far = [isinstance(n, str) and (packed.shared is None or n != packed.shared.node_id) for n in nodes]
    far = [h for h, f in zip(engines, is_far, strict=True) if f]
    near = [h for h, f in zip(engines, is_far, strict=True) if not f]
    data_ref = (await learner.weights_data_ref.remote(packed))[0] if far else None
    return max(await asyncio.gather(broadcast(ref, near), broadcast(data_ref, far)))


async def collective_push(learner: Any, engines: list[Any], bucket_bytes: int) -> float:
    """Broadcast the learner's weights to the live `engines` through the weight group, (re)built first when
    it does not hold exactly them."""
    from ray.exceptions import RayActorError

    ids = await asyncio.gather(*[h.weight_group.remote() for h in engines], return_exceptions=True)
    for r in ids:
        if isinstance(r, BaseException) and not isinstance(r, RayActorError):
            raise r
    live = [h for h, i in zip(engines, ids, strict=True) if not isinstance(i, BaseException)]
    live_ids = [i for i in ids if not isinstance(i, BaseException)]
    group = await learner.weight_group.remote()
    if group is None or group[1] != len(live) + 1 or any(i != group[0] for i in live_ids):
        await build_weight_group(learner, live)
    results = await asyncio.gather(learner.broadcast_weights.remote(bucket_bytes),
                                   *[h.receive_weights.remote(bucket_bytes) for h in live])
    return max(results[1:], default=0.0)


async def build_weight_group(learner: Any, engines: list[Any]) -> None:
    """A new weight group: learner rank 0 (rank 0) and the engines (ranks 1..n) meet at rank 0's node;
    NCCL when the learner has a GPU, else gloo (`rollout.weight_sync` is checked so that both sides agree)."""
    await asyncio.gather(*[h.start.remote() for h in engines])  # a restarted engine first loads its model
    group_id = uuid.uuid4().hex
    world = len(engines) + 1
    host, port, backend = await learner.open_weight_group.remote(world)
    await asyncio.gather(learner.join_weight_group.remote(world, group_id, backend),
                         *[h.join_weight_group.remote(host, port, i + 1, world, group_id, backend)
                           for i, h in enumerate(engines)])
