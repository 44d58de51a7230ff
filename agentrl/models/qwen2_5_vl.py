"""Qwen2.5-VL: Qwen2-VL's image handling and mrope for still images, with its own model class."""

from __future__ import annotations

from agentrl.models.base import register_adapter
from agentrl.models.qwen2_vl import Qwen2VLAdapter


@register_adapter
class Qwen25VLAdapter(Qwen2VLAdapter):
    # Still images have a single temporal patch, so Qwen2.5-VL's time-scaled temporal axis (videos)
    # does not change their positions.
    model_types = ("qwen2_5_vl",)
    model_class = "Qwen2_5_VLForConditionalGeneration"
