"""Deterministic tiny random-initialised models, built here with no download.

`tiny-text` is a Qwen2 causal LM, `tiny-vl` a Qwen2.5-VL model; both come with a byte-level BPE
tokenizer trained in-process whose vocabulary holds the action tags as single tokens, and a chat
template. They are saved in Hugging Face format, so vLLM, transformers and DeepSpeed load them like
any checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from agentrl.grammar import ACTION_TAGS
from agentrl.models.folders import made_once
from agentrl.models.imported import PACKAGED_GGUF, import_packaged
from agentrl.paths import cache_root

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
BUILD_VERSION = "v4"  # bump when the builders change; corpus changes rebuild by themselves (see build_key)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_NAMES = ("tiny-text", "tiny-vl")


def models_dir(cache_dir: str = "") -> Path:
    """Where tiny models are built: `model.cache_dir`, else the cache root's models/."""
    return Path(cache_dir) / "models" if cache_dir else cache_root() / "models"


def _corpus() -> list[str]:
    from agentrl.data.synthetic import synthetic_corpus

    return synthetic_corpus()


def task_words() -> list[str]:
    """The toy task's attribute values (`agentrl.data.toy.ATTRIBUTES`). Each is one token, so that copying a
    value out of an observation into an answer is a one-token copy, as it is for a real model's common words.
    Names stay BPE pieces: a name never seen in training is then made of trained pieces that a model can copy."""
    from agentrl.data.toy import ATTRIBUTES

    return sorted({v for values in ATTRIBUTES.values() for v in values})


def build_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on the project's own text, with tags and the synthetic tasks' words
    (`task_words`) as single tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + VISION_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ACTION_TAGS])
    # whole words only: a name inside a longer word stays BPE pieces; the space before one is its own token
    tok.add_tokens([AddedToken(w, single_word=True, normalized=False) for w in task_words()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:] + VISION_TOKENS,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _padded(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


# Random text models of growing size with the tiny tokenizer (the weight-push benchmark): (hidden size,
# layers, intermediate size); heads of 64. Built on first use, like the tiny ones.
SIZED_MODELS = {"tiny-text": (128, 2, 256), "tiny-text-4l": (128, 4, 256), "random-100m": (768, 12, 3072),
                "random-500m": (1280, 24, 3584)}


def _build_text(out: Path, hidden: int = 128, layers: int = 2, intermediate: int = 256) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=_padded(len(tok)), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, head_dim=64, max_position_embeddings=2048,
        tie_word_embeddings=False, torch_dtype="float32",
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tok.pad_token_id,
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _build_vl(out: Path) -> None:
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_TOKENS + ["<|im_end|>"]}
    torch.manual_seed(0)
    text = dict(
        vocab_size=_padded(len(tok)), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
        rope_scaling={"type": "mrope", "mrope_section": [16, 8, 8]}, rope_theta=1000000.0,
        tie_word_embeddings=False, eos_token_id=ids["<|im_end|>"], bos_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=1, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=128, window_size=56,
                  fullatt_block_indexes=[1], in_chans=3)
    cfg = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, **text,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        torch_dtype="float32",
    )
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.save_pretrained(out, safe_serialization=True)
    # Qwen2.5-VL's own processor range; agentrl resizes every image into its budget inside this range.
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 16384, patch_size=14,
                                            merge_size=2, temporal_patch_size=2)
    try:
        from transformers import Qwen2VLVideoProcessor

        video = Qwen2VLVideoProcessor()
        processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok,
                                        video_processor=video, chat_template=CHAT_TEMPLATE)
    except Exception:  # older transformers: no video processor argument
        processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok,
                                        chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    tok.save_pretrained(out)


def build_key() -> str:
    """The builders' version plus a hash of the tokenizer corpus, so a changed corpus never reuses a cache."""
    import hashlib

    text = chr(0).join(_corpus() + task_words())
    return f"{BUILD_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def ensure_model(name_or_path: str, cache_dir: str = "") -> str:
    """Return a loadable model folder: a tiny (or sized random) model is built once (under a file lock), a
    packaged pretrained one (`agentrl.models.imported`) converted once, paths pass."""
    if name_or_path in PACKAGED_GGUF:
        return import_packaged(name_or_path, models_dir(cache_dir))
    if name_or_path not in TINY_NAMES + tuple(SIZED_MODELS):
        return name_or_path

    def build(out: Path) -> None:
        tmp = out.with_suffix(".tmp")
        if name_or_path == "tiny-vl":
            _build_vl(tmp)
        else:
            _build_text(tmp, *SIZED_MODELS[name_or_path])
        tmp.rename(out)

    return made_once(models_dir(cache_dir) / f"{name_or_path}-{build_key()}", build)
