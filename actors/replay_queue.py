"""The replay queue: a bounded FIFO of whole GRPO groups with a staleness bound.

Producers (environment actors) wait while it is full; the learner takes batches of B groups. A group
whose oldest token is more than `max_staleness` versions behind the learner is dropped and counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from agentrl.records import QueueStats, TrainBatch, TrajectoryGroup


class ReplayQueue:
    """Ray async actor; every method runs on one event loop, so no locks beyond the condition."""

    def __init__(self, capacity: int, max_staleness: int) -> None:
        self.capacity = capacity
        self.max_staleness = max_staleness
        self._groups: deque[TrajectoryGroup] = deque()
        self._changed = asyncio.Condition()
        self.groups_in = 0
        self.groups_out = 0
        self.groups_dropped_stale = 0
        self.dropped_group_ids: list[str] = []  # the driver's ledger ends these groups as dropped
        self.producer_wait_s = 0.0

    async def put(self, group: TrajectoryGroup) -> int:
        """Add a whole group; waits while the queue is full. Returns the depth after the put."""
        t0 = time.perf_counter()
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._groups) < self.capacity)
            self.producer_wait_s += time.perf_counter() - t0
            self._groups.append(group)
            self.groups_in += 1
            self._changed.notify_all()
            return len(self._groups)

    def _drop_stale(self, learner_version: int) -> int:
        kept: deque[TrajectoryGroup] = deque()
        dropped = 0
        for g in self._groups:
            if learner_version - g.min_policy_version > self.max_staleness:
                dropped += 1
                self.dropped_group_ids.append(g.group_id)
            else:
                kept.append(g)
        self._groups = kept
        return dropped

    async def get_batch(self, batch_groups: int, learner_version: int) -> TrainBatch:
        """Wait for B fresh groups and hand over the B with the oldest policy versions."""
        t0 = time.perf_counter()
        dropped = 0
        async with self._changed:
            while True:
                dropped += self._drop_stale(learner_version)
                if len(self._groups) >= batch_groups:
                    break
                await self._changed.wait()
            # Oldest policy first (stable: FIFO among equals): a group that finished late because of a
            # slow tool call is trained before it goes stale, instead of waiting behind fresher groups.
            self._groups = deque(sorted(self._groups, key=lambda g: g.min_policy_version))
            groups = [self._groups.popleft() for _ in range(batch_groups)]
            self.groups_out += batch_groups
            self.groups_dropped_stale += dropped
            self._changed.notify_all()
            return TrainBatch(groups=groups, queue_depth=len(self._groups), wait_s=time.perf_counter() - t0)

    def stats(self, dropped_since: int = 0) -> QueueStats:
        """Groups in, out and dropped as stale (the ids of those dropped after the first `dropped_since`),
        and the producers' total wait."""
        return QueueStats(groups_in=self.groups_in, groups_out=self.groups_out,
                          groups_dropped_stale=self.groups_dropped_stale, producer_wait_s=self.producer_wait_s,
                          dropped_group_ids=self.dropped_group_ids[dropped_since:])
