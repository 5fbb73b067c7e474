"""The method registry: method name -> config class, with one-line descriptions."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from .config import MethodConfig
from .errors import ConfigError, UnknownMethodError
from .method import CATEGORIES

__all__ = ["register_method", "registered", "methods", "get_method", "resolve_configs"]

_REGISTRY: dict[str, type[MethodConfig]] = {}


def register_method(config_cls: type[MethodConfig]) -> type[MethodConfig]:
    """Class decorator adding a config class to the registry under its `name`."""
    if not config_cls.name:
        raise ValueError(f"{config_cls.__name__} has no method name")
    if config_cls.category not in CATEGORIES:
        raise ValueError(
            f"{config_cls.__name__}.category is {config_cls.category!r}; set it to one of {', '.join(CATEGORIES)}"
        )
    existing = _REGISTRY.get(config_cls.name)
    if existing is not None and existing is not config_cls:
        raise ValueError(f"method name {config_cls.name!r} is taken by {existing.__name__}")
    _REGISTRY[config_cls.name] = config_cls
    return config_cls


def registered() -> dict[str, type[MethodConfig]]:
    """The methods registered so far, name -> config class, without importing the built-in ones (`methods()` does)."""
    return dict(_REGISTRY)


def methods() -> dict[str, type[MethodConfig]]:
    """All registered methods, name -> config class (each class has a one-line `description`)."""
    importlib.import_module(f"{__package__}.configs")  # registers the built-in methods (not `from . import`: that
    # would ask the package's lazy `__getattr__`, whose table is read from here)

    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[MethodConfig]:
    """The config class of a method name; an unknown name raises with the closest names suggested."""
    registry = methods()
    key = name.strip().lower().replace("_", "-")
    if key in registry:
        return registry[key]
    close = difflib.get_close_matches(key, registry, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownMethodError(f"unknown method {name!r}.{hint} Available: {', '.join(registry)}")


def resolve_configs(items: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[MethodConfig]:
    """Turn `apply`'s positional configs/names and keyword settings into config instances.

    Keyword settings go to the single method given by name (`apply(pipe, "sparge", topk=0.5)`).
    """
    if not items:
        raise ConfigError("no method given: pass a config (e.g. diffattn.ObserveConfig()) or a method name")
    named = [i for i, item in enumerate(items) if isinstance(item, str)]
    if kwargs and len(named) != 1:
        raise ConfigError(
            "keyword settings need exactly one method given by name, e.g. apply(pipe, 'sparge', topk=0.5); "
            "with several methods pass config objects instead"
        )
    configs: list[MethodConfig] = []
    for item in items:
        if isinstance(item, MethodConfig):
            configs.append(item)
        elif isinstance(item, str):
            configs.append(get_method(item).from_dict(kwargs))
        elif isinstance(item, Mapping):
            configs.append(get_method(str(item.get("method", ""))).from_dict(item))
        else:
            raise ConfigError(f"expected a method config, a method name or a settings dict; got {type(item).__name__}")
    return configs
