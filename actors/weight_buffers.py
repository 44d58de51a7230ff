"""Flat weight buffers: how a policy version's tensors cross from the learner into an engine's model with
few copies and no pickling, file or fresh pages.

- `WeightPacker` (learner rank 0): the parameters copied into one persistent, pre-touched byte buffer in an
  anonymous shared-memory file (memfd), after a header that says which version it holds (`stamp`). An
  engine process on the same node maps it through /proc (`SharedBuffer`): no further copy. For engines on
  other nodes `with_data` gives its numpy view, which Ray puts into its object store as one buffer
  (zero-copy serialisation: no tensor pickling) and hands to every engine on a node as a read-only mapping
  of the same object.
- `SharedWeightFile` (engine actor, for bytes from another node): one persistent, pre-touched file in
  /dev/shm that the engine actor copies a version into (one copy) and vLLM's engine process maps once.
- `EngineWeightLoader` (a vLLM worker extension, in the engine process): views of the mapped buffer by the
  packed layout, loaded in place through vLLM's `reload_weights` with a weights iterator (no path: no
  engine state points at a file that the next push replaces), which re-runs each layer's post-load
  processing (the CPU's prepacked GEMM weights, quantized layers); the header is checked before and after.
- The collective path (`rollout.weight_sync=collective`): a process group of learner rank 0 and every
  engine's model process (`open_weight_group`: gloo on the CPU, NCCL on GPUs); rank 0 broadcasts a header
  (version, layout) and then the packed buffer in buckets (`send_packed`); each engine loads a tensor as
  soon as its bytes have arrived (`EngineWeightLoader.agentrl_receive`), so loading overlaps receiving.
"""

from __future__ import annotations

import json
import mmap
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import numpy as np
import torch

from agentrl.records import PackedWeights, SharedBuffer, TensorSlot

ALIGN = 64  # every tensor starts on a cache line (and on any dtype's alignment)
# how long a weight group's members wait for each other (rendezvous, a header while rank 0 gathers and packs)
GROUP_TIMEOUT_S = 600.0


# a buffer starts with a header: the generation (the count of packings) its tensors hold (int64), WRITING while
# they are being replaced, so that a reader can tell a packing it read whole from one rewritten under it
HEADER = ALIGN
WRITING = -1


def layout(state: Mapping[str, torch.Tensor]) -> list[TensorSlot]:
    """Where each tensor goes in the flat buffer (after the header), in the state's order."""
    slots, offset = [], HEADER
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        slots.append(TensorSlot(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), offset, nbytes))
        offset += -(-nbytes // ALIGN) * ALIGN
    return slots


def buffer_size(slots: list[TensorSlot]) -> int:
    return max((s.offset + s.nbytes for s in slots), default=HEADER)


def views(buffer: torch.Tensor, slots: list[TensorSlot]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) views of a flat uint8 buffer by `slots` (no copy)."""
    for s in slots:
        yield s.name, buffer[s.offset:s.offset + s.nbytes].view(getattr(torch, s.dtype)).view(s.shape)


def stamp(buffer: torch.Tensor) -> torch.Tensor:
    """The header's generation field (a one-element int64 view)."""
    return buffer[:8].view(torch.int64)


def check_stamp(buffer: torch.Tensor, packed: PackedWeights, where: str, when: str) -> None:
    """RuntimeError naming `where` unless the buffer's header says it holds `packed`'s packing whole."""
    found = int(stamp(buffer)[0])
    if found != packed.generation:
        state = "being rewritten" if found == WRITING else f"a later packing ({found})"
        raise RuntimeError(f"weight buffer {where}: {state} {when} loading version {packed.version} "
                           f"(packing {packed.generation})")


def pretouched(nbytes: int) -> torch.Tensor:
    """A uint8 buffer whose pages are all mapped (a copy into fresh pages runs at a fraction of memory speed)."""
    buf = torch.empty(max(nbytes, 1), dtype=torch.uint8)
    buf.fill_(0)
    return buf


class WeightPacker:
    """The learner's end: one persistent, pre-touched buffer, re-made only when the tensors' names, shapes or
    dtypes change. It lives in an anonymous shared-memory file (memfd) that the engines of this node map
    through /proc (`shared`), so a version crosses to them with one copy, the packing; engines elsewhere, or
    every engine where no memfd can be made (private memory, `shared` None), get the bytes (`with_data`)."""

    def __init__(self) -> None:
        self.slots: list[TensorSlot] = []
        self.buffer = torch.empty(0, dtype=torch.uint8)
        self.shared: SharedBuffer | None = None
        self.generation = 0  # packings so far (the header's stamp)
        self._fd: int | None = None

    def pack(self, state: Mapping[str, torch.Tensor], version: int) -> PackedWeights:
        """Copy `state` into the buffer; the record holds the layout and where the buffer is (`shared`; None:
        the bytes travel, `with_data`), not the bytes."""
        slots = layout(state)
        if slots != self.slots:
            self._make(buffer_size(slots))
            self.slots = slots
        self.generation += 1
        stamp(self.buffer).fill_(WRITING)
        for (_, dst), t in zip(views(self.buffer, slots), state.values(), strict=True):
            dst.copy_(t.detach())
        stamp(self.buffer).fill_(self.generation)
        return PackedWeights(version, slots, shared=self.shared, generation=self.generation)

    def with_data(self, packed: PackedWeights) -> PackedWeights:
        """`packed` with the buffer's bytes (for an engine on another node, or a copy by name); fails, naming
        the buffer, when it has been packed again since."""
        check_stamp(self.buffer, packed, "of the learner", "before")
        return PackedWeights(packed.version, packed.slots, self.buffer.numpy(), generation=packed.generation)

    def _make(self, size: int) -> None:
        self.close()
        fd = None
        try:
            fd = os.memfd_create("agentrl-weights", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
            region = mmap.mmap(fd, size)
        except (AttributeError, OSError):  # no memfd here: private memory, bytes through the object store
            if fd is not None:
                os.close(fd)
            self.buffer = pretouched(size)
            return
        self._fd = fd
        self.buffer = torch.frombuffer(region, dtype=torch.uint8)  # keeps `region` alive
        self.buffer.fill_(0)  # pre-touch
        self.shared = SharedBuffer(current_node_id(), f"/proc/{os.getpid()}/fd/{fd}", size, uuid.uuid4().hex)

    def close(self) -> None:
        """Close the buffer's file: engines that mapped it keep their mapping, no new one can be made."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self.shared = None, None


def current_node_id() -> str:
    """Ray's id of this process's node ("" outside Ray): where a `SharedBuffer` can be mapped."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def unpack(packed: PackedWeights) -> dict[str, torch.Tensor]:
    """The tensors of a packed version that carries its bytes (views of them; read-only when they came from
    the object store)."""
    if packed.data is None:
        raise ValueError("unpack needs a packed version with its bytes (WeightPacker.with_data)")
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
        """Copy `packed` into the file; returns what the engine process needs to load it (the path only until
        `mapped`: the file is unlinked once the engine has mapped it, so a crash leaves nothing in /dev/shm)."""
        need = buffer_size(packed.slots)
        if need > self.size:
            self._make(need)
        dst = np.frombuffer(self._map, dtype=np.uint8, count=need)
        np.copyto(dst, packed.data[:need])
        return {"path": self.path, "size": self.size, "key": self.path}

    def mapped(self) -> None:
        """The engine process has mapped the file: unlink it (both mappings stay valid)."""
        if self.path and os.path.exists(self.path):
            os.unlink(self.path)

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


class WeightGroup:
    """A process group of its own for weight pushes (not torch's default one, which the learner ranks use):
    met at a TCP store hosted by rank 0 (`host_weight_store`), gloo on the CPU, NCCL where CUDA is. Every
    member must make it (`open_weight_group`)."""

    def __init__(self, store: Any, rank: int, world_size: int, backend: str,
                 timeout_s: float = GROUP_TIMEOUT_S) -> None:
        import torch.distributed as dist

        timeout = timedelta(seconds=timeout_s)
        self.backend = backend
        self.store = store  # outlives setup
        prefixed = dist.PrefixStore("agentrl-weights", store)
        if backend == "nccl":
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.group = dist.ProcessGroupNCCL(prefixed, rank, world_size, opts)
        else:
            self.group = dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)

    @property
    def device(self) -> str:
        return "cuda" if self.backend == "nccl" else "cpu"

    def broadcast(self, tensor: torch.Tensor) -> None:
        """Rank 0's `tensor` into every member's `tensor` (same shape and dtype)."""
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.group.broadcast([tensor], opts).wait()

    def synchronize(self) -> None:
        """NCCL's `wait` only orders the GPU stream: block until the transfers are done (errors surface here)."""
        if self.backend == "nccl":
            torch.cuda.synchronize()


def host_weight_store(host: str, world_size: int) -> Any:
    """Rank 0's TCP store for a weight group, listening on `host` at a port the OS assigns as it binds
    (`.port`). (A port found free and bound later can be taken in between by another process.)"""
    import torch.distributed as dist

    return dist.TCPStore(host, 0, world_size, is_master=True, wait_for_workers=False,
                         timeout=timedelta(seconds=GROUP_TIMEOUT_S))


def open_weight_group(host: str, port: int, rank: int, world_size: int, backend: str) -> WeightGroup:
    """Join, as member `rank` (> 0), the weight group whose store rank 0 hosts at host:port; returns when
    every member has (rank 0 makes `WeightGroup` on the store it hosts)."""
    import torch.distributed as dist

    store = dist.TCPStore(host, port, world_size, is_master=False, timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    return WeightGroup(store, rank, world_size, backend)


def send_packed(group: WeightGroup, packed: PackedWeights, bucket_bytes: int) -> None:
    """Rank 0's side of a push: the header (version, layout), then the buffer in buckets of `bucket_bytes`."""
    meta = json.dumps([s.as_tuple() for s in packed.slots]).encode()
    group.broadcast(torch.tensor([packed.version, len(meta)], dtype=torch.int64, device=group.device))
    group.broadcast(torch.frombuffer(bytearray(meta), dtype=torch.uint8).to(group.device))
    data = torch.from_numpy(packed.data)
    total = buffer_size(packed.slots)
    # on a GPU one bucket at a time goes through a staging buffer: no whole extra copy on the device
    staging = torch.empty(min(bucket_bytes, total), dtype=torch.uint8, device=group.device) \
        if group.device != "cpu" else None
    for start in range(0, total, bucket_bytes):
        chunk = data[start:min(start + bucket_bytes, total)]
        if staging is not None:
            chunk = staging[:chunk.numel()].copy_(chunk)
        group.broadcast(chunk)
    group.synchronize()


def received_weights(group: WeightGroup, buffer: torch.Tensor, slots: list[TensorSlot],
                     bucket_bytes: int) -> Iterator[tuple[str, torch.Tensor]]:
    """A member's side of a push: (name, tensor) as soon as each tensor's bytes have arrived in `buffer`;
    exhausted, it has received every bucket (the next push starts with a header)."""
    got, total = 0, buffer_size(slots)

    def receive_until(end: int) -> None:
        nonlocal got
        while got < end:
            nxt = min(got + bucket_bytes, total)
            group.broadcast(buffer[got:nxt])
            got = nxt

    for slot, (name, view) in zip(slots, views(buffer, slots), strict=True):
        receive_until(slot.offset + slot.nbytes)
        yield name, view
    receive_until(total)


def receive_header(group: WeightGroup) -> tuple[int, list[TensorSlot]]:
    """The version and layout rank 0 sends first."""
    head = torch.zeros(2, dtype=torch.int64, device=group.device)
    group.broadcast(head)
    meta = torch.zeros(int(head[1]), dtype=torch.uint8, device=group.device)
    group.broadcast(meta)
    return int(head[0]), [TensorSlot(n, d, tuple(s), o, b) for n, d, s, o, b in json.loads(bytes(meta.cpu().numpy()))]


class EngineWeightLoader:
    """vLLM worker extension (`worker_extension_cls`): loads a version from a `SharedWeightFile` into the
    model in place. Runs in the process that holds the model; the file is mapped once per path."""

    def agentrl_load_shared(self, path: str, size: int, key: str, slots: list[tuple], version: int,
                            generation: int) -> int:
        """Load `version` from the buffer at `path` (mapped read-only once per `key`); fails, naming the
        buffer, when it does not hold that packing (`generation`) whole from start to end of the load."""
        import warnings

        maps = self.__dict__.setdefault("_agentrl_maps", {})
        if key not in maps:
            # another buffer now: forget the old mapping without closing it (a reload that failed part-way
            # may still hold views of it); it is unmapped when the last view goes
            maps.clear()
            with open(path, "rb") as f:
                maps[key] = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
        with warnings.catch_warnings():  # read-only: the engine only ever reads a learner's buffer
            warnings.simplefilter("ignore", UserWarning)
            buffer = torch.frombuffer(maps[key], dtype=torch.uint8, count=size)
        packed = PackedWeights(version, [TensorSlot(*s) for s in slots], generation=generation)
        check_stamp(buffer, packed, path, "before")
        self.reload_weights(weights_iterator=views(buffer, packed.slots), is_checkpoint_format=True)  # sets config
        check_stamp(buffer, packed, path, "after")
        return len(slots)

    def agentrl_join_group(self, host: str, port: int, rank: int, world_size: int, backend: str) -> None:
        """Join the learner's weight group (`open_weight_group`) as `rank`; a previous group is dropped."""
        self.__dict__.pop("_agentrl_group", None)
        self.__dict__["_agentrl_group"] = open_weight_group(host, port, rank, world_size, backend)

    def agentrl_receive(self, bucket_bytes: int) -> int:
        """Receive one pushed version from the weight group and load it in place; returns its version."""
        group = self.__dict__["_agentrl_group"]
        version, slots = receive_header(group)
        need = buffer_size(slots)
        buffer = self.__dict__.get("_agentrl_recv")
        # persistent, re-made only when a version needs more; on a GPU this is a whole model copy next to
        # the engine's (rollout.gpu_memory_utilization must leave room for it)
        if buffer is None or buffer.numel() < need:
            buffer = torch.zeros(need, dtype=torch.uint8, device=group.device)
            self.__dict__["_agentrl_recv"] = buffer
        weights = received_weights(group, buffer, slots, bucket_bytes)
        self.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        for _ in weights:  # whatever the loader left unread: the group's next message is the next header
            pass
        group.synchronize()
        return version
