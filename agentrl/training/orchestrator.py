"""The orchestrator (the driver): starts the actors, feeds prompts under the staleness bound, runs the
learner loop, pushes weights, and writes metrics.

Capacity control (AReaL-style): with B groups per step and bound s, a new group may start only while
`started - dropped - failed < B * (policy_version + s + 1)`; since B * policy_version groups have been
trained, that is `live groups < B * (s + 1)` (live: started, not yet trained, dropped or failed).
Groups are consumed oldest-first, so a group started at version v is trained by version v + s; a
group that still arrives late is dropped by the replay queue and counted. In async mode
`trainer.spare_groups` more may be live: stand-ins for groups held up in a tool's tail (the queue's
drop keeps the bound; spares trade some dropped work for a learner that does not wait). `trainer.mode=sync`
is the same loop with s = 0: generate a batch, train, push, repeat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable  # noqa: UP035

import ray

from agentrl.actors.factory import ActorGroups, connect_ray, create_actors, guarded, start_actors, stop_actors
from agentrl.actors.weights import sync_weights, weight_sync_method
from agentrl.config import SYNTHETIC_SOURCES, Config, to_yaml
from agentrl.data.prompts import DataCursor, PromptStream
from agentrl.data.synthetic import synthetic_image_rows, synthetic_rows
from agentrl.errors import ActorFailure, UserError
from agentrl.evaluation.evaluate import periodic_eval
from agentrl.metrics import MetricsWriter
from agentrl.models.tiny import ensure_model
from agentrl.records import DataRow, GroupOutcome, TrainBatch
from agentrl.redaction import redact
from agentrl.training.accounting import AdmittedGroup, GroupLedger
from agentrl.training.checkpoint import Checkpoint, CheckpointStore, TrainerState, restore_rng, rng_states
from agentrl.training.faults import ActorKiller, kill_driver
from agentrl.training.step_metrics import step_row, summed_tool_counters

RESTART_TIMEOUT_S = 300.0  # how long a group waits for Ray to restart the actor that died under it
ENGINE_CHECK_S = 2.0  # how often the driver looks for a restarted engine waiting for weights


@dataclass
class RunSummary:
    """Where every admitted prompt group ended (`summary.json`): groups_admitted = groups_trained +
    groups_dropped_stale + groups_failed + groups_in_flight_at_stop, counted across resumes."""

    run_dir: str
    steps: int
    groups_admitted: int = 0
    groups_trained: int = 0
    groups_dropped_stale: int = 0
    groups_failed: int = 0
    groups_in_flight_at_stop: int = 0
    groups_retried: int = 0  # re-runs after an environment, reward or generator actor died
    failed_reasons: dict[str, int] = field(default_factory=dict)  # reason -> count
    rows_skipped: dict[str, int] = field(default_factory=dict)  # bad data rows skipped, by field
    checkpoint: str = ""
    resumed_from: str = ""
    stopped_by: str = ""  # "" (finished), a signal's name, or the error that stopped the run
    faults: dict[str, int] = field(default_factory=dict)  # actors killed by `faults.*`, by kind
    wall_s: float = 0.0


# Called after every step with the metrics row it logged and the batch it trained on (the bench keeps them).
StepHook = Callable[[dict[str, Any], TrainBatch], None]


def _node_id(actor: Any) -> str:
    return ray.get_runtime_context().get_node_id()


class Orchestrator:
    """One training run: starts the actors (agentrl.actors.factory), feeds prompts under the staleness
    bound, trains, pushes weights, checkpoints, writes metrics; `on_step` sees each step's metrics row
    and batch."""

    def __init__(self, cfg: Config, on_step: StepHook | None = None) -> None:
        self.cfg = cfg
        self.on_step = on_step
        t = cfg.trainer
        self.max_staleness = 0 if t.mode == "sync" else t.max_staleness
        # how many groups may be live at once (see the module docstring)
        self.capacity = t.batch_groups * (self.max_staleness + 1) + (t.spare_groups if t.mode == "async" else 0)
        self.stream: Any = None  # the prompt stream of a file source (its cursor and skipped rows)
        self.run_dir = os.path.join(t.output_dir, t.run_name)
        self.store = CheckpointStore(self.run_dir, t.keep_checkpoints)
        self.groups: ActorGroups | None = None  # every actor, once started
        self.policy_version = 0
        self.step = 0
        self.rows_taken = 0
        self.summary = RunSummary(self.run_dir, 0)
        self.ledger: GroupLedger | None = None
        self.resume: Checkpoint | None = None
        self.stopping = asyncio.Event()  # SIGINT/SIGTERM: stop admitting, save, stop
        self._learner_busy = asyncio.Lock()  # a step's train + push, or a restarted engine's push
        self._capacity_changed = asyncio.Event()
        self._dropped_seen = 0  # dropped group ids already taken from the queue's stats
        # per step, wall-clock (time.time()) marks: batch requested, training started, sync started, sync ended
        self.step_marks: list[tuple[float, float, float, float]] = []
        self.gen_busy: list[tuple[float, float]] = []  # (time.time(), engines' busy seconds so far) per step

    # ---- actors -------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        self.model_path = os.path.abspath(ensure_model(cfg.model.path, cfg.model.cache_dir))
        self.groups = create_actors(cfg, self.model_path, max_staleness=self.max_staleness,
                                    learner_steps=cfg.trainer.total_steps)
        self.queue, self.learner = self.groups.queue, self.groups.learner
        await self._guard(start_actors(self.groups))
        if self.resume is not None:  # the learner continues from the checkpoint; the engines get its weights
            st = self.resume.state
            await self._guard(self.learner.load_checkpoint.remote(self.resume.path, st.step, st.policy_version))
            await self._guard(self._push(self.groups.engines))
        await self._write_placement()

    async def _write_placement(self) -> None:
        """Which Ray node each engine, environment actor and learner rank runs on (multi-node runs place
        them by resources); `learner` is rank 0's."""
        assert self.groups is not None
        actors = {n: h for n, h in self.groups.named().items()
                  if not n.startswith(("reward-", "replay-queue", "learner"))}
        nodes = await self._guard(asyncio.gather(*[h.__ray_call__.remote(_node_id) for h in actors.values()]))
        placement = dict(zip(actors, nodes, strict=True))
        ranks = await self._guard(self.learner.rank_nodes.remote())
        placement.update({"learner": ranks[0], **{f"learner-rank-{r}": n for r, n in enumerate(ranks)}})
        with open(os.path.join(self.run_dir, "placement.json"), "w") as f:
            json.dump(placement, f, indent=1)

    async def _guard(self, awaitable: Any) -> Any:
        """Await a Ray call; an actor crash becomes ActorFailure naming the actor (`guarded`)."""
        return await guarded(awaitable, self.groups)

    async def shutdown(self) -> None:
        """Stop the engines cleanly, then kill every actor."""
        if self.groups is not None:
            await stop_actors(self.groups)

    # ---- admission ----------------------------------------------------------------------------
    def _rows(self) -> Iterator[DataRow]:
        """The prompt stream from the cursor on (`rows_taken` prompts of a synthetic source, the file
        stream's own cursor)."""
        d = self.cfg.data
        if d.source in SYNTHETIC_SOURCES:
            make = synthetic_rows if d.source == "synthetic" else synthetic_image_rows
            return itertools.islice(itertools.cycle(make(d.num_prompts, d.seed)), self.rows_taken, None)
        cursor = DataCursor(**self.resume.state.data_cursor) if self.resume and self.resume.state.data_cursor \
            else DataCursor()
        self.stream = PromptStream(d.source, seed=d.seed, shuffle=d.shuffle, shuffle_buffer=d.shuffle_buffer,
                                   on_bad_row=d.on_bad_row, cursor=cursor)
        return iter(self.stream)

    async def _wait_for_capacity(self) -> None:
        assert self.ledger is not None
        while len(self.ledger.live) >= self.capacity:
            self._capacity_changed.clear()
            try:
                await asyncio.wait_for(self._capacity_changed.wait(), 0.5)
            except TimeoutError:
                await self._sync_drops()

    async def _feed(self, pending: dict[asyncio.Future, str]) -> None:
        """Admit groups while there is room: first those a resume re-admits, then the stream's."""
        assert self.groups is not None and self.ledger is not None
        for group in (self.resume.live if self.resume else []):  # run again from the checkpoint's policy
            self._start_group(pending, dataclasses.replace(group, policy_version=self.policy_version, attempts=0),
                              resumed=True)
        rows = self._rows()
        while True:
            await self._wait_for_capacity()
            if self.stopping.is_set():
                return
            # no await from taking a row to admitting it: a checkpoint's cursor and live groups agree
            row = next(rows)
            self.rows_taken += 1
            self._start_group(pending, AdmittedGroup(f"g{self.ledger.counts.groups_admitted}", row,
                                                     self.policy_version))

    def _start_group(self, pending: dict[asyncio.Future, str], group: AdmittedGroup, resumed: bool = False) -> None:
        assert self.ledger is not None
        self.ledger.admit(group, resumed)
        task = asyncio.ensure_future(self._run_group(group))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # the collector reports the first crash
        pending[task] = group.group_id

    async def _run_group(self, group: AdmittedGroup) -> GroupOutcome:
        """Run one group in an environment actor; when that actor, a reward actor or an engine dies under
        it, wait for Ray to restart the actor and run the group again (`trainer.max_group_retries`)."""
        assert self.groups is not None and self.ledger is not None
        while True:
            env = self.groups.envs[group.attempts % len(self.groups.envs)]
            group.attempts += 1
            try:
                return await env.run_group.remote(group.row, group.group_id, group.policy_version)
            except ray.exceptions.RayActorError as e:
                name = self.groups.name_of(getattr(e, "actor_id", "") or "")
                if not self.groups.restartable(name):
                    raise
                await self._wait_restarted(name, e)
                if group.attempts > self.cfg.trainer.max_group_retries:
                    return GroupOutcome("failed", reason=f"actor '{name}' died under it {group.attempts} times")
                self.ledger.retried()

    async def _wait_restarted(self, name: str, error: Exception) -> None:
        """Wait until Ray has restarted actor `name`; one that is dead for good (its restarts used up)
        stops the run, named."""
        assert self.groups is not None
        handle = self.groups.named()[name]
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                await handle.__ray_ready__.remote()
                return
            except ray.exceptions.ActorUnavailableError:  # restarting: ask again
                await asyncio.sleep(0.5)
            except ray.exceptions.RayActorError:
                break
        raise ActorFailure(f"actor '{name}' died and was not restarted (its max_restarts are used up). "
                           f"Traceback (remote):\n{redact(str(error))}") from None

    async def _revive_engines(self) -> None:
        """An engine Ray restarted after a crash gets the current weights at once (it serves only then):
        with one engine, nothing else could generate the batch that the next step's push waits for."""
        assert self.groups is not None
        while True:
            await asyncio.sleep(ENGINE_CHECK_S)
            for i, handle in enumerate(self.groups.engines):
                try:
                    stats = await handle.stats.remote()
                except ray.exceptions.RayActorError:  # restarting now (or dead: its groups find out)
                    continue
                if not stats.serving:  # a collective push reaches the whole group, rebuilt with this engine
                    whole = weight_sync_method(self.cfg.rollout, self.cfg.learner) == "collective"
                    async with self._learner_busy:
                        await self._guard(self._push(self.groups.engines if whole else [handle]))
                    print(f"[agentrl] generator-{i} restarted; it has the weights of version {self.policy_version}")

    async def _push(self, engines: list[Any]) -> float:
        """The learner's weights into `engines` by `rollout.weight_sync`."""
        method = weight_sync_method(self.cfg.rollout, self.cfg.learner)
        return await sync_weights(self.learner, engines, method, self.cfg.rollout.weight_bucket_mb)


    async def _sync_drops(self) -> None:
        """Groups the queue dropped as stale end in the ledger and free their capacity."""
        assert self.ledger is not None
        stats = await self._guard(self.queue.stats.remote(self._dropped_seen))
        if stats.dropped_group_ids:
            self._dropped_seen += len(stats.dropped_group_ids)
            self.ledger.dropped_stale(stats.dropped_group_ids)
            self._capacity_changed.set()

    async def _collect(self, pending: dict[asyncio.Future, str]) -> None:
        """Watch running groups: count failures, turn an actor crash into a run failure."""
        assert self.ledger is not None
        while True:
            if not pending:
                await asyncio.sleep(0.05)
                continue
            done, _ = await asyncio.wait(list(pending), timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                group_id = pending.pop(task)
                try:
                    outcome = task.result()
                except ray.exceptions.RayError as e:  # the learner, the queue: the run cannot go on
                    await self._guard(_reraise(e))
                if outcome.status == "failed":
                    self._capacity_changed.set()
                self.ledger.env_outcome(group_id, outcome)

    # ---- the run ------------------------------------------------------------------------------
    async def run(self) -> RunSummary:
        """The whole run: start (or resume) the actors, train `trainer.total_steps` steps while the feeder
        keeps groups in flight, checkpoint every `trainer.save_every` steps and at a clean stop (the end,
        or SIGINT/SIGTERM), write summary.json (after a crash too)."""
        t = self.cfg.trainer
        t_start = time.perf_counter()
        os.makedirs(self.run_dir, exist_ok=True)
        with open(os.path.join(self.run_dir, "config.yaml"), "w") as f:
            f.write(to_yaml(self.cfg))
        self._load_resume()
        self._install_signal_handlers()
        writer: MetricsWriter | None = None
        background: list[asyncio.Future] = []
        try:
            await self.start()
            writer = MetricsWriter(self.run_dir, dataclasses.asdict(self.cfg), t.wandb, t.total_steps, t.progress,
                                   first_step=self.step)
            pending: dict[asyncio.Future, str] = {}
            killer = ActorKiller(self.cfg.faults, self.groups, self.stopping)
            background = [asyncio.ensure_future(self._feed(pending)), asyncio.ensure_future(self._collect(pending)),
                          asyncio.ensure_future(self._revive_engines())]
            if killer.schedules():
                background.append(asyncio.ensure_future(killer.run()))
            if t.eval_before and self.step == 0:  # the starting policy, while the first groups roll out
                await self._eval_metrics(0)
            await self._train(writer, background)
            self.summary.faults = killer.kills
            if t.save_final or self.stopping.is_set():
                await self._settle(pending)
                path = await self._save_checkpoint()
                self.summary.checkpoint = self.store.mark_final(path) if not self.stopping.is_set() else path
        except BaseException as e:
            self.summary.stopped_by = redact(f"{type(e).__name__}: {e}").splitlines()[0]
            raise
        finally:
            for task in background:
                task.cancel()
            if writer is not None:
                writer.close()
            self._write_summary(t_start)
        return self.summary
    async def _train(self, writer: MetricsWriter, background: list[asyncio.Future]) -> None:
        """The learner loop: take a batch, train, push the weights, log the step, checkpoint."""
        t = self.cfg.trainer
        assert self.groups is not None and self.ledger is not None
        last = time.perf_counter()
        last_tokens = await self._engine_counters()
        while self.step < t.total_steps and not self.stopping.is_set():
            t_ask = time.time()
            batch_task = asyncio.ensure_future(self._guard(
                self.queue.get_batch.remote(t.batch_groups, self.policy_version)))
            stop_task = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait([batch_task, stop_task, *background], return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            for bg in [b for b in background if b.done()]:
                bg.result()  # re-raises the crash
                background.remove(bg)  # the feeder ends when a stop is asked
            if not batch_task.done():  # stopping: the groups stay live, re-admitted on resume
                batch_task.cancel()
                break
            batch: TrainBatch = batch_task.result()
            train_version = self.policy_version
            async with self._learner_busy:
                t_train = time.time()
                stats = await self._guard(self.learner.train_step.remote(batch))
                t_sync = time.time()
                await self._guard(self._push(self.groups.engines))
            self.step_marks.append((t_ask, t_train, t_sync, time.time()))
            self.policy_version, self.step = stats.policy_version, stats.step
            self.ledger.trained([g.group_id for g in batch.groups])
            await self._sync_drops()
            self._capacity_changed.set()
            now = time.perf_counter()
            tokens = await self._engine_counters()
            marks = self.step_marks[-1]
            row = {**step_row(stats, batch, train_version, now - last, tokens - last_tokens, marks,
                              self.ledger.counts.groups_dropped_stale),
                   **await self._tool_counters(), **await self._eval_metrics(stats.step)}
            writer.log(row)
            if self.on_step is not None:
                self.on_step(row, batch)
            last, last_tokens = now, tokens
            await self._after_step()

    async def _after_step(self) -> None:
        """The periodic checkpoint, then the faults scheduled for this step."""
        t, f = self.cfg.trainer, self.cfg.faults
        if t.save_every and self.step % t.save_every == 0 and self.step < t.total_steps:
            await self._save_checkpoint()
        if f.kill_learner_rank_at_step == self.step:
            print(f"[agentrl] fault: killing learner rank {f.kill_learner_rank}")
            await self._guard(self.learner.kill_rank.remote(f.kill_learner_rank))
        if f.kill_driver_at_step == self.step:
            kill_driver()

    async def _save_checkpoint(self) -> str:
        """A checkpoint of this step: the learner writes its part into the staging folder, then the
        driver's state (taken at one instant: no await between the cursor and the live groups)."""
        assert self.ledger is not None
        tmp = self.store.staging(self.step)
        await self._guard(self.learner.save_checkpoint.remote(tmp))
        cursor = dataclasses.asdict(self.stream.cursor) if self.stream is not None else None
        state = TrainerState(self.step, self.policy_version, self.rows_taken, cursor, self.ledger.snapshot(),
                             self.cfg.trainer.seed, rng_states())
        path = self.store.commit(tmp, state, list(self.ledger.live.values()))
        print(f"[agentrl] checkpoint: {path}")
        return path

    async def _settle(self, pending: dict[asyncio.Future, str]) -> None:
        """On a stop: give the groups still running `trainer.stop_timeout_s` to come back."""
        if self.stopping.is_set() and pending:
            await asyncio.wait(list(pending), timeout=self.cfg.trainer.stop_timeout_s)

    def _load_resume(self) -> None:
        """`trainer.resume=auto`: continue from the run's newest complete checkpoint, if any."""
        counts = None
        if self.cfg.trainer.resume == "auto":
            self.resume = self.store.latest(warn=lambda line: print(line, file=sys.stderr))
        if self.resume is not None:
            st = self.resume.state
            self.step, self.policy_version, self.rows_taken = st.step, st.policy_version, st.rows_taken
            counts = st.ledger_counts()
            restore_rng(st.rng)
            self.summary.resumed_from = self.resume.path
            print(f"[agentrl] resuming from {self.resume.path}: step {st.step}, "
                  f"{len(self.resume.live)} groups re-admitted first")
        self.ledger = GroupLedger(self.run_dir, counts, self.cfg.trainer.max_failed_groups_in_a_row)

    def _install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM: stop admitting, let running groups finish (`trainer.stop_timeout_s`), save a
        checkpoint, stop every actor, exit 0. A second signal acts at once."""
        loop = asyncio.get_running_loop()

        def stop(sig: signal.Signals) -> None:
            for s in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(s)
            print(f"[agentrl] {sig.name}: stopping; running groups get {self.cfg.trainer.stop_timeout_s:.0f}s, "
                  "then a checkpoint", flush=True)
            self.summary.stopped_by = sig.name
            self.stopping.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)

    def _write_summary(self, t_start: float) -> None:
        s = self.summary
        s.steps = self.step
        if self.ledger is not None:
            c = self.ledger.close()
            for k in ("admitted", "trained", "dropped_stale", "failed", "in_flight_at_stop", "retried"):
                setattr(s, f"groups_{k}", getattr(c, f"groups_{k}"))
            s.failed_reasons = dict(c.failed_reasons)
        if self.stream is not None:
            s.rows_skipped = dict(self.stream.skipped)
        s.wall_s = time.perf_counter() - t_start
        with open(os.path.join(self.run_dir, "summary.json"), "w") as f:
            json.dump(dataclasses.asdict(s), f, indent=1)

    async def _tool_counters(self) -> dict[str, int]:
        """The environment actors' tool and tool-cache counters (`EnvironmentStats.tool_counters`), summed
        over the actors: cumulative totals as `tool/<tool>/<counter>` and `tool/cache/<counter>` (an actor
        restarting now is left out; a restarted one counts from its restart)."""
        assert self.groups is not None
        return summed_tool_counters(await self._alive_stats(self.groups.envs))

    async def _alive_stats(self, handles: list[Any]) -> list[Any]:
        """`stats()` of each (restartable) actor, leaving out one that died or is being restarted: a group
        run on it finds out whether Ray brings it back (`_run_group`)."""
        async def one(handle: Any) -> Any:
            try:
                return await handle.stats.remote()
            except ray.exceptions.RayActorError:
                return None

        return [r for r in await asyncio.gather(*[one(h) for h in handles]) if r is not None]

    async def _engine_counters(self) -> float:
        """Tokens the engines have generated so far; also samples their busy time (`gen_busy`)."""
        assert (g := self.groups) is not None
        stats = await (self._alive_stats(g.engines) if g.engines else g.generators.stats())
        self.gen_busy.append((time.time(), sum(s.busy_s for s in stats)))
        return sum(s.tokens_generated for s in stats)

    async def _eval_metrics(self, step: int) -> dict[str, float]:
        """Every trainer.eval_every steps, the eval of trainer.eval_data on the current policy (eval/*)."""
        t = self.cfg.trainer
        if not t.eval_every or step % t.eval_every:
            return {}
        assert self.groups is not None
        out = os.path.join(self.run_dir, "eval", f"step_{step}")
        return await self._guard(periodic_eval(self.groups.envs, self.cfg, out))


async def _reraise(error: BaseException) -> None:
    raise error


def train(cfg: Config) -> RunSummary:
    """Run a training job: join RAY_ADDRESS or start a local cluster; exit cleanly either way. With
    `sft.data` set, the warm start (`agentrl.training.sft.warm_start`) comes first. A user error met during
    the run (a bad data row deep in the file, an unusable cache, a bad setting an actor found) comes out as
    itself; an actor failure as ActorFailure; anything else as ActorFailure with its traceback."""
    from agentrl.training.sft import warm_start

    started_here = connect_ray()

    async def main(orch: Orchestrator) -> RunSummary:
        try:
            return await orch.run()
        finally:
            await orch.shutdown()

    try:
        return asyncio.run(main(Orchestrator(warm_start(cfg))))
    except (ActorFailure, UserError):
        raise
    except Exception as e:
        raise ActorFailure(f"run failed: {redact(traceback.format_exc())}") from e
    finally:
        if started_here:
            ray.shutdown()
