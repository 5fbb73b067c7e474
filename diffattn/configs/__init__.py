"""Built-in method configs; importing this package registers them."""

from .freeswim import FreeSwimConfig
from .observe import ObserveConfig

__all__ = ["FreeSwimConfig", "ObserveConfig"]
