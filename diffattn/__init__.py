"""diffattn: training-free attention extensions for Hugging Face diffusers.

    import diffattn
    handle = diffattn.apply(pipe, diffattn.RadialConfig(dense_steps=12))
    video = pipe(prompt).frames[0]
    print(handle.stats.format())
    handle.remove()

Names are loaded on first use, so `import diffattn` (and `import diffattn.kernels` on a machine without
diffusers) stays cheap. Every registered method's config class is exported under its own name
(`diffattn.SpargeConfig`), read from the registry.
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # public API
    "apply": "diffattn.api",
    "Handle": "diffattn.api",
    "handle_of": "diffattn.api",
    "methods": "diffattn.registry",
    "get_method": "diffattn.registry",
    "register_method": "diffattn.registry",
    # configs (each registered method's config class is added by `_exports`)
    "MethodConfig": "diffattn.config",
    "AttentionConfig": "diffattn.config",
    "Phase": "diffattn.config",
    "tune_sparge": "diffattn.processors.sparse.sparge_tuning",
    "SpargeTuning": "diffattn.processors.sparse.sparge_tuning",
    "FreeSwimPipeline": "diffattn.pipelines.freeswim",
    "InitNOPipeline": "diffattn.pipelines.initno",
    "FateZeroPipeline": "diffattn.pipelines.fatezero",
    "RealCraftPipeline": "diffattn.pipelines.realcraft",
    "FrescoPipeline": "diffattn.pipelines.fresco",
    # building blocks
    "BlockPlan": "diffattn.plan",
    "BoxMask": "diffattn.plan",
    "RunContext": "diffattn.context",
    "LayerInfo": "diffattn.context",
    "Grid": "diffattn.geometry",
    "TileOrder": "diffattn.geometry",
    "supported_families": "diffattn.geometry",
    # errors
    "DiffAttnError": "diffattn.errors",
    "ConfigError": "diffattn.errors",
    "UnsupportedModelError": "diffattn.errors",
    "UnknownMethodError": "diffattn.errors",
    "AlreadyAppliedError": "diffattn.errors",
    "IncompatibleMethodsError": "diffattn.errors",
    "BackendUnavailableError": "diffattn.errors",
    "PlanError": "diffattn.errors",
    "GridError": "diffattn.errors",
    "VideoReadError": "diffattn.errors",
}


def _exports() -> dict[str, str]:
    """The names above plus every registered method's config class (`diffattn.SpargeConfig`), by module; read on
    each lookup of a name not yet loaded, so a method registered later is exported too."""
    from .registry import methods

    return {**_EXPORTS, **{cls.__name__: cls.__module__ for cls in methods().values()}}


def __getattr__(name: str):
    """A public name, loaded on first use; `__all__` too, as it lists the registry's config classes."""
    if name == "__all__":
        return ["__version__", *_exports()]
    return _lookup(name)


_lookup, __dir__ = lazy_exports(__name__, _exports)
