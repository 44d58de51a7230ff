"""Actors killed on a schedule (`faults.kill_*`): the driver's side of fault injection. Tool faults are
`agentrl.envs.faults`. Ray restarts the killed environment, reward and generator actors
(`*.max_restarts`); the groups they had in flight are re-run by the orchestrator."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from typing import Any

import ray

from agentrl.config import FaultsConfig


class ActorKiller:
    """Kills a random environment actor every `kill_env_every_s`, a reward actor every
    `kill_reward_every_s`, a generator engine every `kill_generator_every_s`; counts each kill."""

    def __init__(self, faults: FaultsConfig, groups: Any, stopping: asyncio.Event) -> None:
        self.faults = faults
        self.groups = groups
        self.stopping = stopping  # no kills once the run is stopping
        self.rng = random.Random(faults.seed)
        self.kills: dict[str, int] = {}

    def schedules(self) -> list[tuple[str, float, list[Any]]]:
        f, g = self.faults, self.groups
        every = [("env", f.kill_env_every_s, g.envs), ("reward", f.kill_reward_every_s, g.rewards.handles),
                 ("generator", f.kill_generator_every_s, g.engines)]
        return [(kind, s, handles) for kind, s, handles in every if s > 0 and handles]

    async def run(self) -> None:
        """Run every schedule until cancelled."""
        await asyncio.gather(*[self._every(kind, s, handles) for kind, s, handles in self.schedules()])

    async def _every(self, kind: str, period_s: float, handles: list[Any]) -> None:
        while True:
            await asyncio.sleep(period_s)
            if self.stopping.is_set():
                return
            victim = self.rng.randrange(len(handles))
            ray.kill(handles[victim], no_restart=False)  # Ray restarts it (max_restarts)
            self.kills[kind] = self.kills.get(kind, 0) + 1
            print(f"[agentrl] fault: killed {kind}-{victim}")


def kill_driver() -> None:
    """`faults.kill_driver_at_step`: die as a preempted node's driver does, with no chance to clean up."""
    print("[agentrl] fault: killing the driver (SIGKILL)", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
