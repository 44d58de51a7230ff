"""A real vLLM engine (tiny-text) in the product's generator actor: after a weight push no request of the
new version reads keys/values the old weights computed, in either `rollout.on_weight_update` mode and for
a request admitted during the push; and a stop string split by a resume still ends the turn there.

The actor is `GeneratorActor` with two test hooks (tests/plugins/steerable_generator.py): its weight-update
mode can be switched (one engine start serves every case), and its next request can be cut after N tokens
as a weight update's abort would cut it (so an abort lands before a chosen token, exactly)."""

from __future__ import annotations

import random

import pytest
import ray
import torch

from agentrl.actors.factory import actor_runtime_env
from agentrl.actors.generator import first_stop_cut
from agentrl.records import GenerationRequest, SamplingConfig, WeightSnapshot
from tests.plugins.steerable_generator import SteerableGenerator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(cluster, tiny_text_path):
    actor = ray.remote(SteerableGenerator).options(num_cpus=0, max_concurrency=1000,
                                                   runtime_env=actor_runtime_env()).remote(tiny_text_path, 0)
    ray.get(actor.start.remote())
    yield actor
    ray.get(actor.shutdown.remote())
    ray.kill(actor)


@pytest.fixture(scope="module")
def weights(tiny_text_path):
    """The model's own weights and a perturbed copy, as state dicts."""
    from safetensors.torch import load_file

    base = load_file(f"{tiny_text_path}/model.safetensors")
    g = torch.Generator().manual_seed(1)
    return base, {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in base.items()}


def hf_logprobs(path: str, state: dict, prompt: list[int], tokens: list[int]) -> list[float]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.load_state_dict(state, strict=False)  # a tied head has no weight of its own
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0].tolist()


def generate(actor, prompt: list[int], n: int, rid: str, **sampling):
    return actor.generate.remote(GenerationRequest(rid, prompt, SamplingConfig(max_tokens=n, **sampling)))


def push(actor, state: dict, version: int):
    return actor.update_weights.remote(WeightSnapshot(version, state))


PREFIX = random.Random(0).sample(range(10, 600), 400)  # a long shared prefix (a system prompt, say)


def assert_new_version_logprobs(path, state, prompt, result, version):
    """The tokens labelled `version` have the log-probs `state` gives them (fp32, within 1e-3)."""
    expected = hf_logprobs(path, state, prompt, result.token_ids)
    diffs = [abs(a - b) for a, b, v in zip(expected, result.logprobs, result.policy_versions, strict=True)
             if v == version]
    assert diffs and max(diffs) <= 1e-3, f"max |diff| {max(diffs):.3g} over {len(diffs)} tokens"


@pytest.mark.parametrize("mode", ["continue", "pause_resume"])
def test_after_a_push_the_cached_prefix_is_not_read_by_the_new_version(engine, weights, tiny_text_path, mode):
    base, new = weights
    version = 10 if mode == "continue" else 20
    ray.get(engine.set_on_weight_update.remote(mode))
    ray.get(push(engine, base, version))
    ray.get(generate(engine, PREFIX, 1, f"{mode}-warm"))  # the prefix is cached under the old weights
    running = generate(engine, PREFIX + [7], 600, f"{mode}-running", ignore_eos=True)
    while ray.get(engine.stats.remote()).tokens_generated == 0 and not ray.wait([running], timeout=0.05)[0]:
        pass  # the long request is running (or has produced its first output)
    ray.get(push(engine, new, version + 1))
    after = ray.get(generate(engine, PREFIX, 16, f"{mode}-after", seed=3, ignore_eos=True))
    assert set(after.policy_versions) == {version + 1}
    assert_new_version_logprobs(tiny_text_path, new, PREFIX, after, version + 1)
    kept = ray.get(running)
    if mode == "continue":  # it ran through the push, labelled with the version it started under
        assert kept.resumed == 0 and set(kept.policy_versions) == {version}
    else:  # aborted and resumed: its tokens after the push are the new weights'
        assert kept.resumed == 1
        assert_new_version_logprobs(tiny_text_path, new, PREFIX + [7], kept, version + 1)


def test_requests_admitted_during_a_push_read_nothing_the_old_weights_computed(engine, weights, tiny_text_path):
    """pause_resume: requests sent together with the push (some reach vLLM while the abort is on its way)
    are aborted and resumed; every token labelled with the new version has the new weights' log-prob."""
    base, new = weights
    ray.get(engine.set_on_weight_update.remote("pause_resume"))
    ray.get(push(engine, base, 30))
    ray.get(generate(engine, PREFIX, 1, "race-warm"))
    racing = [generate(engine, PREFIX + [k], 24, f"race-{k}", seed=k, ignore_eos=True) for k in range(6)]
    ray.get(push(engine, new, 31))
    after = ray.get(generate(engine, PREFIX, 16, "race-after", seed=5, ignore_eos=True))
    assert_new_version_logprobs(tiny_text_path, new, PREFIX, after, 31)
    for k, res in enumerate(ray.get(racing)):
        if 31 in res.policy_versions:
            assert_new_version_logprobs(tiny_text_path, new, PREFIX + [k], res, 31)
        if 30 in res.policy_versions:
            assert_new_version_logprobs(tiny_text_path, base, PREFIX + [k], res, 30)


def test_a_stop_string_split_by_a_resume_still_ends_the_turn(engine, weights, tiny_text_path):
    """Greedy decoding, so an interrupted turn continues as the whole one would. A multi-token stop string
    taken from the greedy text: with an abort before each of its tokens, the turn ends exactly where vLLM
    ends the uninterrupted turn, and nothing after the stop string is kept."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_text_path)
    ray.get(push(engine, weights[0], 40))
    prompt = PREFIX[:20]
    whole = ray.get(generate(engine, prompt, 48, "stop-whole", temperature=0.0, ignore_eos=True)).token_ids
    start = next(i for i in range(6, 40) if len(tok.decode(whole[i:i + 3])) >= 4
                 and tok.decode(whole[i:i + 3]).isascii() and tok.decode(whole[i:i + 3]).isprintable())
    stop = tok.decode(whole[start:start + 3])  # three tokens long
    sampling = dict(temperature=0.0, ignore_eos=True, stop=[stop])
    reference = ray.get(generate(engine, prompt, 48, "stop-ref", **sampling))
    assert reference.finish_reason == "stop" and stop in tok.decode(reference.token_ids)
    end = len(reference.token_ids)
    for cut in range(max(1, end - 5), end):  # an abort before each token of the stop string, and before it
        ray.get(engine.abort_next_after.remote(cut))
        res = ray.get(generate(engine, prompt, 48, f"stop-{cut}", **sampling))
        assert res.resumed == 1
        assert res.token_ids == reference.token_ids and res.finish_reason == "stop", cut
        assert len(res.logprobs) == len(res.policy_versions) == end


def test_the_first_stop_string_is_cut_after_its_last_token_wherever_it_lies():
    decode = "".join  # one character per token: a tag is as many tokens as it has characters
    turn = list("<reason>r</reason><text_search>q</text_search> more </text_search>")
    first = "".join(turn).index("</text_search>") + len("</text_search>")
    assert first_stop_cut(turn, decode, ["</text_search>", "</answer>"]) == first
    assert first_stop_cut(turn, decode, ["</answer>"]) is None
    assert first_stop_cut(turn, decode, []) is None
    assert first_stop_cut(list("</answer>"), decode, ["</answer>"]) == len("</answer>")


def test_the_prefix_cache_is_salted_by_version():
    from agentrl.actors.generator import cache_salt

    assert cache_salt(3) != cache_salt(4) and cache_salt(3) == cache_salt(3)
