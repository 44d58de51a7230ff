"""The checks that need CUDA; `bash launch/gpu_check.sh` runs them on a GPU machine and they skip elsewhere.
A bf16 learner on a GPU takes a step and pushes its weights, by each transport the GPUs allow, to a vLLM
engine on a GPU, which then serves what transformers computes with those weights; an engine over two GPUs
(`rollout.tensor_parallel_size=2`) takes the object-store push too. NCCL cannot join two processes on one
GPU, so the collective transport needs the learner and the engine on different GPUs."""

from __future__ import annotations

import asyncio

import pytest
import ray
import torch

from agentrl.config import load_config

GPUS = torch.cuda.device_count()
pytestmark = [pytest.mark.skipif(GPUS == 0, reason="needs CUDA (launch/gpu_check.sh on a GPU machine)"),
              pytest.mark.slow, pytest.mark.exclusive_memory]


def placements() -> list[tuple[str, list[str]]]:
    """(transport, overrides) that the GPUs present allow."""
    shared = ["learner.num_gpus=0.5", "rollout.num_gpus_per_engine=0.5", "rollout.gpu_memory_utilization=0.3"]
    cases = [("object_store", shared)]
    if GPUS >= 2:
        cases.append(("collective", ["learner.num_gpus=1", "rollout.num_gpus_per_engine=1"]))
    if GPUS >= 3:
        cases.append(("object_store", ["learner.num_gpus=1", "rollout.num_gpus_per_engine=1",
                                       "rollout.tensor_parallel_size=2"]))
    return cases


@pytest.mark.parametrize(("transport", "placement"), placements(), ids=lambda v: v if isinstance(v, str) else
                         "-".join(o.split(".")[-1] for o in v))
def test_a_bf16_gpu_learner_pushes_what_a_gpu_engine_then_serves(cluster, tiny_text_path, transport, placement):
    from transformers import AutoModelForCausalLM

    from agentrl.actors.factory import create_generator_pool, create_learner
    from agentrl.actors.weights import sync_weights
    from agentrl.records import GenerationRequest, SamplingConfig
    from tests.learner_batches import real_batch

    cfg = load_config("configs/demo.yaml", ["model.dtype=bfloat16", "learner.lr=1e-2", "learner.lr_schedule=constant",
                                            "learner.zero_stage=2", f"rollout.weight_sync={transport}", *placement])
    learner = create_learner(cfg, tiny_text_path, total_steps=10, name=None)
    pool = create_generator_pool(cfg, tiny_text_path)
    asyncio.run(pool.start())
    try:
        stats = ray.get(learner.train_step.remote(real_batch(tiny_text_path, learner, 2, 2)))
        assert stats.grad_norm > 0 and stats.policy_version == 1
        asyncio.run(sync_weights(learner, pool.handles, transport))
        pushed = ray.get(learner.get_weights.remote())
        prompt = [1, 2, 3, 4, 5]
        request = GenerationRequest("gpu", prompt, SamplingConfig(max_tokens=12, temperature=1.0, ignore_eos=True))
        served = asyncio.run(pool.generate("gpu", request))
        assert set(served.policy_versions) == {1}
    finally:
        for h in pool.handles:
            ray.get(h.shutdown.remote())
            ray.kill(h)
        ray.get(learner.shutdown.remote())
        ray.kill(learner)
    model = AutoModelForCausalLM.from_pretrained(tiny_text_path, dtype=torch.bfloat16).cuda()
    model.load_state_dict({k: v.cuda() for k, v in pushed.tensors.items()})
    with torch.no_grad():
        logits = model(torch.tensor([prompt + served.token_ids]).cuda()).logits[0, len(prompt) - 1:-1].float()
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(served.token_ids).cuda()[:, None])[:, 0]
    assert (expected.cpu() - torch.tensor(served.logprobs)).abs().max() <= 0.02  # bf16 kernels differ in order
