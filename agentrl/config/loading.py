"""Loading a run configuration: YAML files in configs/, dotted command-line overrides, value checks.

An unknown key fails with one line naming the key and the closest valid one; bad values fail before any
actor starts.
"""

from __future__ import annotations

import difflib
import os
from contextvars import ContextVar
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agentrl.config.schema import BUILT_MODELS, SYNTHETIC_SOURCES, Config, ToolsConfig
from agentrl.config.yaml_input import YamlRefused, YamlSyntaxError, parse_yaml, read_yaml_file
from agentrl.console import LOG_LEVELS
from agentrl.errors import UserError
from agentrl.grammar import check_workflow


class ConfigError(UserError):
    """A one-line, user-facing configuration error."""


_OPEN_DICTS = {"env.tool_tags", "env.resources", "rollout.resources", "learner.resources", "reward.options",
               "tools.options"}


def _valid_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        keys.append(path)
        if isinstance(v, DictConfig) and path not in _OPEN_DICTS:
            keys.extend(_valid_keys(v, path + "."))
    return keys


def _sections(node: Any, prefix: str = "") -> set[str]:
    """The dotted keys whose value is a section (a mapping of keys)."""
    out = set()
    for k, v in node.items():
        if isinstance(v, DictConfig):
            out |= {f"{prefix}{k}", *_sections(v, f"{prefix}{k}.")}
    return out


def _check_keys(user: Any, valid: set[str], prefix: str = "", sections: frozenset[str] = frozenset()) -> None:
    for k, v in user.items():
        path = f"{prefix}{k}"
        if path not in valid:
            close = difflib.get_close_matches(path, sorted(valid), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{path}'{hint}")
        if path in sections and not isinstance(v, (dict, DictConfig)):
            raise ConfigError(f"bad value for '{path}': a section of keys, not {'null' if v is None else repr(v)}")
        if isinstance(v, (dict, DictConfig)) and path not in _OPEN_DICTS:
            _check_keys(v, valid, path + ".", sections)


MAX_OVERRIDE_CHARS = 65536


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, value = item.split("=", 1)
    if len(value) > MAX_OVERRIDE_CHARS:
        raise ConfigError(f"override '{key}': {len(value)} characters, over the {MAX_OVERRIDE_CHARS} allowed")
    try:  # YAML values, as in the files: lists, maps, numbers, booleans
        parsed = parse_yaml(value) if value else ""
    except YamlSyntaxError:
        parsed = value
    except YamlRefused as e:
        raise ConfigError(f"override '{key}': {e}") from None
    return key.strip(), parsed


def _omegaconf_error(where: str, e: Exception) -> ConfigError:
    """An OmegaConf error (a wrong type, a section that is not a mapping, an interpolation) as one line."""
    key = getattr(e, "full_key", "") or ""
    why = (str(e).splitlines() or [type(e).__name__])[0]
    return ConfigError(f"{where}: bad value for '{key}': {why}" if key else f"{where}: {why}")


def load_config(path: str | None = None, overrides: list[str] | None = None, check: bool = True) -> Config:
    """Load a YAML config, apply dotted overrides (`learner.lr=1e-5`), validate (unless `check` is False:
    then `config_problems` lists what is wrong), return the result. Unknown keys and values of the wrong
    type always fail here."""
    schema = OmegaConf.structured(Config)
    valid, sections = set(_valid_keys(schema)), frozenset(_sections(schema))
    merged = schema
    if path:
        if not os.path.exists(path):
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            data = read_yaml_file(path)
        except YamlRefused as e:
            raise ConfigError(f"{path}: {e}") from None
        try:
            _check_keys(data, valid, sections=sections)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        except (OmegaConfBaseException, RecursionError) as e:
            raise _omegaconf_error(path, e) from None
    for item in overrides or []:
        key, value = _parse_override(item)
        _check_keys(_nest(key, value), valid, sections=sections)
        try:
            OmegaConf.update(merged, key, value, merge=True)
        except Exception as e:  # omegaconf type errors: report the key, one line
            raise ConfigError(f"bad value for '{key}': {value!r} ({type(e).__name__})") from None
    try:  # interpolations (${...}) resolve here
        cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except (OmegaConfBaseException, RecursionError) as e:
        raise _omegaconf_error(path or "overrides", e) from None
    if check:
        validate(cfg)
    return cfg


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


# Set while `config_problems` runs: the checks then collect every problem instead of raising the first.
_COLLECTED: ContextVar[list[str] | None] = ContextVar("config_problems", default=None)


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        problem = f"bad value for '{key}': {msg}"
        collected = _COLLECTED.get()
        if collected is None:
            raise ConfigError(problem)
        collected.append(problem)


def validate(cfg: Config) -> None:
    """Value checks that must fail before any actor starts (ConfigError naming the key)."""
    _validate_trainer(cfg)
    _validate_rollout_and_learner(cfg)
    _validate_tools(cfg.tools)
    _validate_model_and_data(cfg)
    _validate_reliability(cfg)


def config_problems(cfg: Config) -> list[str]:
    """Every value problem of `cfg`, one line each (what `validate` raises is the first of them)."""
    token = _COLLECTED.set([])
    try:
        validate(cfg)
        return list(_COLLECTED.get() or [])
    finally:
        _COLLECTED.reset(token)


def _validate_trainer(cfg: Config) -> None:
    t, e = cfg.trainer, cfg.env
    _require(t.mode in ("async", "sync"), "trainer.mode", f"'{t.mode}' is not 'async' or 'sync'")
    _require(t.total_steps > 0, "trainer.total_steps", "must be > 0")
    _require(t.batch_groups > 0, "trainer.batch_groups", "batch size must be > 0")
    _require(t.max_staleness >= 0, "trainer.max_staleness", "must be >= 0")
    _require(t.spare_groups >= 0, "trainer.spare_groups", "must be >= 0")
    _require(t.queue_capacity >= t.batch_groups, "trainer.queue_capacity",
             "must hold at least one batch (>= trainer.batch_groups)")
    _require(t.eval_every >= 0, "trainer.eval_every", "must be >= 0")
    _require(t.log_level in LOG_LEVELS, "trainer.log_level", f"'{t.log_level}' is not {' or '.join(LOG_LEVELS)}")
    name = str(t.run_name)  # the run's folder inside trainer.output_dir, never outside it
    _require(name not in ("", ".", "..") and "/" not in name and os.sep not in name and "\0" not in name,
             "trainer.run_name", f"{name!r} is not a single folder name")
    if t.eval_every:
        _require(os.path.isfile(t.eval_data), "trainer.eval_data", f"'{t.eval_data}' is not a file")
        try:
            check_workflow(t.eval_workflow, e.protocol, e.tools)
        except ValueError as err:
            _require(False, "trainer.eval_workflow", str(err))
        _require(t.eval_samples > 0, "trainer.eval_samples", "must be > 0")


def _validate_reliability(cfg: Config) -> None:
    """Checkpoints, resume, shutdown, restarts and injected faults."""
    t, f = cfg.trainer, cfg.faults
    _require(t.save_every >= 0, "trainer.save_every", "must be >= 0 (0: only at the end)")
    _require(t.keep_checkpoints >= 1, "trainer.keep_checkpoints", "must be >= 1")
    _require(t.resume in ("never", "auto"), "trainer.resume", f"'{t.resume}' is not 'never' or 'auto'")
    _require(t.stop_timeout_s >= 0, "trainer.stop_timeout_s", "must be >= 0")
    _require(t.max_group_retries >= 0, "trainer.max_group_retries", "must be >= 0")
    _require(t.max_failed_groups_in_a_row >= 0, "trainer.max_failed_groups_in_a_row", "must be >= 0 (0: no limit)")
    for key, value in (("env.max_restarts", cfg.env.max_restarts), ("reward.max_restarts", cfg.reward.max_restarts),
                       ("rollout.max_restarts", cfg.rollout.max_restarts)):
        _require(value >= -1, key, "must be >= 0, or -1 (no limit)")
    rates = {"faults.tool_error_rate": f.tool_error_rate, "faults.tool_timeout_rate": f.tool_timeout_rate,
             "faults.tool_hang_rate": f.tool_hang_rate}
    for key, value in rates.items():
        _require(0.0 <= value <= 1.0, key, "must be in [0, 1]")
    _require(sum(rates.values()) <= 1.0, "faults.tool_error_rate", "the three tool fault rates add up to more than 1")
    for key, value in (("faults.kill_env_every_s", f.kill_env_every_s), ("faults.kill_reward_every_s",
                       f.kill_reward_every_s), ("faults.kill_generator_every_s", f.kill_generator_every_s),
                       ("faults.kill_learner_rank_at_step", f.kill_learner_rank_at_step),
                       ("faults.kill_driver_at_step", f.kill_driver_at_step)):
        _require(value >= 0, key, "must be >= 0 (0: never)")
    if cfg.learner.num_ranks > 0:
        _require(0 <= f.kill_learner_rank < cfg.learner.num_ranks, "faults.kill_learner_rank",
                 f"must name a rank of learner.num_ranks={cfg.learner.num_ranks}")


def _validate_rollout_and_learner(cfg: Config) -> None:
    r, lr, e = cfg.rollout, cfg.learner, cfg.env
    _require(r.n > 1, "rollout.n", "GRPO needs at least 2 samples per prompt (with 1, every advantage would be 0)")
    # the learner computes full-distribution log-probs; a filtered sampler would bias the importance weights
    _require(r.top_p == 1.0, "rollout.top_p", "must be 1.0: the learner's log-probs are of the unfiltered "
             "distribution")
    _require(r.top_k == -1, "rollout.top_k", "must be -1 (off): the learner's log-probs are of the "
             "unfiltered distribution")
    _require(r.num_engines > 0, "rollout.num_engines", "must be > 0")
    _require(0 < r.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", "must be in (0, 1]")
    _require(r.on_weight_update in ("pause_resume", "continue"), "rollout.on_weight_update",
             "must be 'pause_resume' or 'continue'")
    _require(r.temperature > 0, "rollout.temperature", "must be > 0")
    _require(lr.lr > 0, "learner.lr", "must be > 0")
    _require(lr.zero_stage in (0, 1, 2, 3), "learner.zero_stage", "must be 0, 1, 2 or 3")
    _require(lr.num_ranks > 0, "learner.num_ranks", "must be > 0")
    _require(lr.ranks_per_node >= 0 and (lr.ranks_per_node == 0 or lr.num_ranks % lr.ranks_per_node == 0),
             "learner.ranks_per_node", "must be 0 (packed) or divide learner.num_ranks")
    _require(lr.offload in ("none", "optimizer", "all"), "learner.offload", "must be none, optimizer or all")
    _require(lr.offload == "none" or lr.zero_stage > 0, "learner.offload", "needs learner.zero_stage >= 1")
    _require(lr.offload != "all" or lr.zero_stage == 3, "learner.offload",
             "'all' (parameters too) needs learner.zero_stage=3")
    _require(r.tensor_parallel_size > 0, "rollout.tensor_parallel_size", "must be > 0")
    _require(r.weight_sync in ("auto", "object_store", "collective"), "rollout.weight_sync",
             "must be auto, object_store or collective")
    _require(r.weight_sync != "collective" or r.tensor_parallel_size == 1, "rollout.weight_sync",
             "collective needs rollout.tensor_parallel_size=1 (an engine over several GPUs takes object_store)")
    _require(r.weight_sync != "collective" or (lr.num_gpus > 0) == (r.num_gpus_per_engine > 0),
             "rollout.weight_sync", "collective needs the learner and the engines on the same kind of device "
             "(learner.num_gpus and rollout.num_gpus_per_engine both 0, or both > 0)")
    _require(r.weight_bucket_mb > 0, "rollout.weight_bucket_mb", "must be > 0")
    _require(0 <= lr.clip_low < 1 and lr.clip_high >= 0, "learner.clip_low", "clip range is invalid")
    _require(lr.mini_batches > 0, "learner.mini_batches", "must be > 0")
    _require(lr.epochs > 0, "learner.epochs", "must be > 0")
    _require(lr.importance_mode in ("truncate", "mask"), "learner.importance_mode", "must be 'truncate' or 'mask'")
    _require(lr.lr_schedule in ("sigmoid_decay", "warmup_sigmoid", "constant"), "learner.lr_schedule",
             "must be sigmoid_decay, warmup_sigmoid or constant")
    _require(lr.warmup_steps >= 0, "learner.warmup_steps", "must be >= 0")
    _require(lr.cpu_threads >= 0, "learner.cpu_threads", "must be >= 0")
    _require(cfg.sft.epochs > 0, "sft.epochs", "must be > 0")
    _require(cfg.sft.lr > 0, "sft.lr", "must be > 0")
    _require(cfg.sft.batch_size > 0, "sft.batch_size", "must be > 0")
    _require(not cfg.sft.data or os.path.isfile(cfg.sft.data), "sft.data", f"'{cfg.sft.data}' is not a file")
    _require(e.max_turns > 0, "env.max_turns", "must be > 0")
    _require(e.max_tokens_per_turn > 0, "env.max_tokens_per_turn", "must be > 0")
    _require(e.max_total_tokens >= e.max_tokens_per_turn, "env.max_total_tokens",
             "must be >= env.max_tokens_per_turn")
    _require(e.num_actors > 0, "env.num_actors", "must be > 0")
    _require(e.on_invalid_action in ("observe", "end"), "env.on_invalid_action",
             "must be 'observe' or 'end'")
    _require(cfg.reward.num_actors > 0, "reward.num_actors", "must be > 0")


def _validate_tools(tl: ToolsConfig) -> None:
    _require(tl.cache.mode in ("on", "off", "replay_only"), "tools.cache.mode", "must be on, off or replay_only")
    _require(tl.fetch.on_oversize in ("refuse", "truncate"), "tools.fetch.on_oversize", "must be refuse or truncate")
    _require(tl.fetch.max_bytes > 0, "tools.fetch.max_bytes", "must be > 0")
    for name in ("image_search", "text_search"):
        http = getattr(tl, name).http
        _require(http.max_concurrency > 0, f"tools.{name}.http.max_concurrency", "must be > 0")
        _require(http.rate_per_s >= 0, f"tools.{name}.http.rate_per_s", "must be >= 0 (0: no limit)")
        _require(http.max_response_bytes > 0, f"tools.{name}.http.max_response_bytes", "must be > 0")
    _require(tl.image_search.backend in ("serpapi_lens", "cache", "local"), "tools.image_search.backend",
             f"'{tl.image_search.backend}' is not serpapi_lens, cache or local")
    _require(tl.text_search.backend in ("serpapi", "searxng", "retriever", "local"), "tools.text_search.backend",
             f"'{tl.text_search.backend}' is not serpapi, searxng, retriever or local")
    _require(tl.text_search.reader in ("jina", "direct", "none"), "tools.text_search.reader",
             "must be jina, direct or none")
    _require(tl.text_search.summariser in ("openai", "none"), "tools.text_search.summariser",
             "must be openai or none")
    _require(tl.text_search.summary_max_tokens > 0, "tools.text_search.summary_max_tokens", "must be > 0")


def _validate_model_and_data(cfg: Config) -> None:
    if cfg.model.path not in BUILT_MODELS:
        _require(os.path.exists(cfg.model.path), "model.path", f"'{cfg.model.path}' does not exist")
    v = cfg.model.vision
    _require(0 < v.input_min_pixels <= v.input_max_pixels, "model.vision.input_min_pixels",
             "must be > 0 and <= model.vision.input_max_pixels")
    _require(0 < v.thumbnail_min_pixels <= v.thumbnail_max_pixels, "model.vision.thumbnail_min_pixels",
             "must be > 0 and <= model.vision.thumbnail_max_pixels")
    _require(v.max_images_per_trajectory > 0, "model.vision.max_images_per_trajectory", "must be > 0")
    _require(cfg.data.on_bad_row in ("fail", "skip"), "data.on_bad_row", "must be fail or skip")
    if cfg.data.source not in SYNTHETIC_SOURCES:
        _require(os.path.exists(cfg.data.source), "data.source", f"'{cfg.data.source}' does not exist")


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
