"""diffattn.processors: the attention-method contract and every method's implementation.

    from diffattn.processors import AttentionMethod, AttentionCall, SpargeMethod

The contract (`AttentionMethod`, `AttentionCall`, `AttentionInstaller`, `DiffAttnProcessor`, `TokenLayout`) lives
in `base.py`; each registered method's implementation class is exported under its own name, found from the method
registry, and imported on first use.
"""

from __future__ import annotations

import functools

from diffattn.lazy import lazy_exports

_CONTRACT: dict[str, str] = {
    name: "diffattn.processors.base"
    for name in ("AttentionCall", "AttentionInstaller", "AttentionMethod", "DiffAttnProcessor", "TokenLayout")
}


@functools.cache
def _exports() -> dict[str, str]:
    """The contract plus the implementation class of every registered method that lives in this package."""
    from diffattn.registry import methods

    found = dict(_CONTRACT)
    for config in methods().values():
        module, _, name = config.implementation.partition(":")
        if module.startswith(f"{__name__}."):
            found[name] = module
    return found


def __getattr__(name: str):
    if name == "__all__":
        return sorted(_exports())
    return _lookup(name)


_lookup, __dir__ = lazy_exports(__name__, _exports)
