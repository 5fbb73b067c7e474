"""Sparse attention methods for video diffusion transformers: SpargeAttn, Radial, PSA, LiteAttention and PAB.

The first four make self-attention block-sparse: each builds a `BlockPlan` over the video tokens (text rows and
columns of joint attention always stay dense) and the block-sparse kernels skip the rest; they compose by
intersecting their plans (e.g. Radial or Sparge + LiteAttention). PAB instead reuses attention outputs across
denoising steps and composes with any of them. Defaults are the papers' published ones; where this implementation
departs from a paper, the config's docstring says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from ..config import AttentionConfig, FileSetting, check, check_range
from ..precision import Precision
from ..registry import register_method

__all__ = [
    "BlockSparseConfig",
    "SpargeConfig",
    "RadialConfig",
    "PSAConfig",
    "LiteAttentionConfig",
    "QuantizedConfig",
    "PABConfig",
    "RADIAL_PRESETS",
    "SPARSE_FAMILIES",
    "PABPreset",
    "PAB_PRESETS",
]

_VIDEO_TRANSFORMERS = ("wan", "cogvideox", "hunyuanvideo", "ltx", "mochi", "hunyuanvideo15", "ltx2")
SPARSE_FAMILIES = (*_VIDEO_TRANSFORMERS, "flux", "flux2", "qwenimage", "sd3")
"""Denoiser families the block-sparse methods support (video and image diffusion transformers; Radial: video only)."""
_SPARSE_TINY_PIPELINES = tuple(family for family in SPARSE_FAMILIES if family != "ltx2")
"""`tiny_models` of the block-sparse methods: LTX-2 has a tiny transformer but no tiny pipeline."""
_VIDEO_TINY_PIPELINES = tuple(family for family in _VIDEO_TRANSFORMERS if family != "ltx2")

_BACKENDS = ("auto", "triton", "flex", "reference")
_TOPK_SIM_THRESHOLD = -0.1
"""`simthreshd1` default of SpargeAttn's top-k API (`spas_sage2_attn_meansim_topk_cuda`)."""
_CDF_SIM_THRESHOLD = 0.6
"""`simthreshd1` default of SpargeAttn's TopCdf API (`spas_sage2_attn_meansim_cuda`)."""
_TOKEN_ORDERS = ("tiles", "raster")


@dataclass(frozen=True)
class BlockSparseConfig(AttentionConfig):
    """Settings every block-sparse method shares (not a method by itself).

    Args:
        backend (`str`, defaults to `"auto"`):
            Kernel backend of `diffattn.kernels.block_sparse_attention`: `"auto"` (Triton on CUDA, else the PyTorch
            reference), `"triton"`, `"flex"` or `"reference"`.
        min_tokens (`int`, defaults to `512`):
            Calls with fewer video tokens stay dense (logged once): too few blocks to gain anything.
        token_order (`str`):
            Token order the kernels see: `"tiles"` (2x8x8 spatio-temporal tiles of 128 tokens, so compact patterns
            fill whole blocks) or `"raster"` (the model's frame-by-frame, row-by-row order). When methods compose,
            the first active one in the chain picks the order and block sizes; the others adopt them.
        query_block (`int`, *optional*):
            Query tokens per plan block, 64 or 128 (the kernels' sizes); the method's own default when `None`.
        precision (`str`, defaults to `"bf16"`):
            Arithmetic of each computed tile: `"bf16"` (the model's 16-bit dtype), `"int8"` (INT8 Q.K with K
            smoothing, 16-bit P.V) or `"int8-fp8"` (also FP8 P.V; GPUs without FP8 run `"int8"`, with one log line).
            Composed methods run at the lowest precision any of them asks for.
    """

    backend: str = "auto"
    min_tokens: int = 512
    token_order: str = "tiles"
    query_block: int | None = None
    precision: Precision = "bf16"

    default_block_q: ClassVar[int] = 128
    """The method's query tokens per plan block."""
    block_k: ClassVar[int] = 128
    """Key tokens per plan block."""
    category = "sparsity"
    tiny_models = _SPARSE_TINY_PIPELINES
    compiles = True

    @property
    def block_q(self) -> int:
        """Query tokens per plan block."""
        return self.query_block or self.default_block_q

    def validate(self) -> None:
        super().validate()
        check(self.backend in _BACKENDS, f"backend must be one of {_BACKENDS}; got {self.backend!r}")
        check(self.token_order in _TOKEN_ORDERS, f"token_order must be one of {_TOKEN_ORDERS}; got {self.token_order!r}")
        check_range("min_tokens", self.min_tokens, 1)
        check(self.query_block in (None, 64, 128), f"query_block must be 64 or 128; got {self.query_block!r}")


@register_method
@dataclass(frozen=True)
class SpargeConfig(BlockSparseConfig):
    """SpargeAttn (Zhang et al., ICML'25): predict the important (query block, key block) pairs from pooled q/k.

    Per block, the mean token and the mean pairwise cosine of its tokens are computed; blocks whose tokens are not
    self-similar (cosine <= `sim_threshold`) are always computed, the rest are chosen per query block by top-k or
    TopCdf on the softmax of the pooled scores; the P.V product of a block is skipped when its logits stay more
    than `pv_threshold` (log2 units) below the running row max. Blocks are 64 queries x 128 keys, as SpargeAttn
    uses on Hopper (`query_block=128` gives 128 x 128). `diffattn.tune_sparge` calibrates threshold, TopCdf and
    P.V threshold per layer and head against dense attention; pass its JSON as `tuned` (SpargeAttn's own tuned
    `.pt` files load too). TopCdf keeps exactly as many blocks as SpargeAttn does (the highest ones while their
    cumulative probability stays at most the threshold, at least one), so thresholds tuned there transfer.

    Partly faithful: attention is in the model's dtype (SpargeAttn quantises Q/K to INT8 and V to FP8); text rows
    and columns of joint attention stay dense (SpargeAttn treats every token alike); tokens are grouped in 2x8x8
    spatio-temporal tiles by default (SpargeAttn takes the model's frame-by-frame raster order:
    `token_order="raster"`); `pv_threshold` defaults to off (the reference's 50 almost never skips, and the check
    costs kernel time).

    Args:
        topk (`float`, *optional*, defaults to `0.5`):
            Fraction of key blocks each query block keeps (the recommended `spas_sage2_attn_meansim_topk_cuda`
            setting). Set to `None` to select by `cdf_threshold` instead.
        cdf_threshold (`float`, *optional*):
            TopCdf: keep the highest blocks while their cumulative probability is at most this (SpargeAttn's
            `spas_sage2_attn_meansim_cuda` uses 0.98).
        sim_threshold (`float`, *optional*):
            Self-similarity threshold in [-1, 1]. By default each API's own: -0.1 with `topk` (which effectively
            disables the check), 0.6 with `cdf_threshold`.
        pv_threshold (`float`, *optional*):
            Skip P.V for blocks more than this many log2 units below the running max (SpargeAttn's `pvthreshd`).
        attention_sink (`bool`, defaults to `False`):
            Always keep key block 0. Off, as in both SpargeAttn APIs; tuned settings (`tuned`) always keep it, as
            SpargeAttn's tuned inference does.
        tuned (`str`, *optional*):
            Path of a `diffattn.tune_sparge` JSON file, or of SpargeAttn's tuned per-head parameters (a `.pt` state
            dict of `<layer>.inner_attention.{cdfthreshd,simthreshd1,pvthreshd,is_sparse}` tensors, layers named as
            in the diffusers model); its per-layer, per-head settings replace the four above for the layers it lists.
    """

    name = "sparge"
    description = "SpargeAttn: block-sparse attention predicted from pooled q/k (top-k or TopCdf), with P.V skipping"
    implementation = "diffattn.processors.sparse.sparge:SpargeMethod"
    default_block_q = 64

    topk: float | None = 0.5
    cdf_threshold: float | None = None
    sim_threshold: float | None = None
    pv_threshold: float | None = None
    attention_sink: bool = False
    tuned: Annotated[str | None, FileSetting((".json", ".pt"))] = None

    def validate(self) -> None:
        super().validate()
        check(
            (self.topk is None) != (self.cdf_threshold is None),
            f"give exactly one of topk and cdf_threshold; got topk={self.topk}, cdf_threshold={self.cdf_threshold}",
        )
        if self.topk is not None:
            check(0.0 < self.topk <= 1.0, f"topk is a fraction of key blocks in (0, 1]; got {self.topk}")
        if self.cdf_threshold is not None:
            check_range("cdf_threshold", self.cdf_threshold, 0.0, 1.0)
        if self.sim_threshold is not None:
            check_range("sim_threshold", self.sim_threshold, -1.0, 1.0)
        if self.pv_threshold is not None:
            check_range("pv_threshold", self.pv_threshold, 0.0)
        if self.tuned is not None:
            check(Path(self.tuned).is_file(), f"tuned settings file {self.tuned!r} does not exist; write it with diffattn.tune_sparge")

    @property
    def similarity_threshold(self) -> float:
        """`sim_threshold`, or the default of the SpargeAttn API the selection mode comes from."""
        if self.sim_threshold is not None:
            return self.sim_threshold
        return _TOPK_SIM_THRESHOLD if self.topk is not None else _CDF_SIM_THRESHOLD


RADIAL_PRESETS: dict[str, dict[str, Any]] = {
    "wan2.1": {"dense_steps": 12, "dense_layers": (0,), "decay_factor": 0.2},
    "wan2.2": {"dense_steps": 11, "dense_layers": (0,), "decay_factor": 0.8},
    "hunyuanvideo": {"dense_steps": 12, "dense_layers": (), "decay_factor": 0.95},
}
"""Radial attention's shipped settings per model (mit-han-lab/radial-attention `scripts/*_t2v_inference.sh`:
`dense_timesteps`, `dense_layers` as the number of leading dense blocks, `decay_factor`); `RadialConfig.preset`."""


@register_method
@dataclass(frozen=True)
class RadialConfig(BlockSparseConfig):
    """Radial attention (Li et al., NeurIPS'25): a static O(n log n) mask whose spatial band halves as the
    temporal distance doubles.

    Follows the reference code as of mit-han-lab/radial-attention 72788d4: frames at distance 0 or 1 see each other
    entirely; farther frames see a band of `max(2^bit_length(s) / 2^bit_length(dist) * decay_factor, 128)` tokens
    around the same position (s = tokens per frame), and frame pairs too far apart for a 128-token band keep only
    every few frames. On Wan, key frame 0 is an attention sink seen by every frame; the reference removed the sink
    for HunyuanVideo (commit 2f61c30) and has none for other models, so it is off there by default. The token mask
    is reduced to 128x128 blocks by the paper's rule (a block is kept when more than 60% of its touched key columns
    are seen by more than a third of its queries), built once per grid and cached. Defaults are the shipped Wan2.1
    setting (first 12 steps and block 0 dense, decay 0.2); `RadialConfig.preset("wan2.2")` gives Wan2.2's (first
    11 steps and block 0 dense, decay 0.8) and `preset("hunyuanvideo")` HunyuanVideo's (12 steps, no dense block,
    decay 0.95), see `RADIAL_PRESETS`.

    Partly faithful: the block rule is applied to whole blocks rather than per frame pair; tokens stay in raster
    order by default because the paper's band is contiguous in raster order (at Wan2.1 480p, 81 frames: 32% block
    density in raster order against 44% in 2x8x8 tiles, 29% token density); CogVideoX, LTX-Video and Mochi, which
    the reference does not cover, get its HunyuanVideo rules.

    Args:
        decay_factor (`float`, defaults to `0.2`):
            Band width multiplier in (0, 1].
        attention_sink (`bool`, *optional*):
            Every frame sees key frame 0. By default on for Wan and off for other models, as in the reference.
        half_band_next_frame (`bool`, defaults to `False`):
            Adjacent frames see only a band of half a frame: the reference's Wan rule up to commit af371ca, which
            72788d4 replaced with the whole frame.
    """

    name = "radial"
    description = "Radial attention: static O(n log n) mask, spatial band halving as temporal distance doubles"
    implementation = "diffattn.processors.sparse.radial:RadialMethod"
    tiny_models = _VIDEO_TINY_PIPELINES

    dense_layers: tuple[int, ...] = (0,)
    dense_steps: int = 12
    token_order: str = "raster"
    decay_factor: float = 0.2
    attention_sink: bool | None = None
    half_band_next_frame: bool = False

    def validate(self) -> None:
        super().validate()
        check(0.0 < self.decay_factor <= 1.0, f"decay_factor must lie in (0, 1]; got {self.decay_factor}")

    @classmethod
    def preset(cls, model: str, **overrides: Any) -> RadialConfig:
        """The reference's shipped settings for `model` (a key of `RADIAL_PRESETS`), with `overrides` applied."""
        check(model in RADIAL_PRESETS, f"no Radial preset for {model!r}; choose one of {sorted(RADIAL_PRESETS)}")
        return cls(**{**RADIAL_PRESETS[model], **overrides})

    def sink_for(self, family: str) -> bool:
        """Whether key frame 0 is an attention sink on a model family."""
        return self.attention_sink if self.attention_sink is not None else family == "wan"


@register_method
@dataclass(frozen=True)
class PSAConfig(BlockSparseConfig):
    """PSA, pyramid sparse attention (ziplab, arXiv 2512.04025): each (query block, key block) pair is computed at
    full resolution, through keys/values mean-pooled by 2, 4 or 8, or skipped, by its estimated importance.

    Importance is attention between a quarter of each block's queries and a quarter of each block's keys,
    summed per block pair. Each query block sorts its key blocks by importance; `cutoffs` are the cumulative ends
    of the level 1 / 2 / 4 / 8 segments, as importance mass (`mode="threshold"`) or as a fraction of key blocks
    (`mode="topk"`); blocks past the last cut-off are skipped, and at least `min_full` of the blocks stay at full
    resolution. Defaults are the Wan2.1-14B preset (first 15 of 50 steps dense).

    Partly faithful: the sampled tokens are every 4th token of each block instead of random ones (deterministic
    runs); tokens are in 2x8x8 tiles in tile raster order instead of along a Gilbert curve; segment lengths are
    not rounded to the hardware tile (our kernel pads pooled blocks instead); the optional similarity cap on
    pooling levels is not implemented.

    Args:
        mode (`str`, defaults to `"threshold"`):
            `"threshold"` (cumulative importance mass) or `"topk"` (fractions of the key blocks).
        cutoffs (`tuple[float, float, float, float]`, defaults to `(0.4, 0.5, 0.6, 0.8)`):
            Ascending cumulative ends of the level 1, 2, 4 and 8 segments, each in [0, 1].
        min_full (`float`, defaults to `0.06`):
            Minimum fraction of key blocks each query block computes at full resolution.
    """

    name = "psa"
    description = "PSA: per block pair, full / 2x / 4x / 8x pooled keys or skipped, by sampled importance"
    implementation = "diffattn.processors.sparse.psa:PSAMethod"

    dense_steps: int = 15
    mode: str = "threshold"
    cutoffs: tuple[float, float, float, float] = (0.4, 0.5, 0.6, 0.8)
    min_full: float = 0.06

    def validate(self) -> None:
        super().validate()
        check(self.mode in ("threshold", "topk"), f"mode must be 'threshold' or 'topk'; got {self.mode!r}")
        check(
            all(0.0 <= c <= 1.0 for c in self.cutoffs) and list(self.cutoffs) == sorted(self.cutoffs),
            f"cutoffs must be ascending values in [0, 1]; got {self.cutoffs!r}",
        )
        check_range("min_full", self.min_full, 0.0, 1.0)


@register_method
@dataclass(frozen=True)
class QuantizedConfig(BlockSparseConfig):
    """Dense attention in 8 bits, SageAttention style, on every video self- and joint-attention call.

    Each call runs the full plan through the block-sparse kernel at `precision`: INT8 Q.K after subtracting K's
    per-head token mean (exact under softmax), one scale per query and key token; under `"int8-fp8"` also FP8 e4m3
    P.V with V scaled per channel and each tile's P.V summed in float32 before it joins the output.
    `diffattn.kernels.quantize` defines the arithmetic exactly. Composed with a sparse method (Sparge, Radial, PSA,
    Lite) or FreeSwim, it computes their plan in 8 bits instead (it always joins the end of the chain, so the order
    given does not matter); the chain runs at the lowest precision any method asks for.

    Partly faithful to SageAttention 2: one scale per token rather than per thread group, no Q smoothing, no
    two-level accumulation inside a tile (each 128-key tile's FP8 P.V is accumulated in float32), and our own Triton
    kernel rather than SageAttention's CUDA kernels. As for the sparse methods, text query rows of joint attention
    run the model's own attention, and cross-attention stays in the model's dtype.

    Args:
        precision (`str`, defaults to `"int8-fp8"`):
            `"int8"` (INT8 Q.K, 16-bit P.V, the more accurate) or `"int8-fp8"` (also FP8 P.V; GPUs without FP8
            tensor cores run `"int8"`, with one log line; the CPU runs the PyTorch reference of the same arithmetic).
        token_order (`str`, defaults to `"raster"`):
            Token order of the view this method builds when it runs alone; dense attention gains nothing from
            tiles, so the model's own order saves the permutation.
    """

    name = "quantized"
    description = "dense attention in 8 bits (INT8 Q.K with K smoothing, FP8 P.V), SageAttention style; composes with the others"
    implementation = "diffattn.processors.sparse.quantized:QuantizedMethod"

    precision: Precision = "int8-fp8"
    token_order: str = "raster"

    def validate(self) -> None:
        super().validate()
        check(self.precision != "bf16", "quantized computes attention in 8 bits: choose precision 'int8' or 'int8-fp8'")


@register_method
@dataclass(frozen=True)
class LiteAttentionConfig(BlockSparseConfig):
    """LiteAttention (moonmath.ai, arXiv 2511.11062): tiles found negligible at one step stay skipped at later steps.

    While a query block's tiles are computed, a tile is marked negligible when no query row's max inside it rises
    more than `threshold` (log2 units) above the row's running max before it (the max over the tiles computed
    earlier in the row); the row's first tile never is. The test runs inside the attention pass, as in the
    original. Marked tiles are skipped at every later step, so sparsity only grows. Marks start empty at each
    run and are kept per layer and CFG branch unless `mark_scope`/`keep_marks_across_runs` say otherwise; text
    columns are always computed, and `must_do`/`must_skip` pin key tokens. Composes with Radial, Sparge and PSA:
    the marks intersect their plans.

    Partly faithful: tiles are the plan's blocks (128 x 128 by default) rather than the fork's 128 x 176, walked in
    the plan's order (ascending key blocks, then each pooled level), where the FA3 fork walks them from the last
    one down, so the running max, and with it the marks, differ; `mark_criterion="final"` tests against each
    row's final max instead (independent of the order, but a second Q.K pass in the Triton kernel). By default
    marks are kept per CFG branch and restart with each run, where the fork keeps one pair of mark buffers per
    layer, swaps them on every call and keeps them until reset: `mark_scope="layer"` and
    `keep_marks_across_runs=True` do that. `must_do`/`must_skip` are the fork's `must_do_list`/`must_skip_list`
    in ascending token order over the video keys of our view, whole plan blocks: a block is always computed when
    it holds any must-do token and never when all its tokens are must-skip.

    Args:
        threshold (`float`, defaults to `-10.0`):
            Mark threshold in log2 units, at most 0 (the README's examples use -3 to 0; lower skips less, `-inf`
            never skips).
        layer_thresholds (`tuple[float, ...]`, defaults to `()`):
            Per transformer block thresholds, overriding `threshold` for the blocks they cover.
        early_threshold (`float`, *optional*):
            Threshold for the first `early_steps` steps (stricter early, as moonmath's calibration suggests).
        early_steps (`int`, defaults to `0`):
            How many steps use `early_threshold`.
        mark_criterion (`str`, defaults to `"running"`):
            What a tile's max is compared with: `"running"` (the running max before the tile, in the attention
            pass, as the original) or `"final"` (the row's final max: independent of the tile order, but the
            Triton kernel pays a second Q.K pass for it).
        mark_scope (`str`, defaults to `"branch"`):
            `"branch"`: one mark set per layer and CFG branch. `"layer"`: one per layer, as the fork: each call
            reads the marks the layer's previous call wrote, so where the conditional and unconditional passes
            are separate calls (Wan), the unconditional pass extends the conditional pass's marks of the same
            step, and the next step's conditional pass the unconditional one's.
        keep_marks_across_runs (`bool`, defaults to `False`):
            Keep marks from one pipeline run to the next (the fork keeps them until `reset_skip_state()`); clear
            them with `reset_marks()` on the installed method (`handle.methods`). Marks restart whenever a layer's
            geometry (token grid, batch, heads, blocks) changes.
        must_do (`tuple[int, ...]`, defaults to `()`):
            Video key tokens always computed, as `start, end` pairs (end exclusive, ascending, not overlapping)
            of token indices in the model's order (frame by frame, row by row); parts past a call's tokens are
            ignored.
        must_skip (`tuple[int, ...]`, defaults to `()`):
            Video key tokens never computed, in the same form; must not overlap `must_do`, and must leave every
            call some key block (text keys count).
    """

    name = "lite"
    description = "LiteAttention: tiles negligible at one step stay skipped at later steps (composes by intersection)"
    implementation = "diffattn.processors.sparse.lite:LiteAttentionMethod"
    infinite_ok = frozenset({"threshold", "layer_thresholds", "early_threshold"})

    threshold: float = -10.0
    layer_thresholds: tuple[float, ...] = ()
    early_threshold: float | None = None
    early_steps: int = 0
    mark_criterion: Literal["running", "final"] = "running"
    mark_scope: Literal["branch", "layer"] = "branch"
    keep_marks_across_runs: bool = False
    must_do: tuple[int, ...] = ()
    must_skip: tuple[int, ...] = ()

    def validate(self) -> None:
        super().validate()
        check_range("threshold", self.threshold, None, 0.0)
        for value in self.layer_thresholds:
            check_range("layer_thresholds", value, None, 0.0)
        if self.early_threshold is not None:
            check_range("early_threshold", self.early_threshold, None, 0.0)
        check_range("early_steps", self.early_steps, 0)
        check(
            self.early_threshold is not None or self.early_steps == 0,
            "early_steps needs early_threshold (the threshold those steps use)",
        )
        must_do, must_skip = self.token_ranges()
        for do in must_do:
            for skip in must_skip:
                check(do[1] <= skip[0] or skip[1] <= do[0], f"must_do range {do} overlaps must_skip range {skip}; "
                      "a token is either always computed or never")

    def token_ranges(self) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
        """`must_do` and `must_skip` as `(start, end)` pairs."""
        return _token_ranges("must_do", self.must_do), _token_ranges("must_skip", self.must_skip)

    def threshold_for(self, block: int | None, *, early: bool) -> float:
        """The mark threshold of a transformer block, in the early steps (`early`) or after them."""
        if early and self.early_threshold is not None:
            return self.early_threshold
        if block is not None and block < len(self.layer_thresholds):
            return self.layer_thresholds[block]
        return self.threshold


def _token_ranges(name: str, flat: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """`(start, end)` pairs of a flat `start0, end0, start1, end1, ...` list, checked: even length, each range
    non-empty, non-negative, ascending and apart from the previous one (ConfigError otherwise)."""
    check(len(flat) % 2 == 0, f"{name} must hold start, end pairs (an even number of token indices); got {flat!r}")
    pairs = tuple(zip(flat[::2], flat[1::2]))
    previous_end = 0
    for start, end in pairs:
        check(0 <= start < end, f"{name} range ({start}, {end}) must have 0 <= start < end (end exclusive)")
        check(start >= previous_end, f"{name} ranges must be ascending and not overlap; ({start}, {end}) starts "
              f"before the previous range ends ({previous_end})")
        previous_end = end
    return pairs


@dataclass(frozen=True)
class PABPreset:
    """PAB settings: recompute every N-th step per attention type (0 = off) inside a timestep window."""

    spatial: int
    temporal: int
    cross: int
    window: tuple[float, float]


PAB_PRESETS: dict[str, PABPreset] = {
    "cogvideox": PABPreset(spatial=2, temporal=0, cross=0, window=(100.0, 850.0)),
    "wan": PABPreset(spatial=2, temporal=0, cross=6, window=(603.0, 976.0)),
}
"""PAB settings per family: CogVideoX's is the PAB authors' (VideoSys); Wan's is not theirs (VideoSys has no Wan
model) but a third-party port of VideoSys's PAB manager to Wan 2.1 (`WanV120PABConfig`), unvalidated here. Other
families use diffusers' fallback, `_PAB_FALLBACK`."""
_PAB_FALLBACK = PABPreset(spatial=2, temporal=0, cross=0, window=(100.0, 800.0))
_PAB_FIELDS_ONLY = PABPreset(spatial=0, temporal=0, cross=0, window=(100.0, 800.0))
_PAB_TYPES = ("spatial", "temporal", "cross")


@register_method
@dataclass(frozen=True)
class PABConfig(AttentionConfig):
    """Pyramid Attention Broadcast (Zhao et al., ICLR'25): reuse attention outputs across denoising steps.

    Inside a timestep window, an attention layer recomputes its output only every `N`-th denoising step and
    otherwise returns the output it computed last; `N` is set per attention type (spatial, temporal, cross;
    cross-attention changes least). As in the original (VideoSys), the count advances once per denoising step and
    each classifier-free-guidance branch reuses its own outputs: on models that run the conditional and
    unconditional passes as separate calls (Wan, HunyuanVideo with true CFG), each pass keeps its own cache, so the
    unconditional branch is never computed from the positive prompt's attention. A layer recomputes when
    `step % N == 0` and reuses only when `low < timestep < high` (the pipeline's `current_timestep`); counters and
    caches restart at every run. Layers are classified by type exactly as diffusers'
    `apply_pyramid_attention_broadcast` does.

    `match_diffusers=True` instead counts every denoiser call and shares one cache across branches, exactly as
    diffusers' hook does (bit-identical outputs to it); on separate-call models that reuses the conditional pass's
    attention in the unconditional pass of the same step.

    `preset="auto"` takes per-model values: CogVideoX spatial 2 in (100, 850) (VideoSys); Wan spatial 2 and cross 6
    in (603, 976) (not the PAB authors': a third-party Wan port of VideoSys's PAB manager); other models diffusers'
    fallback, spatial 2 in (100, 800). Any field set below overrides the preset; `preset="none"` uses the fields
    alone (unset ranges off, windows (100, 800)).

    Partly faithful: the projections around the attention still run (the cache sits above the kernel, in the
    method chain), so a reused call saves the attention itself but not q/k/v/out projections.

    Args:
        preset (`str`, defaults to `"auto"`): `"auto"` or `"none"`.
        spatial_skip_range (`int`, *optional*): recompute spatial (self / joint) attention every N-th step; 0 = off.
        temporal_skip_range (`int`, *optional*): the same for temporal attention.
        cross_skip_range (`int`, *optional*): the same for cross-attention.
        spatial_timestep_range (`tuple[float, float]`, *optional*): exclusive timestep window of spatial reuse.
        temporal_timestep_range (`tuple[float, float]`, *optional*): the same for temporal attention.
        cross_timestep_range (`tuple[float, float]`, *optional*): the same for cross-attention.
        match_diffusers (`bool`, defaults to `False`): count calls and share the cache across CFG branches, as
            diffusers' `apply_pyramid_attention_broadcast` (bit-identical to it).
    """

    name = "pab"
    description = "Pyramid Attention Broadcast: reuse attention outputs across steps per attention type and CFG branch"
    implementation = "diffattn.processors.sparse.pab:PABMethod"
    category = "sparsity"
    incompatible_caches = frozenset({"PyramidAttentionBroadcastConfig", "FasterCacheConfig", "TaylorSeerCacheConfig"})
    tiny_models = _VIDEO_TINY_PIPELINES
    compiles = True

    preset: str = "auto"
    spatial_skip_range: int | None = None
    temporal_skip_range: int | None = None
    cross_skip_range: int | None = None
    spatial_timestep_range: tuple[float, float] | None = None
    temporal_timestep_range: tuple[float, float] | None = None
    cross_timestep_range: tuple[float, float] | None = None
    match_diffusers: bool = False

    def validate(self) -> None:
        super().validate()
        check(self.preset in ("auto", "none"), f"preset must be 'auto' or 'none'; got {self.preset!r}")
        for kind in _PAB_TYPES:
            skip = getattr(self, f"{kind}_skip_range")
            if skip is not None:
                check(skip >= 0, f"{kind}_skip_range must be an integer >= 0; got {skip!r}")
            window = getattr(self, f"{kind}_timestep_range")
            if window is not None:
                check(window[0] < window[1], f"{kind}_timestep_range must be (low, high) with low < high; got {window!r}")
        if self.preset == "none":
            check(
                any(getattr(self, f"{kind}_skip_range") for kind in _PAB_TYPES),
                "preset='none' needs at least one of spatial/temporal/cross_skip_range >= 1",
            )

    def resolve(self, family: str) -> dict[str, tuple[int, tuple[float, float]]]:
        """Per attention type, `(skip range (0 = off), timestep window)` for a model family."""
        preset = PAB_PRESETS.get(family, _PAB_FALLBACK) if self.preset == "auto" else _PAB_FIELDS_ONLY
        resolved = {}
        for kind in _PAB_TYPES:
            skip = getattr(self, f"{kind}_skip_range")
            window = getattr(self, f"{kind}_timestep_range")
            resolved[kind] = (
                getattr(preset, kind) if skip is None else skip,
                tuple(float(t) for t in (preset.window if window is None else window)),
            )
        return resolved
