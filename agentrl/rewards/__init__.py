"""Rewards: the registry (`register_reward`, `get_reward_fn`, rewards/registry.py), the shared answer rules
(rewards/answers.py) and the presets `exact_match` (rewards/exact_match.py), `mmsearch_r1` and `general`
(rewards/mmsearch_r1.py) and `hierarchical` (rewards/hierarchical.py), which register themselves here."""

from agentrl.rewards.registry import (
    RewardFn,
    check_reward_options,
    get_reward_fn,
    register_reward,
    score_async,
)

# The presets import the registry and register on import; importing them here makes every name resolvable.
from agentrl.rewards import exact_match, hierarchical, mmsearch_r1  # noqa: E402, F401  isort: skip

__all__ = ["RewardFn", "check_reward_options", "get_reward_fn", "register_reward", "score_async"]
