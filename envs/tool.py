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


@dataclass
class Observation:
    """What a tool returns to the conversation."""

    text: str
    images: list[Any] = field(default_factory=list)
    ok: bool = True
    error: str | None = None


@dataclass
class TrajectoryState:
    """Per-trajectory state every tool sees: input images, call counts, earlier results."""

    question: str
    images: list[Any] = field(default_factory=list)
    tool_counts: Counter = field(default_factory=Counter)
    results: list[tuple[str, Observation]] = field(default_factory=list)


class Tool:
    """Base class of a tool. Subclasses set `name` and implement `run`."""

    name: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        self.options = options

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


def load_tool(spec: str, **options: Any) -> Tool:
    """Instantiate a tool by registered name or by `package.module:attr` import path."""
    import envs.lookup_tool  # noqa: F401  (registers the built-in tools)

    if ":" in spec:
        module, attr = spec.split(":", 1)
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"env.tools: cannot import tool '{spec}': {e}") from None
        if isinstance(obj, type) and issubclass(obj, Tool):
            return obj(**options)
        raise ValueError(f"env.tools: '{spec}' is not a Tool class")
    if spec not in TOOL_REGISTRY:
        raise ValueError(f"env.tools: unknown tool '{spec}'; registered: {sorted(TOOL_REGISTRY)}")
    return TOOL_REGISTRY[spec](**options)
