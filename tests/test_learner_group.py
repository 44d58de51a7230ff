"""The learner group on the real stack (Ray actors, DeepSpeed over gloo on the CPU): N data-parallel ranks
make the update one rank makes on the same batch, under ZeRO-2 and under ZeRO-3 with CPU offload, with the
KL term on (its reference model sharded under ZeRO-3); the gradient norm is reported under every ZeRO
stage; bf16 trains and pushes weights that the engine serves as transformers does."""

from __future__ import annotations

import asyncio

import pytest
import ray
import torch

from agentrl.actors.factory import create_learner
from agentrl.config import load_config
from tests.learner_batches import real_batch

pytestmark = pytest.mark.slow

GROUPS, N = 6, 2


def learner(path: str, *overrides: str):
    cfg = load_config("configs/demo.yaml", [f"rollout.n={N}", "learner.lr=1e-2", "learner.lr_schedule=constant",
                                            "learner.mini_batches=2", "learner.micro_batch_tokens=256",
                                            "learner.kl_coef=0.1", *overrides])
    return create_learner(cfg, path, total_steps=10, name=None)


def step_and_weights(handle, batch) -> tuple[float, float, dict[str, torch.Tensor]]:
    """One learner step on `batch`: its loss, gradient norm and the updated weights (the learner stops).
    The step's second update has moved away from the reference model: the KL term is on."""
    stats = ray.get(handle.train_step.remote(batch))
    assert stats.extra["ref_kl"] > 0
    snapshot = ray.get(handle.get_weights.remote())
    ray.get(handle.shutdown.remote())
    ray.kill(handle)
    return stats.loss, stats.grad_norm, snapshot.tensors


@pytest.fixture(scope="module")
def batch(cluster, tiny_text_path):
    """One real batch, its behaviour log-probs from the initial policy; and the initial weights."""
    handle = learner(tiny_text_path)
    out = real_batch(tiny_text_path, handle, GROUPS, N), ray.get(handle.get_weights.remote()).tensors
    ray.kill(handle)
    return out


ONE_RANK: dict[int, tuple] = {}  # ZeRO stage -> one rank's step on `batch` (each computed once)


def one_rank(path: str, batch, stage: int) -> tuple[float, float, dict[str, torch.Tensor]]:
    if stage not in ONE_RANK:
        ONE_RANK[stage] = step_and_weights(learner(path, f"learner.zero_stage={stage}"), batch)
    return ONE_RANK[stage]


# ZeRO-3 with parameters and optimizer states offloaded to the CPU must make the same update too
@pytest.mark.parametrize("stage,extra", [(2, []), (3, ["learner.offload=all"])], ids=["zero2", "zero3-offload"])
def test_two_ranks_make_the_update_of_one_rank(tiny_text_path, batch, stage, extra):
    batch, initial = batch
    loss1, norm1, weights1 = one_rank(tiny_text_path, batch, stage)
    two = learner(tiny_text_path, f"learner.zero_stage={stage}", "learner.num_ranks=2", *extra)
    assert len(ray.get(two.rank_nodes.remote())) == 2
    loss2, norm2, weights2 = step_and_weights(two, batch)

    assert norm1 > 0 and loss1 != 0
    assert loss2 == pytest.approx(loss1, rel=1e-4, abs=1e-6)
    assert norm2 == pytest.approx(norm1, rel=1e-4)
    assert weights2.keys() == weights1.keys()
    # Adam's first steps move a weight by about lr whatever its gradient's size, so where a gradient is
    # near Adam's eps (1e-8) the order of a float sum decides the move, and the step's second update starts
    # from those weights: a few elements in 1,000 may differ by up to a few % of lr (measured: at most
    # 1.5%); the rest agree to 1e-5 (0.1% of lr).
    lr = 1e-2
    far = total = 0
    for name, w1 in weights1.items():
        diff = (weights2[name] - w1).abs()
        assert float(diff.max()) < 0.05 * lr, name
        far, total = far + int((diff > 1e-5).sum()), total + diff.numel()
    assert far / total < 1e-2  # over the model: one element of a 64-element bias alone is 1.6%
    assert sum(not torch.equal(w, initial[k]) for k, w in weights1.items()) > len(initial) // 2  # the step moved


def test_the_gradient_norm_is_reported_under_every_zero_stage(tiny_text_path, batch):
    norms = {stage: one_rank(tiny_text_path, batch[0], stage)[1] for stage in (0, 1, 2, 3)}
    assert all(n > 0 for n in norms.values()), norms
    for stage in (1, 2, 3):
        assert norms[stage] == pytest.approx(norms[0], rel=1e-4), norms


def test_a_rank_that_dies_is_named(tiny_text_path, batch):
    from agentrl.errors import ActorFailure

    batch, _ = batch
    handle = learner(tiny_text_path, "learner.num_ranks=2", "learner.zero_stage=2")
    ray.get(handle.setup.remote())
    ray.get(handle.__ray_call__.remote(lambda group: ray.kill(group.ranks[1])))
    with pytest.raises(ray.exceptions.RayTaskError) as err:
        ray.get(handle.train_step.remote(batch))
    assert isinstance(err.value.cause, ActorFailure) and "learner rank 1 died" in str(err.value.cause)
    ray.kill(handle)


def test_bf16_trains_and_the_engine_serves_the_pushed_weights_as_transformers_does(cluster, tiny_text_path):
    from transformers import AutoModelForCausalLM

    from agentrl.actors.factory import create_generator_pool
    from agentrl.actors.weights import sync_weights
    from agentrl.records import GenerationRequest, SamplingConfig

    cfg = load_config("configs/demo.yaml", [f"rollout.n={N}", "model.dtype=bfloat16", "learner.lr=1e-2",
                                            "learner.lr_schedule=constant", "learner.zero_stage=3"])
    handle = create_learner(cfg, tiny_text_path, total_steps=10, name=None)
    pool = create_generator_pool(cfg, tiny_text_path)
    asyncio.run(pool.start())
    batch = real_batch(tiny_text_path, handle, GROUPS, N)
    initial = ray.get(handle.get_weights.remote()).tensors
    stats = ray.get(handle.train_step.remote(batch))
    assert stats.grad_norm > 0 and stats.policy_version == 1
    asyncio.run(sync_weights(handle, pool.handles))
    pushed = ray.get(handle.get_weights.remote())
    assert pushed.version == 1 and all(t.dtype == torch.bfloat16 for t in pushed.tensors.values())
    assert any(not torch.equal(t, initial[k]) for k, t in pushed.tensors.items())

    prompt = [1, 2, 3, 4, 5]
    request = GenerationRequest("bf16", prompt, SamplingConfig(max_tokens=12, temperature=0.0, ignore_eos=True))
    served = asyncio.run(pool.generate("bf16", request))
    assert set(served.policy_versions) == {1}
    model = AutoModelForCausalLM.from_pretrained(tiny_text_path, dtype=torch.bfloat16)
    model.load_state_dict(pushed.tensors)
    # Along the served continuation, transformers with the pushed weights gives the engine's log-probs,
    # and makes the engine's greedy choice wherever its top two logits are clearly apart (more than 8 of
    # bf16's rounding steps of 1/256 here); closer than that, the kernels' summation order decides a tie.
    tokens = torch.tensor(served.token_ids)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + served.token_ids])).logits[0, len(prompt) - 1:-1].float()
    top = logits.topk(2)
    clear = (top.values[:, 0] - top.values[:, 1] > 0.03).tolist()
    assert sum(clear) >= 3
    assert [t for t, c in zip(served.token_ids, clear, strict=True) if c] == top.indices[clear, 0].tolist()
    hf_logprobs = torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0]
    assert torch.allclose(hf_logprobs, torch.tensor(served.logprobs), atol=0.01)
    model.load_state_dict(initial)  # and the weights before the step do not
    with torch.no_grad():
        logits = model(torch.tensor([prompt + served.token_ids])).logits[0, len(prompt) - 1:-1].float()
    assert not torch.allclose(torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0],
                              torch.tensor(served.logprobs), atol=0.1)
    for h in pool.handles:
        ray.get(h.shutdown.remote())
        ray.kill(h)
    ray.get(handle.shutdown.remote())
    ray.kill(handle)
