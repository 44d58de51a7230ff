"""The reward registry: functions `(RewardInput, options) -> RewardResult`, registered by name or loaded by
import path. The presets register themselves when `agentrl.rewards` is imported; this module imports none."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Awaitable, Callable  # noqa: UP035

from agentrl.records import RewardInput, RewardResult

# A reward function may be async (LLM judges): it then returns an awaitable of the RewardResult.
RewardFn = Callable[[RewardInput, dict[str, Any]], "RewardResult | Awaitable[RewardResult]"]
REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make `fn` the reward called `name` (`reward.name`, `agentrl score --preset`)."""

    def wrap(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return wrap


def get_reward_fn(spec: str) -> RewardFn:
    """A registered reward name or a `package.module:function` import path."""
    if ":" in spec:
        module, attr = spec.split(":", 1)
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"reward.name: cannot import '{spec}': {e}") from None
    if spec not in REWARDS:
        raise ValueError(f"reward.name: unknown reward '{spec}'; registered: {sorted(REWARDS)}")
    return REWARDS[spec]


async def score_async(fn: RewardFn, inp: RewardInput, options: dict[str, Any]) -> RewardResult:
    """Call a reward function, sync or async."""
    result = fn(inp, options)
    return await result if inspect.isawaitable(result) else result


def check_reward_options(fn: RewardFn, options: dict[str, Any]) -> None:
    """A reward with a `check_options(options)` attribute validates its options (ValueError, one line)."""
    check = getattr(fn, "check_options", None)
    if check is not None:
        check(dict(options))
