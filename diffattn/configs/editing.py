"""Zero-shot video editing: `fatezero`, `realcraft` and `fresco`, each run by its own pipeline.

These methods edit an existing video, so they run inside `FateZeroPipeline`, `RealCraftPipeline` and
`FrescoPipeline` (`diffattn edit ...` on the command line) rather than through `diffattn.apply` on a text-to-video
pipeline. Word-valued settings accept the original YAML shapes too: `cross_replace_steps: {default_: 0.8,
silver: 0.6}`, `eq_params: {words: [watercolor], values: [10]}`, `blend_words: [[silver, jeep], [Porsche, car]]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import MethodConfig, check, check_range
from ..errors import ConfigError
from ..registry import register_method

__all__ = ["FateZeroConfig", "FrescoConfig", "RealCraftConfig", "check_frame_refs", "parse_word_values", "requires_video"]

FRAME_NAMES = ("first", "mid", "middle", "last", "all", "self")
"""Named frame references of spatial-temporal attention (besides int offsets)."""

_FRESCO_ADDED_PROMPT = ", best quality, extremely detailed, "
"""What FRESCO's released code appends to the prompt (SD 1.5-style checkpoints)."""
_FRESCO_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing finger, extra digit, fewer digits, cropped, worst quality, "
    "low quality"
)
"""FRESCO's released negative prompt (SD 1.5-style checkpoints)."""

_STORE_MODES = ("auto", "ram", "disk", "online")
_STORE_DTYPES = ("float16", "bfloat16", "float32")


def parse_word_values(entries: tuple[str, ...], setting: str) -> dict[str, float]:
    """`("word:0.5", ...)` -> `{"word": 0.5}`; a malformed entry raises `ConfigError` naming `setting`."""
    values = {}
    for entry in entries:
        word, sep, value = str(entry).rpartition(":")
        try:
            values[word.strip()] = float(value)
        except ValueError:
            word = ""
        if not sep or not word.strip():
            raise ConfigError(f"{setting} entries must look like 'word:value' (e.g. 'watercolor:10'); got {entry!r}")
    return values


def requires_video(pipe: Any, methods: list[MethodConfig], call_kwargs: dict[str, Any]):
    """`runner` of the editing methods: `diffattn generate` has no input video, so say where to go instead."""
    names = ", ".join(m.name for m in methods if m.category == "editing")
    raise ConfigError(f"{names} edits an existing video; run `diffattn edit {methods[0].name} --video PATH "
                      "--source-prompt ... --target-prompt ...` (or use its pipeline) instead of `diffattn generate`")


def _words(value: Any) -> Any:
    """A words setting as a tuple of words (from `"a,b"`, a list, or `None`); anything else as it is, for the type
    check to refuse with a `ConfigError` naming the setting."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split(","))
    if isinstance(value, Iterable):
        return tuple(str(v).strip() for v in value)
    return value


def _pairs(mapping: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(f"{word}:{value}" for word, value in mapping.items())


@dataclass(frozen=True)
class _EditingConfig(MethodConfig):
    """Shared settings of the editing methods (sampling)."""

    category = "editing"
    implementation = "diffattn.processors.editing:VideoEditingAttention"
    scope = "pipeline"
    runner = "diffattn.configs.editing:requires_video"
    tiny_models = ("sd",)

    num_inference_steps: int = 50
    guidance_scale: float = 7.5

    def validate(self) -> None:
        super().validate()
        check(isinstance(self.num_inference_steps, int) and self.num_inference_steps >= 1,
              f"num_inference_steps must be a positive int; got {self.num_inference_steps!r}")
        check_range("guidance_scale", self.guidance_scale, 0.0)

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


@register_method
@dataclass(frozen=True)
class FateZeroConfig(_EditingConfig):
    """FateZero (Qi et al., ICCV 2023): DDIM inversion that keeps the attention maps, then fusion of the edit's
    attention with them. Defaults follow the released style configs (jeep_watercolor: cross 0.8, self 0.8, refine,
    SparseCausalAttention_index ['mid'], least_sc_channel 640, 50 DDIM steps, guidance 7.5).

    Args:
        num_inference_steps (`int`, *optional*, defaults to `50`): DDIM steps of inversion and of editing.
        guidance_scale (`float`, *optional*, defaults to `7.5`): classifier-free guidance of the edit.
        cross_replace_steps (`float`, *optional*, defaults to `0.8`): fraction of the first edit steps whose
            cross-attention is fused with the source's (semantic layout). A `{default_: x, word: y}` mapping sets
            per-word fractions too.
        cross_replace_words (`tuple[str, ...]`, *optional*, defaults to `()`): per-word fractions, `"word:0.5"`,
            words of the target prompt.
        self_replace_steps (`float`, *optional*, defaults to `0.8`): fraction of the first edit steps whose
            self-attention is replaced by the inversion's (structure).
        is_replace_controller (`bool`, *optional*, defaults to `False`): prompt-to-prompt replace (prompts with the
            same word count, better for object swaps) instead of refine (any prompts, better for style).
        eq_params (`tuple[str, ...]`, *optional*, defaults to `()`): reweighting, `"word:factor"` for target words
            (x2-20 in the released configs); the original `{words: [...], values: [...]}` is accepted.
        blend_words (`tuple[str, ...]`, *optional*, defaults to `()`): source-prompt words of the edited object; where
            their cross-attention exceeds `blend_th`, the edit keeps its own self-attention. Empty: the inversion's
            self-attention everywhere (FateZero's `blend_th: [2, 2]`).
        target_blend_words (`tuple[str, ...]`, *optional*, defaults to `()`): target-prompt words of the new object,
            for latent blending (`blend_latents`).
        blend_th (`float`, *optional*, defaults to `0.3`): threshold of the normalised blend map.
        blend_self_attention (`bool`, *optional*, defaults to `True`): mask self-attention replacement with the
            blend mask (FateZero's `masked_self_attention`).
        blend_latents (`bool`, *optional*, defaults to `False`): also blend latents with the inverted ones outside
            the union of source and target masks (`masked_latents`; the authors found it weaker).
        blend_latent_steps (`tuple[float, float]`, *optional*, defaults to `(0.2, 0.8)`): edit-step fractions in
            which latents are blended.
        use_inversion_attention (`bool`, *optional*, defaults to `True`): fuse with the inversion's attention
            (FateZero); `False` fuses with a source branch denoised from the inverted noise with the source prompt
            and guidance (plain prompt-to-prompt).
        kv_frames (`tuple[str | int, ...]`, *optional*, defaults to `("mid",)`): spatial-temporal attention: the
            frames whose keys/values every frame's self-attention uses (`"first"`, `"mid"`, `"last"`, `"all"`,
            `"self"`, or offsets such as `-1`). FateZero's style and attribute configs use `["mid"]` from level 1;
            its shape configs keep its model code's default, `[-1, "first"]` (previous and first frame) at every
            level (`kv_min_level=0`).
        kv_min_level (`int`, *optional*, defaults to `1`): resolution level from which `kv_frames` apply (level 1 =
            32x32 at 512 px, i.e. FateZero's `least_sc_channel: 640`); finer levels attend within the frame.
        edit_min_level (`int`, *optional*, defaults to `1`): attention is stored and fused at levels >= this (FateZero
            stores query lengths <= 32^2, i.e. level >= 1).
        blend_level (`int`, *optional*): level of the cross-attention maps the blend mask is made from; by default
            the deepest level with cross-attention in the down and up blocks (16x16 at 512 px for SD 1.x, as FateZero).
        attention_store (`str`, *optional*, defaults to `"auto"`): `"ram"` (in RAM up to `ram_budget_gb`, the rest
            spilled to disk), `"disk"` (everything on disk, the original's `disk_store`), `"online"` (nothing
            stored: the source branch is recomputed from the inverted latents at each edit step, one step held),
            or `"auto"` (`"ram"` when the estimate fits the budget, else `"online"`).
        ram_budget_gb (`float`, *optional*, defaults to `16.0`): RAM the store may use (GiB).
        store_dtype (`str`, *optional*, defaults to `"float16"`): dtype of stored maps.
        frames_per_chunk (`int`, *optional*): edit long videos in independent chunks of this many frames (the
            authors' advice for videos that do not fit); all frames at once when `None`.
    """

    name = "fatezero"
    description = "zero-shot video editing: DDIM inversion with attention store + self/cross attention fusion (FateZeroPipeline)"

    cross_replace_steps: float = 0.8
    cross_replace_words: tuple[str, ...] = ()
    self_replace_steps: float = 0.8
    is_replace_controller: bool = False
    eq_params: tuple[str, ...] = ()
    blend_words: tuple[str, ...] = ()
    target_blend_words: tuple[str, ...] = ()
    blend_th: float = 0.3
    blend_self_attention: bool = True
    blend_latents: bool = False
    blend_latent_steps: tuple[float, float] = (0.2, 0.8)
    use_inversion_attention: bool = True
    kv_frames: tuple[str | int, ...] = ("mid",)
    kv_min_level: int = 1
    edit_min_level: int = 1
    blend_level: int | None = None
    attention_store: str = "auto"
    ram_budget_gb: float = 16.0
    store_dtype: str = "float16"
    frames_per_chunk: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.cross_replace_steps, Mapping):
            steps = dict(self.cross_replace_steps)
            self._set("cross_replace_steps", float(steps.pop("default_", 1.0)))
            self._set("cross_replace_words", tuple(self.cross_replace_words) + _pairs(steps))
        if isinstance(self.eq_params, Mapping):
            words, values = self.eq_params.get("words", []), self.eq_params.get("values", [])
            if len(words) != len(values):
                raise ConfigError(f"eq_params needs as many values as words; got {words} and {values}")
            self._set("eq_params", _pairs(dict(zip(words, values))))
        blend = self.blend_words
        if isinstance(blend, (list, tuple)) and len(blend) == 2 and all(isinstance(b, (list, tuple)) for b in blend):
            self._set("blend_words", _words(blend[0]))
            self._set("target_blend_words", _words(blend[1]))
        for name in ("blend_words", "target_blend_words", "eq_params", "cross_replace_words"):
            self._set(name, _words(getattr(self, name)))
        self._set("kv_frames", _frame_refs(self.kv_frames))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        check_range("cross_replace_steps", self.cross_replace_steps, 0.0, 1.0)
        check_range("self_replace_steps", self.self_replace_steps, 0.0, 1.0)
        for word, fraction in parse_word_values(self.cross_replace_words, "cross_replace_words").items():
            check_range(f"cross_replace_words[{word!r}]", fraction, 0.0, 1.0)
        parse_word_values(self.eq_params, "eq_params")
        check(len(self.blend_latent_steps) == 2 and 0 <= self.blend_latent_steps[0] <= self.blend_latent_steps[1] <= 1,
              f"blend_latent_steps must be two fractions start <= end in [0, 1]; got {self.blend_latent_steps!r}")
        check(not self.blend_latents or (self.blend_words and self.target_blend_words),
              "blend_latents needs blend_words (source object) and target_blend_words (target object)")
        check(self.attention_store in _STORE_MODES, f"attention_store must be one of {_STORE_MODES}; got {self.attention_store!r}")
        check(self.store_dtype in _STORE_DTYPES, f"store_dtype must be one of {_STORE_DTYPES}; got {self.store_dtype!r}")
        check_range("ram_budget_gb", self.ram_budget_gb, 0.0)
        _check_levels(self)
        check(self.frames_per_chunk is None or self.frames_per_chunk >= 1,
              f"frames_per_chunk must be a positive number of frames or None; got {self.frames_per_chunk!r}")
        check_frame_refs("kv_frames", self.kv_frames)


@register_method
@dataclass(frozen=True)
class RealCraftConfig(_EditingConfig):
    """RealCraft-style object editing (Jin et al., arXiv 2312.12635). No code of the paper is public; this follows its
    abstract (cross-attention swap for the edited object, relaxed spatial-temporal attention of the object, strict
    preservation elsewhere, parameter-free, up to 64 frames) with our own design for the details: see
    `RealCraftPipeline`.

    Args:
        num_inference_steps (`int`, *optional*, defaults to `50`): DDIM steps of inversion and of editing.
        guidance_scale (`float`, *optional*, defaults to `7.5`): classifier-free guidance of the edit.
        object_words (`tuple[str, ...]`, *optional*, defaults to `()`): source-prompt words of the object to edit;
            by default the source words the target prompt replaces.
        cross_replace_steps (`float`, *optional*, defaults to `1.0`): fraction of edit steps with the
            cross-attention swap.
        self_preserve_steps (`float`, *optional*, defaults to `1.0`): fraction of edit steps in which
            self-attention outside the object mask is the source's.
        kv_frames (`tuple[str | int, ...]`, *optional*, defaults to `("first", -1, 0)`): spatial-temporal attention
            outside the object (first, previous and own frame).
        relaxed_kv_frames (`tuple[str | int, ...]`, *optional*, defaults to `("first", -2, -1, 0, 1, 2)`): the
            wider frame access of the object's own attention inside its mask.
        kv_min_level (`int`, *optional*, defaults to `1`): level from which the K/V frames apply.
        edit_min_level (`int`, *optional*, defaults to `1`): levels at which attention is fused.
        blend_level (`int`, *optional*): level of the cross-attention maps of the object mask; by default the deepest
            level with cross-attention in the down and up blocks (16x16 at 512 px).
    """

    name = "realcraft"
    description = (
        "object-centric video editing: cross-attention swap + relaxed spatio-temporal attention in an automatic mask (RealCraftPipeline)"
    )

    object_words: tuple[str, ...] = ()
    cross_replace_steps: float = 1.0
    self_preserve_steps: float = 1.0
    kv_frames: tuple[str | int, ...] = ("first", -1, 0)
    relaxed_kv_frames: tuple[str | int, ...] = ("first", -2, -1, 0, 1, 2)
    kv_min_level: int = 1
    edit_min_level: int = 1
    blend_level: int | None = None

    def __post_init__(self) -> None:
        self._set("object_words", _words(self.object_words))
        for name in ("kv_frames", "relaxed_kv_frames"):
            self._set(name, _frame_refs(getattr(self, name)))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        check_range("cross_replace_steps", self.cross_replace_steps, 0.0, 1.0)
        check_range("self_preserve_steps", self.self_preserve_steps, 0.0, 1.0)
        _check_levels(self)
        check_frame_refs("kv_frames", self.kv_frames)
        check_frame_refs("relaxed_kv_frames", self.relaxed_kv_frames)


@register_method
@dataclass(frozen=True)
class FrescoConfig(_EditingConfig):
    """FRESCO (Yang et al., CVPR 2024): SDEdit with ControlNet, optical-flow guided attention and feature optimisation.
    Defaults follow the released code (DDPM sampling, 20 steps, strength 0.75, ControlNet scale 0.7, Canny
    thresholds 50/100, its prompt additions and negative prompt, spatial guidance 1 step with scale 0.2, temporal
    guidance while t >= 350, optimisation over the first 15 schedule steps, Adam lr 0.2 x 20, spatial weight 100,
    batches of 8, keyframe intervals 10..30).

    Args:
        num_inference_steps (`int`, *optional*, defaults to `20`): steps of the full schedule (SDEdit runs the last
            `strength` of them).
        guidance_scale (`float`, *optional*, defaults to `7.5`): classifier-free guidance.
        strength (`float`, *optional*, defaults to `0.75`): SDEdit strength (fraction of the schedule run).
        controlnet_conditioning_scale (`float`, *optional*, defaults to `0.7`): ControlNet scale.
        control (`str`, *optional*, defaults to `"canny"`): control images made from the frames: `"canny"` edges
            (HED/depth need extra weights: pass `control_frames` to the pipeline instead).
        flow (`str`, *optional*, defaults to `"dis"`): OpenCV flow estimator, `"dis"` or `"farneback"` (GMFlow or RAFT:
            pass a `flow_estimator` callable to the pipeline).
        decoder_max_level (`int`, *optional*, defaults to `1`): FRESCO attention runs in the up blocks at levels
            <= this (`up_blocks.2`/`.3` at 512 px: 32^2 and 64^2 tokens).
        num_intraattn_steps (`int`, *optional*, defaults to `1`): steps with spatial-guided attention.
        intraattn_scale (`float`, *optional*, defaults to `0.2`): key scale of spatial-guided attention.
        step_interattn_end (`float`, *optional*, defaults to `350`): temporal-guided attention while the timestep is
            at least this.
        interattn_scale (`float`, *optional*, defaults to `0.2`): key scale of temporal-guided attention.
        end_opt_step (`int`, *optional*, defaults to `15`): feature optimisation at the first `end_opt_step` steps of
            the full schedule (those that SDEdit runs).
        optimize_blocks (`tuple[int, ...]`, *optional*, defaults to `(0, 1, 2, 3)`): up blocks whose inputs are
            optimised.
        optimize_iterations (`int`, *optional*, defaults to `20`): Adam iterations per optimisation.
        optimize_lr (`float`, *optional*, defaults to `0.2`): Adam learning rate.
        spatial_weight (`float`, *optional*, defaults to `100.0`): weight of the spatial (Gram) loss.
        added_prompt (`str`, *optional*, defaults to `", best quality, extremely detailed, "`): appended to the
            prompt (the released code's addition for SD 1.5-style checkpoints; it uses a photo-style one for
            Realistic Vision).
        negative_prompt (`str`, *optional*): the unconditional prompt; by default the released code's
            (`"longbody, lowres, bad anatomy, ..."`). A `negative_prompt` passed to the pipeline call replaces it.
        adain_style_epsilon (`float`, *optional*, defaults to `1e-5`): epsilon added to the variance of the
            features before optimisation when AdaIN restores their statistics (the optimised features use 1e-5).
            With 1e-5 on both sides AdaIN is the identity on features the optimisation left unchanged, as the paper
            describes. The released code passes its chunk argument (1) into this slot, so its AdaIN scales the
            features by `sqrt((var + 1) / (var + 1e-5))`; set 1.0 to reproduce that.
        batch_size (`int`, *optional*, defaults to `8`): frames per batch; later batches are anchored on the first
            keyframe and the previous batch's last one.
        keyframe_interval (`tuple[int, int]`, *optional*): `(min, max)` spacing of keyframes chosen at peaks of
            frame change (FRESCO: 10, 30); only keyframes are generated and the other frames are propagated from
            them along the flow. `None` generates every frame.
    """

    name = "fresco"
    description = "video-to-video with flow-guided intra/inter-frame attention + feature optimisation, SD 1.5 + ControlNet (FrescoPipeline)"
    tiny_models = ("sd-controlnet",)

    num_inference_steps: int = 20
    strength: float = 0.75
    controlnet_conditioning_scale: float = 0.7
    control: str = "canny"
    flow: str = "dis"
    decoder_max_level: int = 1
    num_intraattn_steps: int = 1
    intraattn_scale: float = 0.2
    step_interattn_end: float = 350.0
    interattn_scale: float = 0.2
    end_opt_step: int = 15
    optimize_blocks: tuple[int, ...] = (0, 1, 2, 3)
    optimize_iterations: int = 20
    optimize_lr: float = 0.2
    spatial_weight: float = 100.0
    added_prompt: str = _FRESCO_ADDED_PROMPT
    negative_prompt: str = _FRESCO_NEGATIVE_PROMPT
    adain_style_epsilon: float = 1e-5
    batch_size: int = 8
    keyframe_interval: tuple[int, int] | None = None

    def validate(self) -> None:
        super().validate()
        check_range("strength", self.strength, 0.0, 1.0)
        check(self.strength > 0, "strength must be above 0 (0 would leave the video unchanged)")
        check_range("controlnet_conditioning_scale", self.controlnet_conditioning_scale, 0.0)
        check(self.control in ("canny", "none"), f"control must be 'canny' or 'none'; got {self.control!r}")
        check(self.flow in ("dis", "farneback"), f"flow must be 'dis' or 'farneback'; got {self.flow!r}")
        for name in ("decoder_max_level", "num_intraattn_steps", "end_opt_step", "optimize_iterations"):
            check_range(name, getattr(self, name), 0)
        for name in ("intraattn_scale", "interattn_scale", "optimize_lr", "spatial_weight"):
            check_range(name, getattr(self, name), 0.0)
        check(self.adain_style_epsilon > 0, f"adain_style_epsilon must be above 0; got {self.adain_style_epsilon}")
        check(self.batch_size >= 3, f"batch_size must be at least 3 (two anchor frames + one new); got {self.batch_size}")
        if self.keyframe_interval is not None:
            check(len(self.keyframe_interval) == 2 and 1 <= self.keyframe_interval[0] <= self.keyframe_interval[1],
                  f"keyframe_interval must be (min, max) with 1 <= min <= max; got {self.keyframe_interval!r}")


def _check_levels(config: MethodConfig) -> None:
    for name in ("kv_min_level", "edit_min_level", "blend_level"):
        value = getattr(config, name)
        check(value is None or (isinstance(value, int) and value >= 0), f"{name} must be a resolution level >= 0; got {value!r}")


def _frame_refs(value: Any) -> Any:
    """Frame references as a tuple of names and int offsets (from `"first,-1"`, one reference, or a list); anything
    else as it is (see `_words`)."""
    refs = _words(str(value)) if isinstance(value, (str, int)) else value
    if not isinstance(refs, Iterable):
        return refs
    return tuple(int(f) if isinstance(f, str) and f.lstrip("-").isdigit() else f for f in refs)


def check_frame_refs(name: str, refs: tuple) -> None:
    """Raise `ConfigError` unless every entry of `refs` is a named frame (`FRAME_NAMES`) or an int offset."""
    bad = [r for r in refs if isinstance(r, bool) or not (isinstance(r, int) or r in FRAME_NAMES)]
    check(not bad, f"{name} entries must be one of {FRAME_NAMES} or int offsets (e.g. -1 = previous frame); got {bad}")
