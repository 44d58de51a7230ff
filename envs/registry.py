"""The tool registry with the built-in tools in it, and `load_tool`: a tool by registered name or by
`package.module:attr` import path (tools that live in the user's package).

The plugin API (`Tool`, `register_tool`, `@tool`) is `agentrl.envs.tool`; this module imports it and
the built-in tool modules, which register themselves on import.
"""

from __future__ import annotations

import importlib
from typing import Any

import agentrl.envs.image_search  # noqa: F401  (each built-in tool module registers its tool)
import agentrl.envs.latency_tool  # noqa: F401
import agentrl.envs.lookup_tool  # noqa: F401
import agentrl.envs.text_search  # noqa: F401
from agentrl.envs.tool import TOOL_REGISTRY, Tool

__all__ = ["TOOL_REGISTRY", "load_tool"]


def load_tool(spec: str, cfg: Any = None) -> Tool:
    """Instantiate a tool by registered name or by `package.module:attr` import path; ValueError naming
    `env.tools` when it cannot."""
    if ":" in spec:
        module, attr = spec.split(":", 1)
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"env.tools: cannot import tool '{spec}': {e}") from None
        if isinstance(obj, type) and issubclass(obj, Tool):
            return obj.from_config(cfg)
        raise ValueError(f"env.tools: '{spec}' is not a Tool class")
    if spec not in TOOL_REGISTRY:
        raise ValueError(f"env.tools: unknown tool '{spec}'; registered: {sorted(TOOL_REGISTRY)}")
    return TOOL_REGISTRY[spec].from_config(cfg)
