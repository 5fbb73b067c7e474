"""diffattn.kernels: block-sparse attention (Triton, FlexAttention, PyTorch reference) and plan builders.

`block_sparse_attention` runs any `diffattn.plan.BlockPlan` (pooled levels, token masks, SpargeAttn P.V
skipping, LiteAttention marks, LSE); `sparge_plan` predicts a plan on the device; `pool_kv` builds PSA's
pooled K/V and `block_importance` its plan's input; `available_backends` says what runs here. See `api.py` for
the exact semantics.
"""

if __name__ == "diffattn.kernels":
    from .api import (
        PooledKV,
        SparseAttentionOutput,
        available_backends,
        block_sparse_attention,
        pool_kv,
    )
    from .checks import AttentionInputError
    from .psa import block_importance
    from .sparge import sparge_plan

    __all__ = [
        "AttentionInputError",
        "PooledKV",
        "SparseAttentionOutput",
        "available_backends",
        "block_importance",
        "block_sparse_attention",
        "pool_kv",
        "sparge_plan",
    ]
else:
    # This folder installs as `diffattn.kernels`. With a source checkout's root on sys.path (`python -m pytest`,
    # `python -c`, a notebook in the checkout) a plain `import kernels` finds it before Hugging Face's `kernels`
    # package, which transformers, diffusers and peft import. Hand the name over to the installed package (Python's
    # import returns whatever `sys.modules[name]` holds once this code has run); never load diffattn's kernel
    # modules here, whose torch custom ops must be registered only once.
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _checkout_root = os.path.realpath(os.path.dirname(os.path.dirname(__file__)))
    _elsewhere = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != _checkout_root]
    _spec = importlib.machinery.PathFinder.find_spec(__name__, _elsewhere)
    if _spec is None or _spec.loader is None:
        # None installed: look like the empty namespace package Python makes of a folder without `__init__.py`
        # (no `__file__`, no version, nothing inside), which is how transformers' availability probe, importing
        # the name when no distribution metadata exists, recognises a folder that merely shadows a package.
        # Any attribute read raises ModuleNotFoundError, so `from kernels import X` fails as for an absent package.
        import types

        class _Absent(types.ModuleType):
            def __getattr__(self, attribute: str):
                if attribute.startswith("__"):
                    raise AttributeError(attribute)
                raise ModuleNotFoundError(
                    f"No module named {self.__name__!r} (Hugging Face's kernels package is not installed; the "
                    f"checkout's kernels/ folder is diffattn.kernels)", name=self.__name__,
                )

        _absent = _Absent(__name__)
        _absent.__spec__ = importlib.machinery.ModuleSpec(__name__, None, is_package=True)
        _absent.__path__ = _absent.__spec__.submodule_search_locations = []
        sys.modules[__name__] = _absent
    else:
        _installed = importlib.util.module_from_spec(_spec)
        sys.modules[__name__] = _installed
        try:
            _spec.loader.exec_module(_installed)
        except BaseException:
            del sys.modules[__name__]
            raise
