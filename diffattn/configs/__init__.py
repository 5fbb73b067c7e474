"""Built-in method configs: importing this package imports every module in it, which registers their methods.

A new method's config goes in a module here (`@register_method` on the class); nothing else lists it: this package,
`diffattn.<Name>Config`, the command-line flags, the app, the demo and `diffattn info` all read the registry.
"""

import importlib
import pkgutil

from ..registry import registered


def _import_modules() -> None:
    """Import every module of this package, sub-packages included (each registers the methods it defines)."""
    for module in pkgutil.walk_packages(__path__, f"{__name__}."):
        importlib.import_module(module.name)


_import_modules()
_CONFIGS = {cls.__name__: cls for cls in registered().values() if cls.__module__.startswith(f"{__name__}.")}
globals().update(_CONFIGS)
__all__ = sorted(_CONFIGS)
