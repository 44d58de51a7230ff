"""The weight push's flat buffers: a version ships each tensor's own bytes once, in the learner's dtype, in
one persistent buffer on each side; the engine process reads it through a shared-memory file."""

from __future__ import annotations

import mmap
import os
import pickle
import subprocess
import sys

import pytest
import torch

from agentrl.actors.weight_buffers import WRITING, SharedWeightFile, WeightPacker, check_stamp, stamp, unpack, views


def test_a_packed_version_of_views_into_one_flat_buffer_ships_only_their_bytes():
    # DeepSpeed's ZeRO-1/2 parameters are views into one flat buffer per group; pickled as they are, each
    # would carry the whole buffer (a 100M-parameter snapshot grew past 16 GB that way)
    flat = torch.arange(100_000, dtype=torch.float32).to(torch.bfloat16)
    state = {f"w{i}": flat[i * 1000:(i + 1) * 1000].view(10, 100) for i in range(100)}
    packer = WeightPacker()
    packed = packer.with_data(packer.pack(state, 3))
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
    assert packer.buffer.data_ptr() == ptr
    assert torch.equal(unpack(packer.with_data(second))["a"], torch.full((3, 5), 2.0))
    assert all(s.offset % 64 == 0 for s in first.slots)  # aligned for any dtype
    packer.pack({**state, "c": torch.ones(2)}, 3)
    assert [s.name for s in packer.slots] == ["a", "b", "c"]


def test_the_shared_file_holds_the_version_the_engine_process_maps_and_is_removed_at_close(tmp_path):
    state = {"x": torch.randn(4, 4), "y": torch.arange(6, dtype=torch.int64), "z": torch.randn(3).to(torch.bfloat16)}
    shared, packer = SharedWeightFile("agentrl-test-"), WeightPacker()
    packed = packer.pack(state, 5)
    meta = shared.write(packer.with_data(packed))
    with open(meta["path"], "r+b") as f:  # as EngineWeightLoader maps it, in another process
        mapped = mmap.mmap(f.fileno(), meta["size"])
    got = dict(views(torch.frombuffer(mapped, dtype=torch.uint8), packed.slots))
    assert all(torch.equal(got[k], v) for k, v in state.items())
    path = meta["path"]
    del got
    shared.close()
    assert not os.path.exists(path)


def test_another_process_maps_the_packers_buffer_and_can_tell_a_whole_packing_from_a_rewritten_one():
    """What an engine on the learner's node does: map the learner's buffer through /proc (no copy) and check
    the header before and after loading, so a packing rewritten under a load (a later version, or the same
    version packed again) fails, naming the buffer."""
    packer = WeightPacker()
    state = {"w": torch.arange(12, dtype=torch.float32).view(3, 4), "b": torch.ones(5).to(torch.bfloat16)}
    packed = packer.pack(state, 7)
    assert packed.data is None and packed.shared is not None  # the record is small: layout and where
    code = (f"import mmap; f = open({packed.shared.path!r}, 'rb'); "
            f"m = mmap.mmap(f.fileno(), {packed.shared.size}, access=mmap.ACCESS_READ); "
            f"print(bytes(m[{packed.slots[0].offset}:{packed.slots[0].offset + 48}]).hex())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert bytes.fromhex(r.stdout.strip()) == state["w"].numpy().tobytes(), r.stderr
    check_stamp(packer.buffer, packed, packed.shared.path, "after")  # whole
    stamp(packer.buffer).fill_(WRITING)
    with pytest.raises(RuntimeError, match=f"weight buffer {packed.shared.path}: being rewritten after loading"):
        check_stamp(packer.buffer, packed, packed.shared.path, "after")
    packer.pack(state, 7)  # the same version again: another packing
    with pytest.raises(RuntimeError, match=r"a later packing \(2\) before loading version 7 \(packing 1\)"):
        check_stamp(packer.buffer, packed, packed.shared.path, "before")
    with pytest.raises(RuntimeError, match="weight buffer of the learner"):
        packer.with_data(packed)  # the bytes of packing 1 are gone
    packer.close()
    assert not os.path.exists(packed.shared.path)  # closed: no new mapping (an existing one stays valid)
