"""The replay queue as a real Ray actor: whole groups, FIFO, bounded, staleness-dropped."""

import asyncio

import ray

from agentrl.actors.factory import create_replay_queue
from agentrl.records import Trajectory, TrajectoryGroup


def group(gid: str, version: int, n: int = 3) -> TrajectoryGroup:
    trajs = []
    for k in range(n):
        t = Trajectory(traj_id=f"{gid}-{k}", group_id=gid, data_row_id=0, prompt_ids=[1])
        t.append([5, 6], trainable=True, logprobs=[-1.0, -1.0], versions=[version, version])
        trajs.append(t)
    return TrajectoryGroup(gid, version, trajs)


def queue(capacity: int, max_staleness: int):
    return create_replay_queue(capacity, max_staleness, name=None, max_concurrency=100)


def test_batches_hold_whole_groups_in_arrival_order(cluster):
    q = queue(capacity=8, max_staleness=1)
    for i in range(5):
        ray.get(q.put.remote(group(f"g{i}", 0)))
    batch = ray.get(q.get_batch.remote(2, 0))
    assert [g.group_id for g in batch.groups] == ["g0", "g1"]
    assert all(len(g.trajectories) == 3 for g in batch.groups)
    assert batch.queue_depth == 3


def test_a_batch_takes_the_oldest_policy_versions_first_so_late_groups_are_trained_before_going_stale(cluster):
    q = queue(capacity=8, max_staleness=2)
    for g in (group("new1", 2), group("new2", 2), group("late", 0), group("new3", 2)):
        ray.get(q.put.remote(g))
    batch = ray.get(q.get_batch.remote(2, 2))
    assert [g.group_id for g in batch.groups] == ["late", "new1"]  # then arrival order among equals
    assert [g.group_id for g in ray.get(q.get_batch.remote(2, 3)).groups] == ["new2", "new3"]


def test_stale_groups_are_dropped_and_counted(cluster):
    q = queue(capacity=8, max_staleness=1)
    for g in (group("old", 0), group("new1", 2), group("new2", 3)):
        ray.get(q.put.remote(g))  # one at a time: concurrent puts have no order
    batch = ray.get(q.get_batch.remote(2, 3))  # learner at version 3: version 0 is 3 behind
    assert [g.group_id for g in batch.groups] == ["new1", "new2"]
    stats = ray.get(q.stats.remote())
    assert (stats.groups_in, stats.groups_out, stats.groups_dropped_stale, batch.queue_depth) == (3, 2, 1, 0)


def test_producers_wait_while_the_queue_is_full(cluster):
    q = queue(capacity=2, max_staleness=4)

    async def scenario():
        await q.put.remote(group("a", 0))
        await q.put.remote(group("b", 0))
        blocked = asyncio.ensure_future(q.put.remote(group("c", 0)))
        await asyncio.sleep(0.5)
        assert not blocked.done()  # full: the third producer waits
        await q.get_batch.remote(1, 0)
        assert await asyncio.wait_for(blocked, 5) == 2  # put, once there was room, and the depth after it

    asyncio.run(scenario())
    stats = ray.get(q.stats.remote())
    assert stats.producer_wait_s >= 0.4  # the third producer waited about 0.5 s, and it was counted
