"""`freeswim`: inward sliding-window attention with a cached full-attention cross-attention override."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from ..config import AttentionConfig, check, check_range
from ..precision import Precision
from ..registry import register_method

__all__ = ["MEMORY_PRESETS", "FreeSwimConfig", "FreeSwimMemory", "check_window_settings"]

_BACKENDS = ("auto", "triton", "flex", "reference")



def check_window_settings(config: Any, base_ok: Callable[[int], bool], base_rule: str) -> None:
    """The window fields FreeSwim and the image `window` share: `base_height`/`base_width` both or neither, each
    passing `base_ok` (`base_rule` says what that means), a radius of at least one token, a positive scale factor."""
    check(
        (config.base_height is None) == (config.base_width is None),
        f"give both base_height and base_width or neither; got {config.base_height} and {config.base_width}",
    )
    for name in ("base_height", "base_width"):
        value = getattr(config, name)
        check(value is None or base_ok(value), f"{name} must be {base_rule}; got {value!r}")
    check(
        config.window_radius is None or min(config.window_radius) >= 1,
        f"window_radius must be two token counts >= 1 (rows, columns): radius 0 is a one-token-wide window; "
        f"got {config.window_radius!r}",
    )
    if config.scale_factor is not None:
        check(config.scale_factor > 0, f"scale_factor must be positive; got {config.scale_factor}")

@dataclass(frozen=True)
class FreeSwimMemory:
    """The memory knobs of a FreeSwim run, resolved from `FreeSwimConfig.memory` and the knobs set explicitly.

    Args:
        sequential_branches (`bool`): a refresh call runs each block on the full rows, then on the window rows,
            instead of on one doubled batch (the peak holds one branch's activations).
        ffn_chunk_tokens (`int`): feed-forward of every block in chunks of this many tokens; 0 runs it whole.
        offload_cache (`bool`): cached cross-attention outputs live in (pinned) host memory, prefetched one layer
            ahead on a side CUDA stream.
        vae_tiling (`bool`): the VAE encodes and decodes in spatial tiles (two-stage runs only).
        offload_text_encoder (`bool`): the text encoder goes to the CPU once the prompt is encoded (two-stage runs).
    """

    sequential_branches: bool = False
    ffn_chunk_tokens: int = 0
    offload_cache: bool = False
    vae_tiling: bool = False
    offload_text_encoder: bool = False


MEMORY_PRESETS: dict[str, FreeSwimMemory] = {
    "default": FreeSwimMemory(),
    "low": FreeSwimMemory(sequential_branches=True, ffn_chunk_tokens=16384, offload_cache=True, vae_tiling=True,
                          offload_text_encoder=True),
}
"""`FreeSwimConfig.memory` presets: `"default"` keeps everything on the GPU and batched (fastest when it fits);
`"low"` turns every knob on, for 1088x1920x81 on a 24 GB card."""


@register_method
@dataclass(frozen=True)
class FreeSwimConfig(AttentionConfig):
    """FreeSwim (arXiv 2511.14712): ultra-high-resolution video from a Wan model trained at a lower resolution.

    Self-attention is restricted to an inward sliding window the size of the model's native token grid (all
    frames, the window centre clamped inside the frame so every query keeps a full window), with a slightly
    sharper softmax. A second, full-attention branch runs on a copy of the latent in the same batch; its
    cross-attention output replaces the window branch's, which keeps global semantics coherent. That output is
    recomputed every `cache_steps` steps on the conditional pass and reused in between; the unconditional pass
    is window-only. `diffattn generate --method freeswim` runs the paper's two stages (native resolution,
    upscale, SDEdit at the target size; see `diffattn.FreeSwimPipeline`). Defaults follow the released code
    (WillWu111/FreeSwim): base 480x832 for Wan2.1-1.3B (720x1280 for 14B), strength 0.7, flow shift 9.

    Departures from the released code: it runs the no-cache mode by default (`inference.py --mode nocache`), while
    here the cache mode is the default (`cache_steps=2`, its cache pipeline's own default; `cache_steps=None` gives
    no-cache); and its softmax temperature always uses the 480p base grid's 30 x 52 tokens per frame (factor
    ~1.046), while here `N` comes from the base size in use (720x1280 for 14B: 45 x 80 tokens, factor ~1.041; set
    `scale_factor` to use the released value).

    Args:
        base_height (`int`, *optional*):
            Native height in pixels that sets the window (radius = base_height / 16 / 2 tokens) and the
            temperature; by default 480 for Wan2.1-1.3B and 720 for Wan2.1-14B. Set it (with `base_width`) for
            other Wan models, e.g. 32 for the built-in tiny one.
        base_width (`int`, *optional*):
            Native width in pixels; by default 832 (1.3B) or 1280 (14B).
        window_radius (`tuple[int, int]`, *optional*):
            Window radii `(rows, columns)` in tokens (each at least 1), overriding the ones derived from the base
            size; a query sees a `(2 * rows + 1) x (2 * columns + 1)` window.
        inward (`bool`, defaults to `True`):
            Clamp the window centre inside the frame (the paper); `False` truncates border windows (its ablation).
        scale_factor (`float`, *optional*):
            Multiplier of the softmax scale `1/sqrt(head_dim)` in both self-attention branches; by default the
            paper's `sqrt(log(2N) / log(N))` with `N` the native grid's tokens per frame (~1.046 for 30x52).
        cache_steps (`int`, *optional*, defaults to `2`):
            The full branch and its cross-attention run on the conditional pass every `cache_steps` steps and the
            cached cross-attention is reused in between; `None` runs both branches on every pass, conditional and
            unconditional (the paper's no-cache mode).
        memory (`str`, defaults to `"default"`):
            Memory preset, `"default"` or `"low"` (see `MEMORY_PRESETS`); the five knobs below left at `None`
            take the preset's value, a knob set explicitly wins. Every knob leaves the output unchanged (equal up
            to float rounding; see each). `memory_plan` gives the resolved knobs.
        sequential_branches (`bool`, *optional*):
            On calls that run the full branch, run each block on the full rows and then on the window rows instead
            of on one doubled batch: the peak holds one branch's activations instead of two. Preset default: off;
            low: on.
        ffn_chunk_tokens (`int`, *optional*):
            Run every block's feed-forward on chunks of this many tokens (0: whole); its hidden layer (about 6x
            the model width) is then never materialised for all tokens at once. Preset default: 0; low: 16384.
        offload_cache (`bool`, *optional*):
            Keep the cached cross-attention outputs (one `tokens x dim` tensor per block) in host memory, pinned
            on CUDA, and copy each back one block ahead of its use on a side CUDA stream (a plain copy on the CPU).
            Preset default: off; low: on.
        vae_tiling (`bool`, *optional*):
            Two-stage runs: encode and decode with the VAE in spatial tiles (`AutoencoderKLWan.enable_tiling`; the
            Wan VAE already decodes one latent frame at a time, so time needs no tiling). Preset default: off;
            low: on.
        offload_text_encoder (`bool`, *optional*):
            Two-stage runs: move the text encoder to the CPU once the prompts are encoded (it stays there).
            Preset default: off; low: on.
        block_size (`int`, defaults to `128`):
            Kernel block size (64 or 128); tokens are grouped into spatio-temporal tiles of this many tokens.
        backend (`str`, defaults to `"auto"`):
            Kernel backend of the window branch: `"auto"`, `"triton"`, `"flex"` or `"reference"`.
        precision (`str`, defaults to `"bf16"`):
            Arithmetic of the window branch's tiles: `"bf16"`, `"int8"` (INT8 Q.K, 16-bit P.V) or `"int8-fp8"`
            (also FP8 P.V; `"int8"` on GPUs without FP8). The full branch and cross-attention stay in the model's
            dtype.
        strength (`float`, defaults to `0.7`):
            SDEdit strength of the high-resolution stage (two-stage runs only): the last 70% of the steps run.
        flow_shift (`float`, defaults to `9.0`):
            Flow-matching shift of the high-resolution stage's scheduler (two-stage runs only).
    """

    name = "freeswim"
    description = "inward sliding-window self-attention + cached full-branch cross-attention override (Wan, high resolution)"
    category = "windows"
    implementation = "diffattn.processors.freeswim:FreeSwimMethod"
    runner = "diffattn.pipelines.freeswim:run_freeswim"
    tiny_models = ("wan",)
    tiny_settings = {"base_height": 32, "base_width": 32}
    incompatible_caches = frozenset({
        "FirstBlockCacheConfig", "MagCacheConfig", "SeaCacheConfig", "TaylorSeerCacheConfig", "FasterCacheConfig",
        "PyramidAttentionBroadcastConfig",
    })

    base_height: int | None = None
    base_width: int | None = None
    window_radius: tuple[int, int] | None = None
    inward: bool = True
    scale_factor: float | None = None
    cache_steps: int | None = 2
    memory: str = "default"
    sequential_branches: bool | None = None
    ffn_chunk_tokens: int | None = None
    offload_cache: bool | None = None
    vae_tiling: bool | None = None
    offload_text_encoder: bool | None = None
    block_size: int = 128
    backend: str = "auto"
    precision: Precision = "bf16"
    strength: float = 0.7
    flow_shift: float = 9.0

    def validate(self) -> None:
        super().validate()
        check_window_settings(
            self, lambda value: value >= 32 and value % 16 == 0,
            "a multiple of 16 pixels (Wan's VAE x8 and patch x2) of at least 32, so the window radius (base / 32 "
            "tokens) is at least 1",
        )
        if self.cache_steps is not None:
            check(self.cache_steps >= 1,
                  f"cache_steps must be a whole number >= 1, or None for no cache; got {self.cache_steps!r}")
        check(self.block_size in (64, 128), f"block_size must be 64 or 128; got {self.block_size}")
        check(self.backend in _BACKENDS, f"backend must be one of {_BACKENDS}; got {self.backend!r}")
        check_range("strength", self.strength, 0.0, 1.0)
        check(self.strength > 0, "strength must be > 0: with 0 the high-resolution stage runs no step")
        check(self.flow_shift > 0, f"flow_shift must be positive; got {self.flow_shift}")
        check(self.memory in MEMORY_PRESETS, f"memory must be one of {tuple(MEMORY_PRESETS)}; got {self.memory!r}")
        check(
            self.ffn_chunk_tokens is None or self.ffn_chunk_tokens >= 0,
            f"ffn_chunk_tokens must be a token count >= 0 (0: no chunking); got {self.ffn_chunk_tokens!r}",
        )

    @property
    def memory_plan(self) -> FreeSwimMemory:
        """The memory knobs in effect: the `memory` preset, with the knobs set on this config replacing its values."""
        explicit = {f.name: getattr(self, f.name) for f in fields(FreeSwimMemory) if getattr(self, f.name) is not None}
        return replace(MEMORY_PRESETS[self.memory], **explicit)
