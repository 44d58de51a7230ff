"""The weight snapshot ships each tensor's own bytes, in the learner's dtype."""

from __future__ import annotations

import pickle

import torch

from agentrl.actors.weights import ObjectStoreReload


def test_a_snapshot_of_views_into_one_flat_buffer_ships_only_their_bytes():
    # DeepSpeed's ZeRO-1/2 parameters are views into one flat buffer per group; pickled as they are, each
    # would carry the whole buffer (a 100M-parameter snapshot grew past 16 GB that way)
    flat = torch.arange(100_000, dtype=torch.float32).to(torch.bfloat16)
    state = {f"w{i}": flat[i * 1000:(i + 1) * 1000].view(10, 100) for i in range(100)}
    snap = ObjectStoreReload().snapshot(state, 3)
    assert snap.version == 3 and all(t.dtype == torch.bfloat16 for t in snap.tensors.values())
    assert all(torch.equal(snap.tensors[k], v) for k, v in state.items())
    assert len(pickle.dumps(snap)) < 2 * flat.numel() * flat.element_size()  # not 100 buffers
