"""The model adapter interface: processor, placeholder expansion, position ids, image tokens.

The environment actor builds every sequence through an adapter (prompt ids with image placeholders
already expanded, images already resized to their budget), the generator hands those ids and images to
vLLM unchanged, and the learner builds its forward inputs through the same adapter. One expansion,
one resize, so the two sides agree token for token.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from agentrl.config import VisionConfig
from agentrl.images import ImageError, decode_image, encode_png, image_size

# the image rules live in agentrl.images; re-exported for the adapters and their callers
__all__ = ["ImageError", "ModelAdapter", "decode_image", "encode_png", "get_adapter", "image_size",
           "register_adapter"]


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
