"""Built-in method configs; importing this package registers them."""

from .editing import FateZeroConfig, FrescoConfig, RealCraftConfig
from .freeswim import FreeSwimConfig
from .noise import FreeInitConfig, FreeNoiseConfig, InitNOConfig
from .observe import ObserveConfig
from .sparse import LiteAttentionConfig, PABConfig, PSAConfig, RadialConfig, SpargeConfig

__all__ = ["FateZeroConfig", "RealCraftConfig", "FrescoConfig", "FreeSwimConfig", "ObserveConfig", "FreeInitConfig", "FreeNoiseConfig", "InitNOConfig", "SpargeConfig", "RadialConfig", "PSAConfig", "LiteAttentionConfig", "PABConfig"]
