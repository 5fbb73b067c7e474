"""diffattn.pipelines: ready diffusers pipelines built on diffattn's methods.

    from diffattn.pipelines import FreeSwimPipeline, FateZeroPipeline

Each name is imported on first use, like diffusers' own `pipelines` package.
"""

from diffattn.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "FreeSwimPipeline": "diffattn.pipelines.freeswim",
    "FreeSwimPipelineOutput": "diffattn.pipelines.freeswim",
    "InitNOPipeline": "diffattn.pipelines.initno",
    "InitNOPipelineOutput": "diffattn.pipelines.initno",
    "FateZeroPipeline": "diffattn.pipelines.fatezero",
    "RealCraftPipeline": "diffattn.pipelines.realcraft",
    "FrescoPipeline": "diffattn.pipelines.fresco",
    "VideoEditPipelineOutput": "diffattn.pipelines.inversion",
    "EditSpec": "diffattn.pipelines.edit_job",
    "EditResult": "diffattn.pipelines.edit_job",
    "edit_video": "diffattn.pipelines.edit_job",
    "load_edit_spec": "diffattn.pipelines.edit_job",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
