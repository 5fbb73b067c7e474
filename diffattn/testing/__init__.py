"""Tiny random-weight diffusers pipelines built in code: no download, seconds on a CPU.

They back the test suite, ``diffattn demo`` and the docs. Each family mirrors diffusers' own fast-test
configs with 2 attention heads of 16 channels, and text prompts work offline through tokenizers built
at run time (:mod:`diffattn.testing.text`).

>>> pipe = tiny_pipeline("wan")
>>> video = pipe(**tiny_call_kwargs("wan")).frames  # [1, 9, 3, 32, 32]

What :func:`tiny_call_kwargs` produces (latent and token grids are frames x height x width; L is the
text length the denoiser sees):

============== ============ ============== ========== ============= ==== ============================
family         pixels       VAE (t, s)     latent     token grid    L    denoiser blocks
============== ============ ============== ========== ============= ==== ============================
wan            9 x 32 x 32  4, 8           3 x 4 x 4  3 x 2 x 2     16   2
cogvideox      9 x 32 x 32  4, 8           3 x 4 x 4  3 x 2 x 2     16   2 (joint text + video)
hunyuanvideo   9 x 16 x 16  4, 8           3 x 2 x 2  3 x 2 x 2     16   1 dual + 1 single stream
ltx            9 x 32 x 32  4, 4           3 x 8 x 8  3 x 8 x 8     16   2
mochi          7 x 32 x 32  6, 8           2 x 4 x 4  2 x 2 x 2     16   2
wan22          9 x 64 x 64  4, 16          3 x 4 x 4  3 x 2 x 2     16   2 (48 channels, per-token t)
wan-i2v        9 x 32 x 32  4, 8           3 x 4 x 4  3 x 2 x 2     16   2 (+ 17 CLIP image tokens)
wan-vace       9 x 32 x 32  4, 8           3 x 4 x 4  3 x 2 x 2     16   2 + 1 VACE block
skyreels-v2    9 x 32 x 32  4, 8           3 x 4 x 4  3 x 2 x 2     16   2
hunyuanvideo15 9 x 32 x 32  4, 16          3 x 2 x 2  3 x 2 x 2     33   2 (joint: 16 MLLM, 8 ByT5, 9 image)
ltx2           (no pipeline)               3 x 8 x 8  3 x 8 x 8     16   2 (+ 5 audio tokens)
sd             64 x 64      1, 8           8 x 8      8 x 8         77   UNet, 2 levels
sd-controlnet  64 x 64      1, 8           8 x 8      8 x 8         77   UNet + ControlNet
animatediff    8 x 64 x 64  1, 8           8 x 8 x 8  8 x 8 x 8     77   UNet + motion modules
flux           64 x 64      1, 8           8 x 8      4 x 4         16   1 dual + 1 single stream
flux2          64 x 64      1, 8           8 x 8      4 x 4         32   1 dual + 1 single stream (Klein)
qwenimage      64 x 64      1, 8           8 x 8      4 x 4         13   2 (joint text + image)
sd3            64 x 64      1, 8           8 x 8      4 x 4         93   2 (joint image + text)
============== ============ ============== ========== ============= ==== ============================

QwenImage does not pad its text: L is the prompt's own length (13 for the default prompt, 9 for its negative).

Reproducibility: building never touches the global RNG, and a fixed seed gives bitwise-equal weights
and outputs. Weights that ``from_pretrained`` loads from safetensors are not 64-byte aligned, and MKL's
default CPU matmul then rounds differently (~1e-7); set ``MKL_CBWR=AUTO,STRICT`` before the process's
first matmul for bitwise-equal save/load round trips (the tests do).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiffusionPipeline

from diffattn.notices import quiet_library_notices
from diffattn.testing import dit, dit_next, flux2, image_dit, qwen_image, unet, wan_family
from diffattn.testing.recipe import Family
from diffattn.testing.text import write_clip_tokenizer
from diffattn.testing.video import sample_clip

__all__ = [
    "FAMILIES",
    "DENOISER_FAMILIES",
    "PROMPT_FAMILIES",
    "tiny_pipeline",
    "tiny_call_kwargs",
    "tiny_denoiser",
    "tiny_denoiser_inputs",
    "latent_scale",
    "write_clip_tokenizer",
    "sample_clip",
]

_RECIPES: dict[str, Family] = {
    "wan": dit.WAN,
    "cogvideox": dit.COGVIDEOX,
    "hunyuanvideo": dit.HUNYUANVIDEO,
    "ltx": dit.LTX,
    "mochi": dit.MOCHI,
    "wan22": wan_family.WAN22,
    "wan-i2v": wan_family.WAN_I2V,
    "wan-vace": wan_family.WAN_VACE,
    "skyreels-v2": wan_family.SKYREELS_V2,
    "hunyuanvideo15": dit_next.HUNYUANVIDEO15,
    "ltx2": dit_next.LTX2,
    "sd": unet.SD,
    "sd-controlnet": unet.SD_CONTROLNET,
    "animatediff": unet.ANIMATEDIFF,
    "flux": image_dit.FLUX,
    "sd3": image_dit.SD3,
    "flux2": flux2.FLUX2,
    "qwenimage": qwen_image.QWENIMAGE,
}

FAMILIES: tuple[str, ...] = tuple(name for name, recipe in _RECIPES.items() if recipe.pipeline_class is not None)
"""Names accepted by every factory here: wan, cogvideox, hunyuanvideo, ltx, mochi, sd, sd-controlnet, animatediff,
wan22, wan-i2v, wan-vace, skyreels-v2, hunyuanvideo15, flux, sd3, flux2, qwenimage."""
PROMPT_FAMILIES: tuple[str, ...] = tuple(
    name for name in FAMILIES if name not in ("wan-i2v", "wan-vace", "skyreels-v2", "hunyuanvideo15")
)
"""The tiny pipelines that generate from a text prompt alone (``tiny:<name>`` in the CLI and the app); the others'
call kwargs carry an image, a control video or text-encoder states (see their recipes)."""
DENOISER_FAMILIES: tuple[str, ...] = tuple(_RECIPES)
"""Names accepted by the denoiser factories (``tiny_denoiser``, ``tiny_denoiser_inputs``, ``latent_scale``):
``FAMILIES`` and ltx2, whose pipeline has no tiny version."""


def _family(family: str) -> Family:
    """Look ``family`` up, with an error listing the valid names."""
    try:
        return _RECIPES[family]
    except KeyError:
        raise ValueError(f"unknown tiny model family {family!r}; choose one of {', '.join(DENOISER_FAMILIES)}") from None


def _pipeline_family(family: str) -> Family:
    """Look ``family`` up among those with a tiny pipeline."""
    spec = _family(family)
    if spec.pipeline_class is None:
        raise ValueError(f"tiny {family} is a denoiser only (tiny_denoiser); pipelines: {', '.join(FAMILIES)}")
    return spec


@quiet_library_notices()  # building and casting diffusers models logs diffusers' empty "kept in float32" notice
def tiny_pipeline(
    family: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> DiffusionPipeline:
    """Build the family's diffusers pipeline with tiny random weights (same ``seed``, same weights)."""
    spec = _pipeline_family(family)
    pipe = spec.pipeline_class(**spec.components(seed))
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def tiny_call_kwargs(family: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``pipe(**kwargs)``: a short prompt (and negative prompt, CFG on), a tiny size,
    2 steps, ``generator`` seeded with 0 and ``output_type="pt"``; ``overrides`` replace any of them."""
    kwargs = _pipeline_family(family).call()
    kwargs["generator"] = torch.Generator().manual_seed(0)
    return {**kwargs, **overrides}


@quiet_library_notices()
def tiny_denoiser(family: str, *, seed: int = 0) -> torch.nn.Module:
    """The family's transformer or UNet alone, identical to ``tiny_pipeline(family, seed=seed)``'s."""
    return _family(family).denoiser(seed)


def latent_scale(family: str) -> tuple[int, int]:
    """(temporal, spatial) compression of the family's tiny VAE; image families have temporal 1."""
    return _family(family).latent_scale


def _check_latent_size(family: str, spec: Family, frames: int, height: int, width: int) -> None:
    """Reject latent sizes the family's patching or frame limit cannot take, saying which are valid."""
    step_t, step_s = spec.patch
    if min(frames, height, width) < 1 or frames % step_t or height % step_s or width % step_s:
        raise ValueError(
            f"{family}: latent size {frames}x{height}x{width} invalid; frames must be a positive multiple of "
            f"{step_t}, height and width positive multiples of {step_s}"
        )
    if spec.max_frames is not None and frames > spec.max_frames:
        raise ValueError(f"{family}: at most {spec.max_frames} latent frames, got {frames}")


def tiny_denoiser_inputs(
    family: str,
    *,
    batch: int = 1,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Random forward kwargs for :func:`tiny_denoiser` at a LATENT size (before patching).

    Defaults are the latent size that :func:`tiny_call_kwargs` produces. Valid sizes: height and width
    even for the Wan-structured families, ``cogvideox`` and ``mochi`` (2x2 patches), anything for the others;
    ``animatediff`` takes at most 32 frames. ``sd``/``sd-controlnet`` fold frames into the batch
    (``batch * frames`` images). Layouts: Wan-structured/hunyuanvideo/mochi ``[B, C, F, H, W]`` (``wan22`` with one
    timestep per token, ``wan-i2v`` with 36 channels and CLIP image states, ``wan-vace`` with control latents),
    cogvideox ``[B, F, C, H, W]`` plus its rotary tables, ltx/ltx2 packed ``[B, F*H*W, C]`` (ltx2 also audio latents and
    text states for the audio stream) plus ``num_frames``/``height``/``width``, UNets ``sample`` (``[B, C, F, H, W]``
    for animatediff); image transformers take one frame and even height and width: flux and flux2 packed
    ``[B, H/2*W/2, 16]`` plus ``img_ids``/``txt_ids`` (flux2: ``[B, N, 4]``), qwenimage packed ``[B, H/2*W/2, 64]``
    plus ``img_shapes``, sd3 ``[B, 4, H, W]``.
    """
    spec = _family(family)
    given = (frames, height, width)
    frames, height, width = (default if size is None else size for size, default in zip(given, spec.latent))
    _check_latent_size(family, spec, frames, height, width)
    return spec.inputs(batch, frames, height, width, torch.Generator().manual_seed(seed))
