"""The weight push's flat buffers: a version ships each tensor's own bytes once, in the learner's dtype, in
one persistent buffer on each side; the engine process reads it through a shared-memory file."""

from __future__ import annotations

import mmap
import pickle

import torch

from agentrl.actors.weight_buffers import SharedWeightFile, WeightPacker, unpack, views
from agentrl.records import TensorSlot


def test_a_packed_version_of_views_into_one_flat_buffer_ships_only_their_bytes():
    # DeepSpeed's ZeRO-1/2 parameters are views into one flat buffer per group; pickled as they are, each
    # would carry the whole buffer (a 100M-parameter snapshot grew past 16 GB that way)
    flat = torch.arange(100_000, dtype=torch.float32).to(torch.bfloat16)
    state = {f"w{i}": flat[i * 1000:(i + 1) * 1000].view(10, 100) for i in range(100)}
    packed = WeightPacker().pack(state, 3)
    tensors = unpack(packed)
    assert packed.version == 3 and all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert all(torch.equal(tensors[k], v) for k, v in state.items())
    assert len(pickle.dumps(packed)) < 1.2 * flat.numel() * flat.element_size()  # not 100 buffers


def test_the_packer_keeps_one_pretouched_buffer_and_lays_out_again_only_when_the_tensors_change():
    packer = WeightPacker()
    state = {"a": torch.ones(3, 5), "b": torch.zeros(7, dtype=torch.bfloat16)}
    first = packer.pack(state, 1)
    ptr = packer.buffer.data_ptr()
    state["a"] += 1
    second = packer.pack(state, 2)
    assert packer.buffer.data_ptr() == ptr and torch.equal(unpack(second)["a"], torch.full((3, 5), 2.0))
    assert all(s.offset % 64 == 0 for s in first.slots)  # aligned for any dtype
    packer.pack({**state, "c": torch.ones(2)}, 3)
    assert [s.name for s in packer.slots] == ["a", "b", "c"]


def test_the_shared_file_holds_the_version_the_engine_process_maps_and_is_removed_at_close(tmp_path):
    state = {"x": torch.randn(4, 4), "y": torch.arange(6, dtype=torch.int64), "z": torch.randn(3).to(torch.bfloat16)}
    shared = SharedWeightFile("agentrl-test-")
    meta = shared.write(WeightPacker().pack(state, 5))
    with open(meta["path"], "r+b") as f:  # as EngineWeightLoader maps it, in another process
        mapped = mmap.mmap(f.fileno(), meta["size"])
    got = dict(views(torch.frombuffer(mapped, dtype=torch.uint8), [TensorSlot(*s) for s in meta["slots"]]))
    assert all(torch.equal(got[k], v) for k, v in state.items())
    path = meta["path"]
    del got
    shared.close()
    import os

    assert not os.path.exists(path)
