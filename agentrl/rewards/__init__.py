"""Rewards: the registry (`register_reward`, `get_reward_fn`), and the presets `exact_match`,
`mmsearch_r1`, `general` (rewards/search.py) and `hierarchical` (rewards/hierarchical.py)."""

from agentrl.rewards.registry import (
    RewardFn,
    check_reward_options,
    get_reward_fn,
    register_reward,
    score_async,
)

__all__ = ["RewardFn", "check_reward_options", "get_reward_fn", "register_reward", "score_async"]
