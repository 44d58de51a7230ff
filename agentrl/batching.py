"""How a learner step's batch is laid out: sequences with their advantages, mini-batches of whole groups,
each mini-batch split across the learner's ranks balanced by tokens, and each rank's share packed into
micro-batches by token count.

Pure functions over `TrainSequence`s; the learner group (`agentrl.actors.learner_group`) plans with them
and the ranks (`agentrl.actors.learner`) run the plans.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agentrl.algorithms import group_advantages, split_evenly
from agentrl.records import RankPlan, TrainBatch, TrainSequence, Trajectory


def trajectory_sequence(t: Trajectory, advantage: float = 0.0, masked: bool = False) -> TrainSequence:
    """A trajectory as the learner trains on it; `masked`: every token's loss mask 0 (the overlong filter)."""
    mask = [0] * len(t.loss_mask) if masked else list(t.loss_mask)
    return TrainSequence(t.prompt_ids + t.response_ids, len(t.prompt_ids), mask, list(t.behaviour_logprobs),
                         advantage, list(t.images))


def group_sequences(batch: TrainBatch, scale_rewards: bool, overlong_filter: bool) -> list[list[TrainSequence]]:
    """The batch's sequences, one list per group, with GRPO advantages; a truncated trajectory (its model
    turn cut by a token budget) is masked out when `overlong_filter`."""
    groups = []
    for group in batch.groups:
        advs = group_advantages(group.rewards, scale=scale_rewards)
        groups.append([trajectory_sequence(t, adv, overlong_filter and t.truncated)
                       for t, adv in zip(group.trajectories, advs, strict=True)])
    return groups


def masked_tokens(seqs: list[TrainSequence]) -> int:
    """The number of tokens that count in the loss."""
    return sum(sum(s.mask) for s in seqs)


def pack_by_tokens(seqs: list[Any], max_tokens: int) -> list[list[Any]]:
    """Dynamic micro-batching: sort by length and pack so that the padded size of each micro-batch
    (longest x count, image tokens included) stays within max_tokens; a longer sequence goes alone."""
    out: list[list[Any]] = []
    cur: list[Any] = []
    longest = 0
    for s in sorted(seqs, key=lambda s: len(s.ids)):
        new_longest = max(longest, len(s.ids))
        if cur and new_longest * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur, new_longest = [], len(s.ids)
        cur.append(s)
        longest = new_longest
    if cur:
        out.append(cur)
    return out


def shard_by_tokens(seqs: list[TrainSequence], ranks: int) -> list[list[TrainSequence]]:
    """`ranks` shares of nearly equal token count (longest first, each to the lightest share so far)."""
    shares: list[list[TrainSequence]] = [[] for _ in range(ranks)]
    loads = [0] * ranks
    for s in sorted(seqs, key=lambda s: len(s.ids), reverse=True):
        k = loads.index(min(loads))
        shares[k].append(s)
        loads[k] += len(s.ids)
    return shares


def padding_sequence(like: TrainSequence) -> TrainSequence:
    """A sequence that joins a rank's forward and backward but moves nothing (its loss mask is all 0)."""
    return dataclasses.replace(like, mask=[0] * len(like.mask), advantage=0.0, proximal=None)


def _micro_batches(shares: list[list[TrainSequence]], max_tokens: int,
                   pad: TrainSequence) -> list[list[list[TrainSequence]]]:
    """Each share packed into micro-batches, all padded to the same count (ZeRO-3's collectives)."""
    packed = [pack_by_tokens(share, max_tokens) for share in shares]
    count = max(len(p) for p in packed)
    return [p + [[padding_sequence(pad)] for _ in range(count - len(p))] for p in packed]


def plan_step(groups: list[list[TrainSequence]], ranks: int, mini_batches: int, epochs: int,
              max_tokens: int) -> list[RankPlan]:
    """Every rank's share of a learner step: the groups in `mini_batches` mini-batches (whole groups), one
    optimizer step each, repeated `epochs` times; each mini-batch split across `ranks` by tokens and
    packed by `max_tokens`. The proximal log-probs are taken first when there is more than one update.

    Within one plan a sequence is one object in every place it appears (Ray pickles a plan as one graph,
    so this survives the trip): the proximal pass fills in what the updates read."""
    minis = [[s for g in part for s in g] for part in split_evenly(groups, mini_batches)]
    pad = next(s for mini in minis for s in mini)
    shares = [shard_by_tokens(mini, ranks) for mini in minis]  # per mini-batch, per rank
    packed = [_micro_batches(per_rank, max_tokens, pad) for per_rank in shares]
    tokens = [masked_tokens(mini) for mini in minis] * epochs
    proximal = [[] for _ in range(ranks)]
    if len(minis) * epochs > 1:
        proximal = _micro_batches([[s for per_rank in shares for s in per_rank[r]] for r in range(ranks)],
                                  max_tokens, pad)
    return [RankPlan(proximal=proximal[r], updates=[p[r] for _ in range(epochs) for p in packed],
                     update_tokens=tokens) for r in range(ranks)]


def plan_passes(seqs: list[TrainSequence], ranks: int, max_tokens: int) -> list[list[list[TrainSequence]]]:
    """Forward-only work (a loss, log-probs) split across `ranks` by tokens, each rank's share packed into
    the same number of micro-batches."""
    return _micro_batches(shard_by_tokens(seqs, ranks), max_tokens, seqs[0])
