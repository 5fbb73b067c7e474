"""diffattn: training-free attention extensions for Hugging Face diffusers.

    import diffattn
    handle = diffattn.apply(pipe, diffattn.RadialConfig(dense_steps=12))
    video = pipe(prompt).frames[0]
    print(handle.stats.format())
    handle.remove()

Names are loaded on first use, so `import diffattn` (and `import diffattn.kernels` on a machine without
diffusers) stays cheap.
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
    # configs
    "MethodConfig": "diffattn.config",
    "AttentionConfig": "diffattn.config",
    "Phase": "diffattn.config",
    "ObserveConfig": "diffattn.configs",
    "SpargeConfig": "diffattn.configs",
    "RadialConfig": "diffattn.configs",
    "PSAConfig": "diffattn.configs",
    "LiteAttentionConfig": "diffattn.configs",
    "PABConfig": "diffattn.configs",
    "tune_sparge": "diffattn.processors.sparse.sparge_tuning",
    "SpargeTuning": "diffattn.processors.sparse.sparge_tuning",
    "FreeSwimConfig": "diffattn.configs",
    "FreeSwimPipeline": "diffattn.pipelines.freeswim",
    "FreeInitConfig": "diffattn.configs",
    "FreeNoiseConfig": "diffattn.configs",
    "InitNOConfig": "diffattn.configs",
    "InitNOPipeline": "diffattn.pipelines.initno",
    "FateZeroConfig": "diffattn.configs",
    "RealCraftConfig": "diffattn.configs",
    "FrescoConfig": "diffattn.configs",
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

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
