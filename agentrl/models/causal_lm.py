"""Text-only causal LMs (Qwen2, Llama, ...): the base adapter as it is."""

from __future__ import annotations

from agentrl.models.base import ModelAdapter, register_adapter


@register_adapter
class CausalLMAdapter(ModelAdapter):
    model_types = ("qwen2", "qwen3", "llama", "mistral")
