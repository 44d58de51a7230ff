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
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable  # noqa: UP035

import ray

from agentrl.actors.factory import ActorGroups, connect_ray, create_actors, guarded, start_actors, stop_actors
from agentrl.actors.weights import sync_weights
from agentrl.config import Config, to_yaml
from agentrl.data.prompts import PromptStream
from agentrl.data.synthetic import synthetic_image_rows, synthetic_rows
from agentrl.errors import ActorFailure, UserError
from agentrl.evaluation.evaluate import periodic_eval
from agentrl.metrics import MetricsWriter, percentile
from agentrl.models.tiny import ensure_model
from agentrl.records import LearnerStepStats, TrainBatch
from agentrl.redaction import redact
from agentrl.timing import step_profile


@dataclass
class RunSummary:
    """Where every admitted prompt ended."""

    run_dir: str
    steps: int
    admitted: int = 0
    trained: int = 0
    dropped_stale: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason -> count
    rows_skipped: dict[str, int] = field(default_factory=dict)  # bad data rows skipped, by field
    checkpoint: str = ""
    wall_s: float = 0.0


# Called after every step with the metrics row it logged and the batch it trained on (the bench keeps them).
StepHook = Callable[[dict[str, Any], TrainBatch], None]


def _node_id(actor: Any) -> str:
    return ray.get_runtime_context().get_node_id()


class Orchestrator:
    """One training run: starts the actors (agentrl.actors.factory), feeds prompts under the staleness
    bound, trains, pushes weights, writes metrics; `on_step` sees each step's metrics row and batch."""

    def __init__(self, cfg: Config, on_step: StepHook | None = None) -> None:
        self.cfg = cfg
        self.on_step = on_step
        t = cfg.trainer
        self.max_staleness = 0 if t.mode == "sync" else t.max_staleness
        # how many groups may be live at once (see the module docstring)
        self.capacity = t.batch_groups * (self.max_staleness + 1) + (t.spare_groups if t.mode == "async" else 0)
        self.stream: Any = None  # the prompt stream of a file source (its cursor and skipped rows)
        self.run_dir = os.path.join(t.output_dir, t.run_name)
        self.groups: ActorGroups | None = None  # every actor, once started
        self.policy_version = 0
        self.summary = RunSummary(self.run_dir, 0)
        self._live = 0  # started, not yet trained, dropped or failed
        self._capacity_changed = asyncio.Event()
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

    # ---- the loops ----------------------------------------------------------------------------
    def _rows(self) -> Any:
        d = self.cfg.data
        if d.source == "synthetic":
            return itertools.cycle(synthetic_rows(d.num_prompts, d.seed))
        if d.source == "synthetic_vl":
            return itertools.cycle(synthetic_image_rows(d.num_prompts, d.seed))
        self.stream = PromptStream(d.source, seed=d.seed, shuffle=d.shuffle, shuffle_buffer=d.shuffle_buffer,
                                   on_bad_row=d.on_bad_row)
        return iter(self.stream)

    async def _feed(self, pending: dict[Any, Any]) -> None:
        assert self.groups is not None
        envs = itertools.cycle(self.groups.envs)
        for k, row in enumerate(self._rows()):
            while self._live >= self.capacity:
                self._capacity_changed.clear()
                try:
                    await asyncio.wait_for(self._capacity_changed.wait(), 0.5)
                except TimeoutError:
                    await self._sync_drops()
            ref = next(envs).run_group.remote(row, f"g{k}", self.policy_version)
            task = asyncio.ensure_future(self._guard(ref))
            # the collector reports the first crash; later ones are the same failure
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            pending[task] = row.row_id
            self._live += 1
            self.summary.admitted += 1

    async def _sync_drops(self) -> None:
        """Groups the queue dropped as stale free their capacity."""
        stats = await self._guard(self.queue.stats.remote())
        new = stats.groups_dropped_stale - self.summary.dropped_stale
        if new > 0:
            self.summary.dropped_stale += new
            self._live -= new

    async def _collect(self, pending: dict[Any, Any]) -> None:
        """Watch running groups: count failures, turn an actor crash into a run failure."""
        while True:
            if not pending:
                await asyncio.sleep(0.05)
                continue
            done, _ = await asyncio.wait(list(pending), timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                pending.pop(task)
                outcome = task.result()  # re-raises an actor crash
                if outcome.status == "failed":
                    self.summary.failed[outcome.reason] = self.summary.failed.get(outcome.reason, 0) + 1
                    self._live -= 1
                    self._capacity_changed.set()

    async def run(self) -> RunSummary:
        """The whole run: start the actors, train `trainer.total_steps` steps while the feeder keeps
        groups in flight, save the final checkpoint, write summary.json."""
        t = self.cfg.trainer
        t_start = time.perf_counter()
        os.makedirs(self.run_dir, exist_ok=True)
        with open(os.path.join(self.run_dir, "config.yaml"), "w") as f:
            f.write(to_yaml(self.cfg))
        await self.start()
        writer = MetricsWriter(self.run_dir, dataclasses.asdict(self.cfg), t.wandb, t.total_steps, t.progress)
        pending: dict[Any, Any] = {}
        background = [asyncio.ensure_future(self._feed(pending)), asyncio.ensure_future(self._collect(pending))]
        try:
            await self._train(writer, background)
            if t.save_final:
                path = os.path.abspath(os.path.join(self.run_dir, "checkpoints", "final"))
                self.summary.checkpoint = await self._guard(self.learner.save_pretrained.remote(path))
                self._save_trainer_state(path)
        finally:
            for task in background:
                task.cancel()
            writer.close()
        if self.stream is not None:
            self.summary.rows_skipped = dict(self.stream.skipped)
        if self._live > 0:
            self.summary.failed["run ended before the group was trained"] = self._live
        self.summary.wall_s = time.perf_counter() - t_start
        with open(os.path.join(self.run_dir, "summary.json"), "w") as f:
            json.dump(dataclasses.asdict(self.summary), f, indent=1)
        return self.summary

    async def _train(self, writer: MetricsWriter, background: list[asyncio.Future]) -> None:
        """The learner loop: take a batch, train, push the weights, log the step."""
        t = self.cfg.trainer
        assert self.groups is not None
        last = time.perf_counter()
        last_tokens = await self._engine_counters()
        for _ in range(t.total_steps):
            t_ask = time.time()
            batch_task = asyncio.ensure_future(self._guard(
                self.queue.get_batch.remote(t.batch_groups, self.policy_version)))
            await asyncio.wait([batch_task, *background], return_when=asyncio.FIRST_COMPLETED)
            for bg in background:
                if bg.done():
                    bg.result()  # re-raises the crash
            batch: TrainBatch = batch_task.result()
            train_version = self.policy_version
            t_train = time.time()
            stats = await self._guard(self.learner.train_step.remote(batch))
            t_sync = time.time()
            await self._guard(sync_weights(self.learner, self.groups.engines))
            self.step_marks.append((t_ask, t_train, t_sync, time.time()))
            self.policy_version = stats.policy_version
            self.summary.trained += len(batch.groups)
            self._live -= len(batch.groups)
            await self._sync_drops()
            self._capacity_changed.set()
            now = time.perf_counter()
            tokens = await self._engine_counters()
            row = {**self._row(stats, batch, train_version, now - last, tokens - last_tokens),
                   **await self._tool_counters(), **await self._eval_metrics(stats.step)}
            writer.log(row)
            if self.on_step is not None:
                self.on_step(row, batch)
            last, last_tokens = now, tokens
        self.summary.steps = t.total_steps

    async def _tool_counters(self) -> dict[str, int]:
        """The environment actors' tool and tool-cache counters (`EnvironmentStats.tool_counters`), summed
        over the actors: cumulative totals as `tool/<tool>/<counter>` and `tool/cache/<counter>`."""
        assert self.groups is not None
        stats = await self._guard(asyncio.gather(*[env.stats.remote() for env in self.groups.envs]))
        total: dict[str, int] = {}
        for s in stats:
            for name, value in s.tool_counters.items():
                total[name] = total.get(name, 0) + value
        return {f"tool/{name}": value for name, value in sorted(total.items())}

    async def _engine_counters(self) -> float:
        """Tokens the engines have generated so far; also samples their busy time (`gen_busy`)."""
        assert self.groups is not None
        stats = await self.groups.generators.stats()
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

    def _save_trainer_state(self, path: str) -> None:
        """What resuming needs besides the weights: step, version, and the data cursor."""
        stream = self.stream
        state = {"step": self.summary.steps, "policy_version": self.policy_version,
                 "data_cursor": dataclasses.asdict(stream.cursor) if stream else None}
        with open(os.path.join(path, "trainer_state.json"), "w") as f:
            json.dump(state, f, indent=1)

    def _row(self, stats: LearnerStepStats, batch: TrainBatch, train_version: int, step_s: float,
             new_tokens: float) -> dict[str, Any]:
        trajs = [tr for g in batch.groups for tr in g.trajectories]
        stale = [train_version - tr.min_policy_version for tr in trajs if tr.min_policy_version >= 0]
        calls = [c for tr in trajs for c in tr.tool_calls]
        lat = [c.latency_s for c in calls]
        rewards = [tr.reward.total if tr.reward else 0.0 for tr in trajs]
        _, t_train, t_sync, t_synced = self.step_marks[-1]
        sync_s = t_synced - t_sync
        return {
            "step": stats.step, "policy_version": stats.policy_version,
            "reward_mean": sum(rewards) / max(len(rewards), 1), "samples": stats.samples,
            "staleness_mean": sum(stale) / max(len(stale), 1), "staleness_max": max(stale, default=0),
            "learner_idle_frac": min(batch.wait_s / max(step_s, 1e-9), 1.0),
            "gen_tokens_per_s": new_tokens / max(step_s, 1e-9),
            "tool_latency_p50": percentile(lat, 50), "tool_latency_p99": percentile(lat, 99),
            "weight_sync_s": sync_s, "queue_depth": batch.queue_depth,
            "groups_dropped_stale": self.summary.dropped_stale,
            "loss": stats.loss, "grad_norm": stats.grad_norm, "lr": stats.lr, "tokens": stats.tokens,
            "train_s": stats.train_s, "learner_wait_s": batch.wait_s, "step_s": step_s,
            "tool_calls": len(calls), "tool_errors": sum(not c.ok for c in calls),
            "tool_cache_hits": sum(c.cached for c in calls),
            "tool_cache_misses": sum(not c.cached for c in calls),
            "answered_frac": sum(tr.answer is not None for tr in trajs) / max(len(trajs), 1),
            "images_per_traj_mean": sum(len(tr.images) for tr in trajs) / max(len(trajs), 1),
            **{f"loss/{k}": v for k, v in stats.extra.items()},
            # where this step's time went; `learner` is the train_step call as the driver saw it
            **step_profile(trajs, batch.wait_s, t_sync - t_train, sync_s, step_s),
        }


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
