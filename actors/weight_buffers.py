"""Flat weight buffers: how a policy version's tensors cross from the learner into an engine's model with
few copies and no pickling, file or fresh pages.

- `WeightPacker` (learner rank 0): the parameters copied into one persistent, pre-touched byte buffer;
  `PackedWeights` holds a numpy view of it, which Ray puts into its object store as one buffer (zero-copy
  serialisation: no tensor pickling) and hands to every engine on a node as a read-only mapping of the
  same object.
- `SharedWeightFile` (engine actor): one persistent, pre-touched file in /dev/shm that the engine actor
  copies a version into (one copy) and vLLM's engine process maps once.
- `EngineWeightLoader` (a vLLM worker extension, in the engine process): views of the mapped file by the
  packed layout, loaded in place through vLLM's `reload_weights` with a weights iterator (no path: no
  engine state points at a file that the next push replaces), which re-runs each layer's post-load
  processing (the CPU's prepacked GEMM weights, quantized layers).
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from agentrl.records import PackedWeights, TensorSlot

ALIGN = 64  # every tensor starts on a cache line (and on any dtype's alignment)


def layout(state: Mapping[str, torch.Tensor]) -> list[TensorSlot]:
    """Where each tensor goes in the flat buffer, in the state's order."""
    slots, offset = [], 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        slots.append(TensorSlot(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), offset, nbytes))
        offset += -(-nbytes // ALIGN) * ALIGN
    return slots


def buffer_size(slots: list[TensorSlot]) -> int:
    return max((s.offset + s.nbytes for s in slots), default=0)


def views(buffer: torch.Tensor, slots: list[TensorSlot]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) views of a flat uint8 buffer by `slots` (no copy)."""
    for s in slots:
        yield s.name, buffer[s.offset:s.offset + s.nbytes].view(getattr(torch, s.dtype)).view(s.shape)


def pretouched(nbytes: int) -> torch.Tensor:
    """A uint8 buffer whose pages are all mapped (a copy into fresh pages runs at a fraction of memory speed)."""
    buf = torch.empty(max(nbytes, 1), dtype=torch.uint8)
    buf.fill_(0)
    return buf


class WeightPacker:
    """The learner's end: one persistent buffer, re-laid out only when the tensors' names, shapes or dtypes
    change."""

    def __init__(self) -> None:
        self.slots: list[TensorSlot] = []
        self.buffer = torch.empty(0, dtype=torch.uint8)

    def pack(self, state: Mapping[str, torch.Tensor], version: int) -> PackedWeights:
        slots = layout(state)
        if slots != self.slots:
            self.slots, self.buffer = slots, pretouched(buffer_size(slots))
        for (_, dst), t in zip(views(self.buffer, slots), state.values(), strict=True):
            dst.copy_(t.detach())
        return PackedWeights(version, slots, self.buffer.numpy())


def unpack(packed: PackedWeights) -> dict[str, torch.Tensor]:
    """The tensors of a packed version (views of its buffer; read-only when it came from the object store)."""
    return dict(views(_as_tensor(packed.data), packed.slots))


def _as_tensor(data: np.ndarray) -> torch.Tensor:
    if not data.flags.writeable:  # Ray's mapping of the object: torch warns about, but only reads, it
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(data)
    return torch.from_numpy(data)


class SharedWeightFile:
    """The engine actor's end: a /dev/shm file that one version at a time is copied into; grown (re-made)
    only when a version needs more room."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.path = ""
        self.size = 0
        self._map: mmap.mmap | None = None

    def write(self, packed: PackedWeights) -> dict[str, Any]:
        """Copy `packed` into the file; returns what the engine process needs to load it."""
        need = buffer_size(packed.slots)
        if need > self.size:
            self._make(need)
        dst = np.frombuffer(self._map, dtype=np.uint8, count=need)
        np.copyto(dst, packed.data[:need])
        return {"path": self.path, "size": self.size, "slots": [s.as_tuple() for s in packed.slots]}

    def _make(self, size: int) -> None:
        self.close()
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, self.path = tempfile.mkstemp(prefix=self.prefix, suffix=".weights", dir=folder)
        os.ftruncate(fd, size)
        self._map = mmap.mmap(fd, size)
        os.close(fd)
        np.frombuffer(self._map, dtype=np.uint8).fill(0)  # pre-touch
        self.size = size

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path, self.size = "", 0


class EngineWeightLoader:
    """vLLM worker extension (`worker_extension_cls`): loads a version from a `SharedWeightFile` into the
    model in place. Runs in the process that holds the model; the file is mapped once per path."""

    def agentrl_load_shared(self, path: str, size: int, slots: list[tuple]) -> int:
        maps = self.__dict__.setdefault("_agentrl_maps", {})
        if path not in maps:
            for old in list(maps):  # the actor re-made its file: drop the old mapping
                maps.pop(old).close()
            with open(path, "r+b") as f:
                maps[path] = mmap.mmap(f.fileno(), size)
        buffer = torch.frombuffer(maps[path], dtype=torch.uint8, count=size)
        weights = views(buffer, [TensorSlot(*s) for s in slots])
        self.model_runner.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        return len(slots)
