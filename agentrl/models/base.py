"""The model adapter interface: processor, placeholder expansion, position ids, image tokens.

The environment actor builds every sequence through an adapter (prompt ids with image placeholders
already expanded, images already resized to their budget), the generator hands those ids and images to
vLLM unchanged, and the learner builds its forward inputs through the same adapter. One expansion,
one resize, so the two sides agree token for token.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, ClassVar

from agentrl.config import VisionConfig


class ImageError(ValueError):
    """Image bytes that cannot be decoded (a corrupt data row or tool result)."""


# Images larger than this are refused before their pixels are decoded (a 17 KB PNG can claim 144
# megapixels, 432 MB as RGB): Pillow's own decompression-bomb threshold, where it only warns.
MAX_IMAGE_PIXELS = 89_478_485


def decode_image(data: bytes) -> Any:
    """Encoded bytes -> an RGB PIL image; ImageError when the bytes are not a readable image or claim
    more than MAX_IMAGE_PIXELS (checked from the header, before decoding)."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Exception as e:
        raise ImageError(f"unreadable image ({type(e).__name__}: {e})") from None
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageError(f"image of {w}x{h} pixels is over the limit of {MAX_IMAGE_PIXELS} pixels")
    try:
        img.load()
        return img.convert("RGB")
    except Exception as e:
        raise ImageError(f"unreadable image ({type(e).__name__}: {e})") from None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def encode_png(img: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")  # lossless: both sides decode the same pixels
    return out.getvalue()


class ModelAdapter:
    """A text-only causal LM; vision-language families override the image hooks."""

    model_types: ClassVar[tuple[str, ...]] = ()
    is_multimodal: ClassVar[bool] = False

    def __init__(self, model_path: str, vision: VisionConfig | None = None) -> None:
        self.model_path = model_path
        self.vision = vision or VisionConfig()
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    # ---- loading --------------------------------------------------------------------------------
    def load_model(self, dtype: Any) -> Any:
        """The trainable Hugging Face model."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)

    def engine_kwargs(self) -> dict[str, Any]:
        """Extra vLLM engine arguments this family needs."""
        return {}

    # ---- images -----------------------------------------------------------------------------------
    def prepare_image(self, data: bytes, kind: str = "input") -> bytes:
        """Decode, resize into the budget of `kind` ("input" or "thumbnail"), re-encode as PNG."""
        raise NotImplementedError(f"{type(self).__name__} takes no images")

    @property
    def image_placeholder(self) -> str:
        """The text that stands for one image before expansion ("" for text-only models)."""
        return ""

    def expand_placeholders(self, ids: list[int], images: list[bytes]) -> list[int]:
        """Repeat each image's placeholder token once per image token; text-only: unchanged."""
        if images:
            raise ValueError(f"{type(self).__name__} takes no images")
        return list(ids)

    def collapse_placeholders(self, ids: list[int]) -> list[int]:
        """The inverse of expand_placeholders: what vLLM takes (it expands placeholders itself)."""
        return list(ids)

    def strip_image_tokens(self, text: str) -> str:
        """Remove image special tokens from text that did not come from us (questions, web pages)."""
        return text

    def is_image_token(self, token_id: int) -> bool:
        return False

    # ---- learner inputs ----------------------------------------------------------------------------
    def forward_inputs(self, sequences: list[tuple[list[int], list[bytes]]], device: Any) -> dict[str, Any]:
        """Model keyword arguments for a right-padded micro-batch of (ids, images) sequences."""
        import torch

        L = max(len(ids) for ids, _ in sequences)
        input_ids = torch.zeros(len(sequences), L, dtype=torch.long)
        attention = torch.zeros(len(sequences), L, dtype=torch.long)
        for i, (ids, _) in enumerate(sequences):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
        return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}


_ADAPTERS: dict[str, type[ModelAdapter]] = {}


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: serve the checkpoints whose config.json `model_type` is in `cls.model_types`."""
    for t in cls.model_types:
        _ADAPTERS[t] = cls
    return cls


def get_adapter(model_path: str, vision: VisionConfig | None = None) -> ModelAdapter:
    """The adapter for a checkpoint folder; unknown families are treated as text-only causal LMs."""
    with open(os.path.join(model_path, "config.json")) as f:
        model_type = json.load(f).get("model_type", "")
    return _ADAPTERS.get(model_type, ModelAdapter)(model_path, vision)
