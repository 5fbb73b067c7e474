"""Built-in method configs; importing this package registers them."""

from .observe import ObserveConfig

__all__ = ["ObserveConfig"]
