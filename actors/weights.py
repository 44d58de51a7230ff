"""Weight transport: how a new policy version travels from the learner's parameters into the engines.

Three ends, each in one place:
- the learner takes a `snapshot` of its parameters (`LearnerRank.get_weights`, on rank 0);
- the driver fans one snapshot out to every engine (`broadcast`, `sync_weights`);
- each engine `apply`s it: an in-place reload (`GeneratorActor.update_weights` holds requests back around
  it and keeps what the old weights computed from serving the new version).

`ObjectStoreReload` is the one implementation: CPU torch tensors (any dtype, bf16 too) through Ray's
object store (each engine's node fetches the snapshot once; works across nodes), written as safetensors
to /dev/shm and loaded by vLLM's `reload_weights`. A GPU path (NCCL broadcast from the learner's rank 0
to the engines' workers) is another `WeightTransport` with the same two ends.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from agentrl.records import WeightSnapshot


class WeightTransport(ABC):
    """The learner end (`snapshot`) and the engine end (`apply`) of a weight update."""

    @abstractmethod
    def snapshot(self, state: Mapping[str, Any], version: int) -> WeightSnapshot:
        """The learner's parameters (a state dict of tensors), tagged with their policy version."""

    @abstractmethod
    async def apply(self, engine: Any, snapshot: WeightSnapshot) -> None:
        """Load `snapshot` into a running vLLM `AsyncLLM` in place (its caches are the caller's business)."""

    @abstractmethod
    def close(self) -> None:
        """Release what `apply` keeps between updates (the engine's end, at shutdown)."""


class ObjectStoreReload(WeightTransport):
    """Object store + /dev/shm safetensors + vLLM `reload_weights`."""

    def __init__(self, prefix: str = "agentrl-weights-") -> None:
        self.prefix = prefix
        self._dir: str | None = None  # made on the first apply: the learner's end needs none

    def snapshot(self, state: Mapping[str, Any], version: int) -> WeightSnapshot:
        # no numpy round trip: numpy has no bfloat16
        return WeightSnapshot(version, {k: compact_cpu(v) for k, v in state.items()})

    async def apply(self, engine: Any, snapshot: WeightSnapshot) -> None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix=self.prefix, dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        path = os.path.join(self._dir, f"v{snapshot.version}")
        write_safetensors(snapshot, path)
        await engine.collective_rpc("reload_weights", kwargs={"weights_path": path})
        for old in os.listdir(self._dir):
            if old != f"v{snapshot.version}":
                shutil.rmtree(os.path.join(self._dir, old), ignore_errors=True)

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def compact_cpu(tensor: Any) -> Any:
    """A CPU tensor holding exactly this tensor's bytes. DeepSpeed's parameters are views into one flat
    buffer, and pickling a view ships its whole buffer: a snapshot of N parameters would ship N buffers."""
    t = tensor.detach().cpu()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or not t.is_contiguous():
        t = t.clone(memory_format=torch.contiguous_format)
    return t


def write_safetensors(snapshot: WeightSnapshot, folder: str) -> None:
    """The snapshot as `folder/model.safetensors` (the layout vLLM's `reload_weights` reads)."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    tensors = {k: v.contiguous() if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v))
               for k, v in snapshot.tensors.items()}  # a test's snapshot may hold numpy arrays
    save_file(tensors, os.path.join(folder, "model.safetensors"))


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
