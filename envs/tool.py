"""The tool plugin API: a tool parses its arguments from the model's action text and runs
asynchronously against the trajectory's own state, returning an observation.

Register a class with `@register_tool`, or an async function with `@tool("name")`; `load_tool` takes a
registered name or a `package.module:attr` import path for tools that live in the user's package.
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, ClassVar

from agentrl.records import Observation

# Marks where each returned image sits in an observation's text: a vision model's adapter replaces it
# with the model's image tokens; for a text-only model it is removed.
IMAGE_MARKER = "<image>"


@dataclass
class TrajectoryState:
    """Per-trajectory state every tool sees: input images, call counts, earlier results."""

    question: str
    images: list[Any] = field(default_factory=list)
    image_urls: list[str] = field(default_factory=list)
    data_id: str = ""
    tool_counts: Counter = field(default_factory=Counter)
    results: list[tuple[str, Observation]] = field(default_factory=list)


class Tool:
    """Base class of a tool. Subclasses set `name` and implement `run`.

    `backend` names what answers the call (part of the cache key); `cacheable` tools go through the
    on-disk cache, so `tools.cache.mode=replay_only` runs them with no network call at all.
    """

    name: ClassVar[str] = ""
    cacheable: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.backend = ""

    @classmethod
    def from_config(cls, cfg: Any) -> Tool:
        """Build from the run config; user tools get `tools.options.<name>` as keyword arguments."""
        return cls(**dict(cfg.tools.options.get(cls.name, {}) if cfg is not None else {}))

    async def close(self) -> None:
        """Release sessions and files."""

    def parse_args(self, action_text: str) -> dict[str, Any]:
        """Arguments from the text inside the action tag; the default is one `query` string."""
        return {"query": action_text.strip()}

    async def run(self, args: dict[str, Any], state: TrajectoryState) -> Observation:
        raise NotImplementedError


TOOL_REGISTRY: dict[str, type[Tool]] = {}


def register_tool(cls: type[Tool]) -> type[Tool]:
    """Class decorator: make a Tool subclass available by its `name`."""
    if not cls.name:
        raise ValueError(f"tool class {cls.__name__} has no name")
    TOOL_REGISTRY[cls.name] = cls
    return cls


def tool(name: str) -> Callable[[Callable[..., Awaitable[Observation]]], type[Tool]]:
    """Function decorator: `@tool("echo") async def echo(args, state) -> Observation`."""

    def wrap(fn: Callable[..., Awaitable[Observation]]) -> type[Tool]:
        async def run(self: Tool, args: dict[str, Any], state: TrajectoryState) -> Observation:
            return await fn(args, state)

        cls = type(fn.__name__, (Tool,), {"name": name, "run": run, "__doc__": fn.__doc__})
        return register_tool(cls)

    return wrap


def load_tool(spec: str, cfg: Any = None) -> Tool:
    """Instantiate a tool by registered name or by `package.module:attr` import path."""
    import agentrl.envs.image_search  # noqa: F401  (registers the built-in tools)
    import agentrl.envs.latency_tool  # noqa: F401
    import agentrl.envs.lookup_tool  # noqa: F401
    import agentrl.envs.text_search  # noqa: F401

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
