"""Reward actors: a pool that scores finished groups while other trajectories are still running."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from agentrl.actors.peers import peers_from_state, peers_state
from agentrl.records import RewardInput, RewardResult
from agentrl.rewards import get_reward_fn, score_async


class RewardActor:
    """Scores a group of trajectories per call; async, so many calls overlap (LLM judges wait)."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.fn = get_reward_fn(name)
        self.options = dict(options)

    async def score_group(self, inps: list[RewardInput]) -> list[RewardResult]:
        """Score a group's trajectories concurrently: one call (one RPC) per group, not per trajectory."""
        return list(await asyncio.gather(*[score_async(self.fn, inp, self.options) for inp in inps]))


class RewardPool:
    """Round-robin over reward actors (built by `agentrl.actors.factory`); picklable so environment actors
    hold it."""

    def __init__(self, handles: list[Any], names: list[str] | None = None) -> None:
        self.handles = handles
        self.names = names  # the actors' names, when they have them: a copy travels by name (GeneratorPool)
        self._next = itertools.cycle(range(len(handles)))

    async def score_group(self, inps: list[RewardInput]) -> list[RewardResult]:
        """Score all samples of one prompt in one call to one reward actor."""
        return await self.handles[next(self._next)].score_group.remote(inps)

    def __getstate__(self) -> dict:
        return peers_state(self.handles, self.names)  # by name (agentrl/actors/peers.py)

    def __setstate__(self, state: dict) -> None:
        self.__init__(*peers_from_state(state))
