"""The config file: models, loading and validation."""

from civicsync.config.loader import LoadedConfig, default_config_path, load_config, reference_config_path
from civicsync.config.models import Config, Flow

__all__ = ["Config", "Flow", "LoadedConfig", "default_config_path", "load_config", "reference_config_path"]
