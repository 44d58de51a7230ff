"""The tool plugin API: a tool parses its arguments from the model's action text and runs
asynchronously against the trajectory's own state, returning an observation.

Register a class with `@register_tool`, or an async function with `@tool("name")`. The built-in tools
and `load_tool` (a registered name or a `package.module:attr` import path) are in `agentrl.envs.registry`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, ClassVar, Iterator, TypeVar

from agentrl.records import Observation
from agentrl.web.cache import image_hash

# Marks where each returned image sits in an observation's text: a vision model's adapter replaces it
# with the model's image tokens; for a text-only model it is removed.
IMAGE_MARKER = "<image>"
ESCAPED_IMAGE_MARKER = IMAGE_MARKER.replace("<", "&lt;").replace(">", "&gt;")


T = TypeVar("T")
# The event-loop time at which the current tool call's budget (`env.tool_timeout_s`) runs out; set by the
# agent loop around `Tool.run`, read by the tool's own fetches (contextvars follow it into gathered tasks).
_CALL_DEADLINE: ContextVar[float | None] = ContextVar("tool_call_deadline", default=None)
FETCH_RESERVE_S = 0.5  # kept back from each fetch, to assemble the observation before the call's deadline


@contextmanager
def call_deadline(timeout_s: float) -> Iterator[None]:
    """The budget of one tool call, for `within_call_deadline` inside it."""
    token = _CALL_DEADLINE.set(asyncio.get_running_loop().time() + timeout_s)
    try:
        yield
    finally:
        _CALL_DEADLINE.reset(token)


async def within_call_deadline(work: Awaitable[T]) -> T:
    """`work` (one page, one thumbnail) given what is left of the call's budget: TimeoutError when it runs
    past, so the tool drops that one part and keeps the others instead of losing the whole call."""
    deadline = _CALL_DEADLINE.get()
    if deadline is None:
        return await work
    async with asyncio.timeout_at(deadline - FETCH_RESERVE_S):
        return await work


def escape_text(text: str) -> str:
    """Text from outside (web pages, titles, snippets, summaries, corpora) made unable to place or move
    an image: IMAGE_MARKER and special-token syntax (`<|...|>`, as in `<|image_pad|>` or `<|im_end|>`)
    lose their `<` to an entity. One pass each, and neither replacement contains what the other looks
    for, so no nesting can rebuild a marker."""
    return text.replace(IMAGE_MARKER, ESCAPED_IMAGE_MARKER).replace("<|", "&lt;|")


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

    def check(self) -> None:
        """Called once before any actor starts (`agentrl.actors.factory.check_plugins`): raise ValueError
        (or UserError), one line naming the config key and the file, when a setting is unusable (a missing
        corpus, a bad index), so the run fails at start instead of on every call. The default checks nothing."""

    async def close(self) -> None:
        """Release sessions and files."""

    def parse_args(self, action_text: str) -> dict[str, Any]:
        """Arguments from the text inside the action tag; the default is one `query` string."""
        return {"query": action_text.strip()}

    def cache_identity(self, state: TrajectoryState) -> dict[str, Any]:
        """Everything besides the arguments that changes this call's result, as JSON values: part of
        the cache key. The default is the backend and the trajectory's input images (by content and
        URL); a tool overrides it to name exactly what its results depend on (a corpus, limits, ...)."""
        return {"backend": self.backend, "images": image_hash([*state.images, *state.image_urls])}

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
