"""Untrained tiny diffusers pipelines sized for the shapes world, over its vocabulary (one token per word).

Two models, built from the same factories as the random tiny models of :mod:`diffattn.testing` with other sizes:

- ``shapes-wan``: a ``WanPipeline`` for 9 x 32 x 32 videos; Wan VAE (levels of 32, 64, 64 channels) with 4x temporal
  and 4x spatial compression to 16 channels (latent grid 3 x 8 x 8), Wan transformer of 4 blocks, 4 heads x 32, 1x1x1 patches (192 tokens),
  flow matching with shift :data:`FLOW_SHIFT`.
- ``shapes-sd``: a ``StableDiffusionPipeline`` for 64 x 64 images; KL VAE with 4x spatial compression to 4 channels
  (16 x 16 latents), UNet of two levels (32, 64 channels, heads of 32) with cross-attention at both, SD's DDIM with
  its betas rescaled to zero terminal SNR and v-prediction (sampling starts from pure noise, as training ends).

Text: Wan's UMT5 and SD's CLIP text encoders of :mod:`diffattn.testing.text` (2 layers, 32 wide) with tokenizers
whose vocabulary is :data:`~diffattn.shapes.world.VOCABULARY`. :func:`sample_kwargs` gives the call that the
trained models are evaluated with.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from diffattn.errors import UnsupportedModelError
from diffattn.notices import quiet_library_notices

with quiet_library_notices():  # diffusers' pipeline modules import transformers' image processors: its torchvision notice
    from diffusers import DDIMScheduler, DiffusionPipeline, FlowMatchEulerDiscreteScheduler, StableDiffusionPipeline, WanPipeline
from diffattn.shapes.world import VOCABULARY
from diffattn.testing.recipe import build
from diffattn.testing.text import clip_text_encoder, t5_tokenizer, umt5_encoder, write_clip_tokenizer
from diffattn.testing.unet import ddim, sd_unet, sd_vae
from diffattn.testing.wan_family import wan_transformer, wan_vae

__all__ = [
    "MODELS",
    "GEOMETRY",
    "TEXT_LENGTH",
    "FLOW_SHIFT",
    "WEIGHTS",
    "build_pipeline",
    "sample_kwargs",
    "train_command",
    "load_trained",
]

MODELS: tuple[str, ...] = ("shapes-wan", "shapes-sd")
GEOMETRY: dict[str, dict[str, int]] = {
    "shapes-wan": {"num_frames": 9, "height": 32, "width": 32},
    "shapes-sd": {"height": 64, "width": 64},
}
"""The size each model is trained at (pipeline call kwargs)."""
TEXT_LENGTH = 32
"""Wan's ``max_sequence_length`` in :func:`sample_kwargs` (a 3-object caption is 25 tokens); training varies the
padded length up to Wan's default 512 so that any length works."""
FLOW_SHIFT = 3.0
"""Timestep shift of shapes-wan's flow-matching scheduler (32x32 needs far less than Wan's 480p shift of 7 or 5)."""
_Z = 16  # Wan latent channels


def _wan_components(seed: int) -> dict[str, Any]:
    tokenizer = t5_tokenizer(words=VOCABULARY)
    transformer = build(seed, lambda: wan_transformer(
        patch_size=(1, 1, 1), num_attention_heads=4, attention_head_dim=32, ffn_dim=256, num_layers=4,
        in_channels=_Z, out_channels=_Z, rope_max_seq_len=64,
    ))
    # base_dim 32 rather than 16: on 2 CPU cores, 250 steps of 8 clips reached reconstruction MSE 0.19 against 0.32,
    # and on an H100 a Wan VAE step is launch-bound up to 128 clips, so the width costs little there
    vae = build(seed, lambda: wan_vae(
        base_dim=32, z_dim=_Z, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True],
        scale_factor_spatial=4, latents_mean=[0.0] * _Z, latents_std=[1.0] * _Z,
    ))
    return {
        "tokenizer": tokenizer,
        "text_encoder": build(seed, lambda: umt5_encoder(tokenizer)),
        "transformer": transformer,
        "transformer_2": None,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT),
    }


def _sd_scheduler() -> DDIMScheduler:
    """SD's DDIM with its betas rescaled to zero terminal SNR, v-prediction and trailing timesteps, so sampling starts
    from pure noise exactly as training's last timestep: with SD's own betas the last training timestep keeps 7% of
    the image, enough for the denoiser to read the flat background colour of the shapes world off the noise instead
    of the caption (and then draw a colour picked by the sampler's noise)."""
    return DDIMScheduler.from_config(ddim("scaled_linear").config, rescale_betas_zero_snr=True, prediction_type="v_prediction",
                                     timestep_spacing="trailing")


def _sd_components(seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = write_clip_tokenizer(directory, words=VOCABULARY)
    attention = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    return {
        "tokenizer": tokenizer,
        "text_encoder": build(seed, lambda: clip_text_encoder(tokenizer)),
        "unet": build(seed, lambda: sd_unet(
            block_out_channels=(32, 64), attention_head_dim=(1, 2), sample_size=16, norm_num_groups=16,
            down_block_types=attention[0], up_block_types=attention[1],
        )),
        "vae": build(seed, lambda: sd_vae(levels=3, block_out_channels=(32, 32, 32), norm_num_groups=16, sample_size=64)),
        "scheduler": _sd_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


_BUILDERS = {"shapes-wan": (WanPipeline, _wan_components), "shapes-sd": (StableDiffusionPipeline, _sd_components)}


def _check(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown shapes model {name!r}; choose one of {', '.join(MODELS)}")


@quiet_library_notices()
def build_pipeline(name: str, *, seed: int = 0) -> DiffusionPipeline:
    """The untrained pipeline ``name`` (one of :data:`MODELS`) with weights drawn under ``seed``, float32, CPU."""
    _check(name)
    pipeline_class, components = _BUILDERS[name]
    pipe = pipeline_class(**components(seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """Pipeline call kwargs for sampling model ``name`` at its trained size: 20 steps, guidance 4, ``output_type="pt"``
    (and Wan's text length :data:`TEXT_LENGTH`); ``overrides`` replace any of them."""
    _check(name)
    kwargs: dict[str, Any] = {**GEOMETRY[name], "num_inference_steps": 20, "guidance_scale": 4.0, "output_type": "pt"}
    if name == "shapes-wan":
        kwargs["max_sequence_length"] = TEXT_LENGTH
    return {**kwargs, **overrides}



WEIGHTS = Path(__file__).resolve().parent / "weights"
"""The package folder holding the trained pipelines, one sub-folder per model name."""


def train_command(name: str) -> str:
    """The command that trains model ``name`` on one GPU into the package folder :func:`load_trained` reads."""
    _check(name)
    return f"python -m diffattn.shapes.train {name} --out {WEIGHTS / name} --preset gpu"


@quiet_library_notices()
def load_trained(name: str, *, dtype: torch.dtype = torch.float32, folder: str | Path | None = None) -> DiffusionPipeline:
    """The trained pipeline ``name`` from :data:`WEIGHTS` (or from ``folder``, a ``diffattn.shapes.train`` output),
    with ``from_pretrained`` (offline, safetensors only), on the CPU.

    Raises:
        UnsupportedModelError: the weights are not there; the message gives the command that trains them.
    """
    _check(name)
    folder = WEIGHTS / name if folder is None else Path(folder)
    if not (folder / "model_index.json").is_file():
        raise UnsupportedModelError(
            f"the trained {name} weights are not installed (no {folder / 'model_index.json'}); train them with "
            f"`{train_command(name)}` (about 4 minutes on one GPU; --preset cpu for a smaller CPU run)"
        )
    pipeline_class, _ = _BUILDERS[name]
    pipe = pipeline_class.from_pretrained(folder, dtype=dtype, use_safetensors=True, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe
