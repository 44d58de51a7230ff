"""Run configuration: the schema (`schema`: one dataclass per section) and its loading and checks
(`loading`). Imports no runtime code: every actor and entry point depends on it, never the reverse."""

from agentrl.config.loading import ConfigError, config_problems, load_config, to_yaml, validate
from agentrl.config.schema import (
    SYNTHETIC_SOURCES,
    BackendConfig,
    CacheConfig,
    Config,
    DataConfig,
    EnvConfig,
    FaultsConfig,
    FetchConfig,
    ImageSearchConfig,
    LearnerConfig,
    ModelConfig,
    RewardConfig,
    RolloutConfig,
    SftConfig,
    TextSearchConfig,
    ToolsConfig,
    TrainerConfig,
    VisionConfig,
    WandbConfig,
)

__all__ = ["SYNTHETIC_SOURCES", "BackendConfig", "CacheConfig", "Config", "ConfigError", "DataConfig", "EnvConfig",
           "FaultsConfig", "FetchConfig", "ImageSearchConfig", "LearnerConfig", "ModelConfig", "RewardConfig",
           "RolloutConfig", "SftConfig", "TextSearchConfig", "ToolsConfig", "TrainerConfig", "VisionConfig",
           "WandbConfig",
           "config_problems", "load_config", "to_yaml", "validate"]
