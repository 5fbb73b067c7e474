"""Built-in method configs; importing this package registers them."""

from .freeswim import FreeSwimConfig
from .noise import FreeInitConfig, FreeNoiseConfig, InitNOConfig
from .observe import ObserveConfig

__all__ = ["FreeSwimConfig", "ObserveConfig", "FreeInitConfig", "FreeNoiseConfig", "InitNOConfig"]
