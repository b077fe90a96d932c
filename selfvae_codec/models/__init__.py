"""The selfVAE family: networks, distributions, transforms (no entropy coding here)."""

from .config import ModelConfig, default_config
from .selfvae import SelfVAE, parameter_count

__all__ = ["ModelConfig", "SelfVAE", "default_config", "parameter_count"]
