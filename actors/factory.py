"""The one place that builds and stops actors: training, eval and the benches start every actor here
(OpenRLHF-style), so Ray options, names, placement by resources and the actors' runtime environment
are written once.

    started_here = connect_ray()
    groups = create_actors(cfg, model_path, max_staleness=s, learner_steps=T)  # handles and names
    await start_actors(groups)  # the engines started, every actor constructed
    ...
    await stop_actors(groups)  # the engines cleanly, then every actor killed (the node limiters too)

`guarded(call, groups)` awaits a Ray call and turns an actor crash into an ActorFailure naming the actor.
`check_plugins` resolves a config's tools, reward and data before any of this starts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

# torch is loaded before Ray connects: loaded after `ray.init()` in a job driver on a multi-node cluster,
# its oneMKL failed with "Cannot load libtorch_cpu.so".
import torch  # noqa: F401  isort: skip
import ray

from agentrl.actors.environment import EnvironmentActor
from agentrl.actors.generator import GeneratorActor, GeneratorPool
from agentrl.actors.learner_group import LearnerGroup
from agentrl.actors.replay_queue import ReplayQueue
from agentrl.actors.reward import RewardActor, RewardPool
from agentrl.config import SYNTHETIC_SOURCES, Config, ConfigError
from agentrl.console import library_log_env, log_level, ray_init_options
from agentrl.data.prompts import PromptStream
from agentrl.envs.registry import load_tool
from agentrl.errors import ActorFailure, UserError
from agentrl.redaction import redact
from agentrl.rewards import check_reward_options, get_reward_fn
from agentrl.web.cache import open_tool_cache
from agentrl.web.http import NODE_LIMITER_PREFIX

T = TypeVar("T")


def connect_ray(log_to_driver: bool = True) -> bool:
    """Join RAY_ADDRESS or start a local cluster; True when this process started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **ray_init_options(log_level(), log_to_driver))
    else:
        ray.init(include_dashboard=False, **ray_init_options(log_level(), log_to_driver))
    return True


def actor_runtime_env() -> dict[str, Any]:
    """The Ray runtime environment the actors start in: the driver's log level (quiet libraries unless
    debugging), no tokenizer threads, the driver's directory on the path, and the driver's cache root and
    DeepSpeed accelerator."""
    env = {**library_log_env(log_level()),
           "TOKENIZERS_PARALLELISM": "false",
           # plugins given by import path resolve from the driver's directory, on every node
           "PYTHONPATH": os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH", "")] if p)}
    for k in ("AGENTRL_CACHE", "DS_ACCELERATOR"):
        if k in os.environ:
            env[k] = os.environ[k]
    return {"env_vars": env}


def _options(name: str | None, resources: dict[str, float] | None = None, **opts: Any) -> dict[str, Any]:
    """Ray actor options: no CPU reserved (the actors wait on I/O and on each other), a name when given,
    custom resources (multi-node placement) when configured."""
    out: dict[str, Any] = {"num_cpus": 0, **opts}
    if name is not None:
        out["name"] = name
    if resources:
        out["resources"] = dict(resources)
    return out


def create_learner(cfg: Config, model_path: str, total_steps: int, name: str | None = "learner") -> Any:
    """The learner group actor (agentrl/actors/learner_group.py): `learner.num_ranks` DeepSpeed ranks, each
    placed by `learner.num_gpus` and `learner.resources`, started on the group's first call."""
    runtime_env = actor_runtime_env()
    opts = _options(name, max_concurrency=64, runtime_env=runtime_env)
    return ray.remote(LearnerGroup).options(**opts).remote(cfg, model_path, total_steps, runtime_env, name)


REPLAY_QUEUE = "replay-queue"  # the replay queue's actor name: environment actors look it up by it


def create_replay_queue(capacity: int, max_staleness: int, name: str | None = REPLAY_QUEUE,
                        max_concurrency: int = 1000) -> Any:
    """The replay queue actor: at most `capacity` groups, none older than `max_staleness` versions."""
    opts = _options(name, max_concurrency=max_concurrency, runtime_env=actor_runtime_env())
    return ray.remote(ReplayQueue).options(**opts).remote(capacity, max_staleness)


def create_reward_pool(cfg: Config, prefix: str = "reward") -> RewardPool:
    """`reward.num_actors` reward actors behind one pool; a bad reward name fails here, in the driver."""
    get_reward_fn(cfg.reward.name)
    # the actors' runtime env: an import-path reward resolves on every node, quiet libraries, the cache root
    opts = _options(None, max_concurrency=256, runtime_env=actor_runtime_env(), max_restarts=cfg.reward.max_restarts)
    names = [f"{prefix}-{i}" for i in range(cfg.reward.num_actors)]
    return RewardPool([ray.remote(RewardActor).options(name=n, **opts).remote(cfg.reward.name, dict(cfg.reward.options))
                       for n in names], names)


def create_generator_pool(cfg: Config, model_path: str, prefix: str = "generator") -> GeneratorPool:
    """`rollout.num_engines` vLLM engines (not yet started: `start_actors`), placed by
    `rollout.num_gpus_per_engine` and `rollout.resources`."""
    r = cfg.rollout
    handles = []
    for i in range(r.num_engines):
        opts = _options(f"{prefix}-{i}", r.resources, num_gpus=r.num_gpus_per_engine, max_concurrency=1000,
                        runtime_env=actor_runtime_env(), max_restarts=r.max_restarts)
        handles.append(ray.remote(GeneratorActor).options(**opts).remote(
            model_path, i, dtype=cfg.model.dtype, gpu_memory_utilization=r.gpu_memory_utilization,
            kv_cache_gib=r.kv_cache_gib, enforce_eager=r.enforce_eager, max_model_len=r.max_model_len,
            on_weight_update=r.on_weight_update, seed=cfg.trainer.seed, vision=cfg.model.vision,
            tensor_parallel_size=r.tensor_parallel_size))
    return GeneratorPool(handles, [f"{prefix}-{i}" for i in range(r.num_engines)])


def create_environment_actors(cfg: Config, model_path: str, generators: Any, rewards: RewardPool, queue: Any,
                              prefix: str = "env") -> list[Any]:
    """`env.num_actors` environment actors, placed by `env.resources`; they put finished groups into
    `queue` (an actor name, or None: eval, which takes them back instead). Peers are passed by name, never
    as handles: a restarted actor's constructor looks them up again."""
    opts = _options(None, cfg.env.resources, max_concurrency=100000, runtime_env=actor_runtime_env(),
                    max_restarts=cfg.env.max_restarts)
    return [ray.remote(EnvironmentActor).options(name=f"{prefix}-{i}", **opts).remote(
        cfg, model_path, generators, rewards, queue, i) for i in range(cfg.env.num_actors)]


@dataclass
class ActorGroups:
    """Every actor of a run by role: what `start_actors` and `stop_actors` take, and the names crash
    reports and the placement file use."""

    rewards: RewardPool
    generators: Any  # a GeneratorPool, or a stand-in with its interface that is no actor (a bench's)
    envs: list[Any]
    queue: Any = None
    learner: Any = None
    env_prefix: str = "env"

    @property
    def engines(self) -> list[Any]:
        """The engines' actor handles (none for a stand-in generator)."""
        return list(getattr(self.generators, "handles", []))

    def named(self) -> dict[str, Any]:
        """Every actor handle by name, in start order: replay-queue, reward-i, generator-i, env-i, learner."""
        out = {"replay-queue": self.queue} if self.queue is not None else {}
        out.update({f"reward-{i}": h for i, h in enumerate(self.rewards.handles)})
        out.update({f"generator-{i}": h for i, h in enumerate(self.engines)})
        out.update({f"{self.env_prefix}-{i}": h for i, h in enumerate(self.envs)})
        if self.learner is not None:
            out["learner"] = self.learner
        return out

    def restartable(self, name: str) -> bool:
        """Actors Ray restarts (environment, reward, generator): a group that lost one is re-run."""
        return name.startswith((f"{self.env_prefix}-", "reward-", "generator-"))

    def name_of(self, actor_id: str) -> str:
        """The name of the actor with this id (hex), for crash reports."""
        # Ray's handles expose their id only as `_actor_id`
        return next((n for n, h in self.named().items() if h._actor_id.hex() == actor_id), "an actor")


def create_rollout_actors(cfg: Config, model_path: str, queue: Any = None, env_prefix: str = "env",
                          generators: Any = None, queue_name: str | None = None) -> ActorGroups:
    """The rollout side that training, eval and the benches share: the reward pool, the generator pool
    (or `generators`, any object with its interface) and the environment actors, which put groups into
    `queue` (None for eval)."""
    rewards = create_reward_pool(cfg)
    if generators is None:
        generators = create_generator_pool(cfg, model_path)
    envs = create_environment_actors(cfg, model_path, generators, rewards, queue_name or queue, env_prefix)
    return ActorGroups(rewards, generators, envs, queue=queue, env_prefix=env_prefix)


def create_actors(cfg: Config, model_path: str, *, max_staleness: int | None = None,
                  learner_steps: int | None = None, env_prefix: str = "env") -> ActorGroups:
    """Every actor of a run, in start order: the replay queue (`trainer.queue_capacity` groups, when
    `max_staleness` is given), the rollout side, and the learner (when `learner_steps` is given).
    Training gives both; eval neither (its groups come back to the driver)."""
    queue = None if max_staleness is None else create_replay_queue(cfg.trainer.queue_capacity, max_staleness)
    try:
        queue_name = None if queue is None else REPLAY_QUEUE
        groups = create_rollout_actors(cfg, model_path, queue, env_prefix, queue_name=queue_name)
    except BaseException:  # a bad reward name: no actor left behind
        if queue is not None:
            ray.kill(queue)
        raise
    if learner_steps is not None:
        groups.learner = create_learner(cfg, model_path, learner_steps)
    return groups


async def start_actors(groups: ActorGroups) -> None:
    """Start the engines and wait until every actor is constructed (a failed constructor raises here)."""
    # the learner's ranks are placed, joined and built while the engines start (both mostly one core each)
    learner = [groups.learner.setup.remote()] if groups.learner is not None else []
    await asyncio.gather(*[h.start.remote() for h in groups.engines], *learner)
    await asyncio.gather(*[h.__ray_ready__.remote() for h in groups.named().values()])


async def stop_actors(groups: ActorGroups) -> None:
    """Stop the engines cleanly, then kill every actor, and the node limiters (agentrl/web/http.py).

    A limiter is a named actor of this job's Ray namespace that a tool's backend creates on first use,
    inside one of the run's actors. Ray destroys it with that actor (its owner), but the run stops it
    itself, whichever actor created it, so none outlives the run on a cluster that does."""
    try:  # engines first: their vLLM core processes exit with them
        await asyncio.wait_for(asyncio.gather(*[h.shutdown.remote() for h in groups.engines],
                                              return_exceptions=True), 30)
    except TimeoutError:
        pass
    if groups.learner is not None:  # its ranks and their placement (they would die with it, but later)
        try:
            await asyncio.wait_for(groups.learner.shutdown.remote(), 30)
        except Exception:  # a dead learner took its ranks with it
            pass
    limiters = [n for n in ray.util.list_named_actors() if n.startswith(NODE_LIMITER_PREFIX)]
    for h in groups.named().values():
        _kill(h)
    for name in limiters:
        try:
            _kill(ray.get_actor(name))
        except ValueError:  # already gone with its owner
            pass


def _kill(handle: Any) -> None:
    try:
        ray.kill(handle)
    except Exception:  # already dead: stopping is best effort
        pass


async def guarded(awaitable: Awaitable[T], groups: ActorGroups | None = None) -> T:
    """Await a Ray call. An actor crash becomes ActorFailure naming the actor (by `groups`), a failed actor
    task ActorFailure naming the task, both with the remote traceback (secrets redacted); a user error
    raised inside an actor's task (a bad setting found at run time) comes out as itself."""
    try:
        return await awaitable
    except ray.exceptions.RayActorError as e:
        actor_id = getattr(e, "actor_id", "") or ""
        name = groups.name_of(actor_id) if groups is not None and actor_id else "an actor"
        who = name if name == "an actor" else f"actor '{name}'"
        raise ActorFailure(f"{who} died. Traceback (remote):\n{redact(str(e))}") from None
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, (UserError, ActorFailure)):  # a user error, or a rank the learner names
            raise e.cause from None
        # a RayTaskError made an instance of its cause's class forwards missing attributes to the cause
        raise ActorFailure(
            f"actor task '{getattr(e, 'function_name', '?')}' failed. Traceback (remote):\n{redact(str(e))}") from None


def check_plugins(cfg: Config) -> None:
    """Resolve the configured tools, reward and data source now, so a bad name, option or file fails in
    one line (ConfigError, DataError) before any actor starts."""
    try:
        check_reward_options(get_reward_fn(cfg.reward.name), cfg.reward.options)
        for spec in cfg.env.tools:
            load_tool(spec, cfg).check()  # e.g. a missing corpus or image index, naming its key
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cache = open_tool_cache(cfg.tools.cache)  # a corrupt cache file fails now, naming it
    if cache is not None:
        cache.close()
    if cfg.data.source not in SYNTHETIC_SOURCES:
        # the first usable row, before any actor starts: a wrong file or schema fails here, in one line
        next(iter(PromptStream(cfg.data.source, shuffle=False, on_bad_row=cfg.data.on_bad_row)))
