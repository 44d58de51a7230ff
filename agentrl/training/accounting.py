"""Where every admitted prompt group ends: the run's ledger.

An admitted group ends trained, dropped as stale, failed after its retries (with the reason), or in
flight at stop, so `admitted = trained + dropped_stale + failed + in_flight_at_stop` at the end of every
run, a crashed or resumed one included. `RUN/admissions.jsonl` holds one line per admission; a group
re-admitted after a resume gets a second line marked `resumed` (it is still one admitted group).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from agentrl.errors import RunFailure
from agentrl.records import DataRow, GroupOutcome


@dataclass
class AdmittedGroup:
    """A group the driver started: its prompt row and the policy version at admission."""

    group_id: str
    row: DataRow
    policy_version: int
    attempts: int = 0  # runs started; more than one: retried after an actor died under it


@dataclass
class LedgerCounts:
    """The ledger's numbers (summary.json's `groups_*` keys; saved in every checkpoint)."""

    groups_admitted: int = 0
    groups_trained: int = 0
    groups_dropped_stale: int = 0
    groups_failed: int = 0
    groups_in_flight_at_stop: int = 0
    groups_retried: int = 0
    failed_reasons: dict[str, int] = field(default_factory=dict)
    admission_lines: int = 0  # lines of admissions.jsonl, re-admissions included (a resume keeps these)


MAX_FAILURE_REASONS = 32  # distinct reasons kept by name; later new ones count as "other reasons"
GROUP_ENDS = ("groups_trained", "groups_dropped_stale", "groups_failed", "groups_in_flight_at_stop")


def lost_groups(counts: dict[str, Any]) -> int:
    """Admitted groups that ended nowhere (summary.json's counts): 0 when the ledger balances."""
    return counts["groups_admitted"] - sum(counts[k] for k in GROUP_ENDS)


class GroupLedger:
    """The driver's record of admitted groups. `live` holds the groups not yet ended, running or waiting
    in the replay queue: the capacity bound counts them, and a resume re-admits them."""

    def __init__(self, run_dir: str, counts: LedgerCounts | None = None, max_failed_in_a_row: int = 0) -> None:
        self.counts = counts or LedgerCounts()
        self.counts.groups_in_flight_at_stop = 0
        self.live: dict[str, AdmittedGroup] = {}
        self.max_failed_in_a_row = max_failed_in_a_row  # 0: no limit
        self.failed_in_a_row = 0  # groups failed since the last one reached the queue
        self.path = os.path.join(run_dir, "admissions.jsonl")
        _keep_lines(self.path, self.counts.admission_lines)
        self._file = open(self.path, "a")

    def admit(self, group: AdmittedGroup, resumed: bool = False) -> None:
        """Record an admission (a re-admission after a resume is not a new group)."""
        self.live[group.group_id] = group
        if not resumed:
            self.counts.groups_admitted += 1
        line: dict[str, Any] = {"group_id": group.group_id, "data_id": group.row.data_id or str(group.row.row_id),
                                "policy_version": group.policy_version}
        if resumed:
            line["resumed"] = True
        self._file.write(json.dumps(line) + "\n")
        self.counts.admission_lines += 1
        self._file.flush()

    def failed(self, group_id: str, reason: str) -> None:
        """A group failed; RunFailure when `max_failed_in_a_row` failed with none reaching the queue between
        (a setup where every group fails would otherwise admit and fail groups for ever)."""
        if self.live.pop(group_id, None) is not None:
            self.counts.groups_failed += 1
            reasons = self.counts.failed_reasons
            key = reason if reason in reasons or len(reasons) < MAX_FAILURE_REASONS else "other reasons"
            reasons[key] = reasons.get(key, 0) + 1
            self.failed_in_a_row += 1
            if self.max_failed_in_a_row and self.failed_in_a_row >= self.max_failed_in_a_row:
                raise RunFailure(f"{self.failed_in_a_row} groups in a row failed and none reached the replay queue "
                                 f"(trainer.max_failed_groups_in_a_row); the last: {reason}")

    def env_outcome(self, group_id: str, outcome: GroupOutcome) -> None:
        """How a group ended in its environment actor: in the replay queue (a failure streak ends) or failed."""
        if outcome.status == "failed":
            self.failed(group_id, outcome.reason)
        else:
            self.failed_in_a_row = 0

    def trained(self, group_ids: list[str]) -> None:
        for g in group_ids:
            if self.live.pop(g, None) is not None:
                self.counts.groups_trained += 1

    def dropped_stale(self, group_ids: list[str]) -> None:
        for g in group_ids:
            if self.live.pop(g, None) is not None:
                self.counts.groups_dropped_stale += 1

    def retried(self) -> None:
        self.counts.groups_retried += 1

    def close(self) -> LedgerCounts:
        """End the run's ledger: what is still live is in flight at stop."""
        self.counts.groups_in_flight_at_stop = len(self.live)
        if not self._file.closed:
            self._file.close()
        return self.counts

    def snapshot(self) -> dict[str, Any]:
        """The counts as a checkpoint keeps them: groups live now count as in flight."""
        return {**asdict(self.counts), "groups_in_flight_at_stop": len(self.live)}


def _keep_lines(path: str, n: int) -> None:
    """Keep the first n lines of `path` (a resume drops what the interrupted run admitted after its checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()[:n]
    with open(path, "w") as f:
        f.writelines(lines)
