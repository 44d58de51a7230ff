"""Reward functions: `(RewardInput, options) -> RewardResult`, registered by name or loaded by import path."""

from __future__ import annotations

import importlib
import re
import string
from typing import Any, Awaitable, Callable  # noqa: UP035

from agentrl.records import RewardInput, RewardResult

# A reward function may be async (LLM judges): it then returns an awaitable of the RewardResult.
RewardFn = Callable[[RewardInput, dict[str, Any]], "RewardResult | Awaitable[RewardResult]"]
REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    def wrap(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return wrap


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD-style)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


@register_reward("exact_match")
def exact_match(inp: RewardInput, options: dict[str, Any]) -> RewardResult:
    """1 if the normalised answer equals a normalised gold answer, else 0."""
    if inp.answer is None:
        return RewardResult(0.0, {"accuracy": 0.0, "search_count": float(len(inp.tool_calls))})
    pred = normalize_answer(inp.answer)
    golds = {normalize_answer(g) for g in list(inp.ground_truth) + list(inp.candidate_answers)}
    acc = 1.0 if pred in golds else 0.0
    return RewardResult(acc, {"accuracy": acc, "search_count": float(len(inp.tool_calls))})


def get_reward_fn(spec: str) -> RewardFn:
    """A registered reward name or a `package.module:function` import path."""
    import agentrl.rewards.hierarchical  # noqa: F401  (registers the hierarchical preset)
    import agentrl.rewards.search  # noqa: F401  (registers the MMSearch-R1 presets)

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
    import inspect

    result = fn(inp, options)
    return await result if inspect.isawaitable(result) else result


def check_reward_options(fn: RewardFn, options: dict[str, Any]) -> None:
    """A reward with a `check_options(options)` attribute validates its options (ValueError, one line)."""
    check = getattr(fn, "check_options", None)
    if check is not None:
        check(dict(options))
