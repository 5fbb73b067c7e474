"""Composition with diffusers' own caches (`model.enable_cache(FirstBlockCacheConfig(...))` and the others).

diffusers' caches and diffattn's methods are both hooks on the same denoiser and compose by default: the caches
skip whole blocks or replace module outputs from above, while diffattn's root hook still sees every denoiser call
(so steps and CFG branches are counted as without a cache) and its processors act on whatever attention does run.
A method whose work a cache would undo or fight names that cache's config class in its config's
`incompatible_caches`; `check_caches` refuses the pair whichever of the two was applied first: at `apply` when the
cache is already enabled, else before the first denoiser call that has both.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .config import MethodConfig
from .errors import IncompatibleMethodsError

__all__ = ["enabled_cache", "check_caches"]


def enabled_cache(model: torch.nn.Module) -> object | None:
    """The diffusers cache config enabled on `model` (`CacheMixin.enable_cache`), or `None`."""
    return getattr(model, "_cache_config", None)


def check_caches(configs: Iterable[MethodConfig], models: Iterable[torch.nn.Module]) -> None:
    """Raise `IncompatibleMethodsError` if a method in `configs` refuses the cache enabled on one of `models`."""
    for model in models:
        cache = enabled_cache(model)
        if cache is None:
            continue
        cache_name = type(cache).__name__
        for config in configs:
            if cache_name in type(config).incompatible_caches:
                raise IncompatibleMethodsError(
                    f"method {config.name!r} and diffusers' {cache_name} cannot be used together on "
                    f"{type(model).__name__} (docs/composition.md says why); call model.disable_cache() or remove "
                    f"{config.name!r} (handle.remove())"
                )
