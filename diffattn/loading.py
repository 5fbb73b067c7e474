"""Loading pipelines for the CLI and the app: built-in tiny models or real weights (hub id or local folder).

`tiny:<family>` builds a random-weight pipeline in code (no download), except `tiny:shapes-wan` and `tiny:shapes-sd`:
models trained on the shapes world (`diffattn.shapes`), loaded from the package folder. Anything else goes to
`DiffusionPipeline.from_pretrained` with safetensors only and no remote code.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import ConfigError, UnsupportedModelError

__all__ = ["load_pipeline", "TINY_PREFIX", "is_tiny", "pick_device", "parse_dtype"]

TINY_PREFIX = "tiny:"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def is_tiny(spec: str) -> bool:
    return spec.startswith(TINY_PREFIX)


def pick_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else the CPU; a named device that does not exist here is a
    `ConfigError` now rather than a failure inside torch once the model is being moved."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            found = f"{count} CUDA device(s)" if torch.version.cuda else f"a CPU-only build of torch {torch.__version__}"
            raise ConfigError(f"device {name!r} is not available here ({found}); choose cpu or auto")
    return device


def parse_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on CUDA, float32 on the CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)} or auto")
    return _DTYPES[name]


def load_pipeline(spec: str, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  cpu_offload: bool = False) -> Any:
    """A ready pipeline for `spec`: `tiny:<family>` or a hub id / local path of a diffusers pipeline."""
    device = torch.device(device)
    if is_tiny(spec):
        from .shapes.models import MODELS as SHAPES_MODELS
        from .shapes.models import load_trained
        from .testing import PROMPT_FAMILIES, tiny_pipeline

        family = spec[len(TINY_PREFIX):]
        if family in SHAPES_MODELS:
            pipe = load_trained(family, dtype=dtype)
        elif family in PROMPT_FAMILIES:
            pipe = tiny_pipeline(family, dtype=dtype)
        else:
            raise UnsupportedModelError(
                f"no built-in tiny model {family!r} that generates from a prompt; choose one of "
                f"{', '.join(PROMPT_FAMILIES + SHAPES_MODELS)}"
            )
    else:
        from diffusers import DiffusionPipeline

        try:
            pipe = DiffusionPipeline.from_pretrained(spec, dtype=dtype, use_safetensors=True, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise UnsupportedModelError(
                f"could not load a diffusers pipeline from {spec!r} (a hub id or a local folder with model_index.json "
                f"and safetensors weights is needed): {exc}"
            ) from exc
    if cpu_offload and device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(desc="denoise", leave=False)
    return pipe
