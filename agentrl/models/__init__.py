"""Model adapters: everything that differs between model families, behind one interface.

`get_adapter(model_path)` picks the adapter by the checkpoint's `model_type`; adding a family is one
file that subclasses `ModelAdapter` and calls `register_adapter`.
"""

from agentrl.models.base import ImageError, ModelAdapter, get_adapter, register_adapter

# The built-in families register themselves on import; any other model_type (Qwen2, Llama, ...) is served
# by ModelAdapter itself, as a text-only causal LM.
from agentrl.models import qwen2_vl, qwen2_5_vl  # noqa: E402,F401  isort: skip

__all__ = ["ImageError", "ModelAdapter", "get_adapter", "register_adapter"]
