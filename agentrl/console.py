"""What reaches the console (a leaf: imports nothing of agentrl).

`trainer.log_level=info` (the default): the progress bar and agentrl's own lines. `trainer.log_level=debug`:
also the libraries' logs: vLLM's INFO lines and its "Loading safetensors checkpoint shards" bar after every
weight update, Ray's banners, torch, transformers, DeepSpeed, wandb and Python warnings.

The level of a run: the environment variable `AGENTRL_LOG_LEVEL` when the user sets it, else the config's
`trainer.log_level` (`resolve_level`, the one rule every command applies). Before any config is read the
driver's libraries are quiet unless that variable says `debug` (`quiet_driver_libraries`).

The levers: the driver records the level (`configure_driver_logging`, in `AGENTRL_LOG_LEVEL`, which actors
inherit through `library_log_env`); actors start with the libraries' environment variables
(`library_log_env`), so their logs in Ray's session folder are short too; `ray.init` takes
`ray_init_options` (whether actors' output reaches the console at all); the engine takes
`engine_log_options`. A variable the user set in the driver's environment (say `VLLM_LOGGING_LEVEL=DEBUG`)
always wins.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

LOG_LEVELS = ("info", "debug")
LOG_LEVEL_ENV = "AGENTRL_LOG_LEVEL"

# The libraries' own switches, at their quiet settings; read when an actor's process starts.
QUIET_LIBRARY_ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # c10's warnings ("NUMA binding ...")
    "TORCH_LOGS": "-torch",  # torch's Python loggers at ERROR ("No CUDA runtime is found")
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" and "Writing model shards" bars
    "PYTHONWARNINGS": "ignore",
}
# Loggers of the libraries the driver itself imports.
DRIVER_LIBRARY_LOGGERS = ("transformers", "torch", "deepspeed", "vllm", "urllib3", "filelock")


def resolve_level(configured: str) -> str:
    """The level a run uses: `AGENTRL_LOG_LEVEL` when set, else `configured` (the config's `trainer.log_level`).

    The variable wins so that one run can be made verbose (or quiet) without editing its config; its case
    does not matter. A value that is not a level raises ValueError (one line; the command line reports it as
    a user error)."""
    level = os.environ.get(LOG_LEVEL_ENV, "").strip().lower() or configured
    if level not in LOG_LEVELS:
        raise ValueError(f"{LOG_LEVEL_ENV}: '{level}' is not one of {', '.join(LOG_LEVELS)}")
    return level


def log_level() -> str:
    """The level this process runs at: the one `configure_driver_logging` recorded (or its actor inherited)."""
    return os.environ.get(LOG_LEVEL_ENV) or "info"


def verbose() -> bool:
    """True at `debug`: the libraries speak."""
    return log_level() == "debug"


def library_log_env(level: str) -> dict[str, str]:
    """Environment variables for an actor's process (Ray `runtime_env` `env_vars`) at this level."""
    env = {LOG_LEVEL_ENV: level}
    for key, quiet in QUIET_LIBRARY_ENV.items():
        if key in os.environ:
            env[key] = os.environ[key]
        elif level != "debug":
            env[key] = quiet
    return env


def ray_init_options(level: str, log_to_driver: bool = True) -> dict[str, Any]:
    """`ray.init` keyword arguments. Unless debugging: the driver's "ray" logger (banners such as "Started a
    local Ray instance", the token-authentication notice) at ERROR, and the actors' output kept in Ray's
    session logs (/tmp/ray/session_latest/logs) instead of the console. Some libraries print before any
    logging setup can reach them (vLLM's platform checks in every engine process, DeepSpeed's op builds);
    agentrl's actors print nothing of their own, and an actor's crash still reaches the console as an
    ActorFailure with its remote traceback."""
    debug = level == "debug"
    return {"logging_level": logging.INFO if debug else logging.ERROR, "log_to_driver": log_to_driver and debug}


def engine_log_options() -> dict[str, Any]:
    """vLLM engine arguments, inside a generator actor: the weight-loading progress bar only at debug (it
    would print "Loading safetensors checkpoint shards" after every weight update)."""
    return {"use_tqdm_on_load": verbose()}


def configure_driver_logging(level: str) -> None:
    """Apply `level` to this (the driver's) process and record it for the actors it starts."""
    os.environ[LOG_LEVEL_ENV] = level
    quiet_driver_libraries(level)


def quiet_driver_libraries(level: str) -> None:
    """The loggers of the libraries the driver imports at `level` (ERROR unless debugging); records nothing."""
    for name in DRIVER_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "debug" else logging.ERROR)
    if level != "debug":  # transformers' bars when the driver builds a tiny model or saves a checkpoint
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # read at import: tell an imported one directly
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
