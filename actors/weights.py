"""Weight transport: how a new policy version travels from the learner's parameters into the engines.

Three ends, each in one place:
- the learner takes a `snapshot` of its parameters (`LearnerRank.get_weights`, on rank 0);
- the driver fans one snapshot out to every engine (`broadcast`, `sync_weights`);
- each engine `apply`s it: an in-place load (`GeneratorActor.update_weights` holds requests back around
  it and keeps what the old weights computed from serving the new version).

`ObjectStoreTransport` (`rollout.weight_sync=object_store`): the parameters packed into one persistent flat
buffer on the learner (`agentrl.actors.weight_buffers`), Ray's object store (zero-copy serialisation; each
engine's node fetches the object once and every engine there maps it; works across nodes), one copy into
a persistent shared-memory file the engine process has mapped, and an in-place load there through a vLLM
worker extension.
"""

from __future__ import annotations

import asyncio
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
    """Flat buffer -> Ray's object store -> shared-memory file -> in-place load in the engine process."""

    def __init__(self, prefix: str = "agentrl-weights-") -> None:
        self.packer = WeightPacker()  # the learner's end, made lazily
        self.file = SharedWeightFile(prefix)  # the engine's end: made on the first apply

    def snapshot(self, state: Mapping[str, Any], version: int) -> PackedWeights:
        return self.packer.pack(state, version)

    async def apply(self, engine: Any, snapshot: PackedWeights | WeightSnapshot) -> None:
        if isinstance(snapshot, WeightSnapshot):  # tensors by name (a test's, a restore): packed here
            snapshot = self.packer.pack({k: torch.as_tensor(v) for k, v in snapshot.tensors.items()},
                                        snapshot.version)
        await engine.collective_rpc("agentrl_load_shared", kwargs=self.file.write(snapshot))

    def close(self) -> None:
        self.file.close()


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


async def sync_weights(learner: Any, engines: list[Any]) -> float:
    """The learner's current policy into every engine: the end of each training step. The snapshot goes
    from learner rank 0's node to the engines' nodes, never through the driver or the group actor."""
    [ref] = await learner.weights_ref.remote()
    return await broadcast(ref, engines)
