"""The video-editing attention controller, and the attention method (`VideoEditingAttention`) that runs it.

One `VideoEditingAttention` joins the chain of every self- and cross-attention module of a UNet. Its
`AttentionController` holds one `LayerPolicy` per module, keyed by the module's name (never by counting calls),
saying where that layer's keys/values come from (`frames.FrameKV` or FRESCO's `OcclusionKV`), whether its
attention is stored/captured/edited, whether it feeds the blend mask, and FRESCO's spatial/temporal guidance.
The editing pipelines build the policies and switch the controller's mode around each denoiser call:

* `OFF`: every call passes through unchanged (stock processors, bitwise).
* `PLAIN`: K/V policies and FRESCO guidance; no maps kept (e.g. DDIM inversion in online mode).
* `STORE`: like PLAIN, and the probabilities of edit layers are written to the `AttentionStore` (FateZero).
* `CAPTURE`: like PLAIN, and the queries/keys of edit/guided self-attention and the probabilities of edit/blend
  cross-attention are held for the current step (online source pass; FRESCO's reference pass).
* `EDIT`: the `"cond"` section's attention is fused with the source step's (prompt-to-prompt cross-attention
  editors, self-attention replacement under the blend mask, RealCraft's relaxed attention inside it).

Softmax is materialised only where probabilities are stored or edited (cross-attention, stored self-attention);
everywhere else attention goes through `scaled_dot_product_attention`. The step index is the run context's
(`call.context.step_index`; pipelines start each inversion and edit run with `context.start_run()`).

Resolution levels: a UNet attention module at level `l` sees the latent downsampled `l` times (`down_blocks.i` is
level i, the mid block the deepest level, `up_blocks.j` level `num_up - 1 - j`). At 512 px SD 1.x, levels 0-3 are
64², 32², 16² and 8² tokens; FateZero's "query length <= 32²" is "level >= 1", which tiny test UNets exercise too.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import torch

from diffattn.config import MethodConfig
from diffattn.context import LayerInfo, RunContext
from diffattn.errors import ConfigError, UnsupportedModelError
from diffattn.geometry import Grid
from diffattn.method import Target

from ..base import AttentionCall, AttentionMethod, Proceed
from .blend import BlendMask, word_map
from .editors import CrossAttentionEditor
from .errors import EditingStateError
from .frames import (
    SELF,
    BatchLayout,
    KVSource,
    attention_probs,
    frame_attention,
    group_kv,
    group_query,
    ungroup,
)
from .fresco import Trajectories, spatial_guidance, trajectory_attention
from .source import CapturedSource, SourceAttention
from .store import AttentionStore

__all__ = [
    "AttentionController",
    "EditMode",
    "LayerPolicy",
    "LayerSlot",
    "VideoEditingAttention",
    "WordMapAccumulator",
    "unet_place_level",
]


class EditMode(str, enum.Enum):
    """What the controller does in the current denoiser call (see the module docstring)."""

    OFF = "off"
    PLAIN = "plain"
    STORE = "store"
    CAPTURE = "capture"
    EDIT = "edit"


@dataclass(frozen=True)
class LayerSlot:
    """A UNet attention module as the controller knows it: name, role, place, resolution level, heads."""

    name: str
    role: str
    place: str
    level: int
    heads: int


def unet_place_level(name: str, num_down: int, num_up: int) -> tuple[str, int]:
    """`("down" | "mid" | "up", level)` of a UNet attention module from its qualified name."""
    parts = name.split(".")
    if parts[0] == "down_blocks":
        return "down", int(parts[1])
    if parts[0] == "up_blocks":
        return "up", num_up - 1 - int(parts[1])
    if parts[0] == "mid_block":
        return "mid", num_down - 1
    raise UnsupportedModelError(f"cannot place attention module {name!r} in a UNet (expected down_blocks/mid_block/up_blocks)")


@dataclass
class LayerPolicy:
    """What the controller does in one attention module.

    Args:
        slot (`LayerSlot`): the module.
        kv (`KVSource`, defaults to the frame itself): keys/values of self-attention.
        edit (`bool`): store (STORE), capture (CAPTURE) and fuse (EDIT) this layer's attention.
        blend (`bool`): a cross-attention layer whose maps feed the blend mask.
        edit_kv (`KVSource`, *optional*): keys/values of the edit's own self-attention inside the blend mask
            (RealCraft's relaxed spatial-temporal attention); `kv` when `None`.
        guided (`bool`): FRESCO spatial-guided attention (its queries/keys are captured in the reference pass).
        trajectories (`Trajectories`, *optional*): FRESCO temporal-guided attention at this layer.
    """

    slot: LayerSlot
    kv: KVSource = SELF
    edit: bool = False
    blend: bool = False
    edit_kv: KVSource | None = None
    guided: bool = False
    trajectories: Trajectories | None = None

    @property
    def name(self) -> str:
        return self.slot.name


class WordMapAccumulator:
    """Running sum of the edit's cross-attention to some target words over layers and steps (FateZero's latent
    blend uses the target mask of the attention accumulated so far)."""

    def __init__(self, token_weights: torch.Tensor) -> None:
        self.token_weights = token_weights
        self.total: torch.Tensor | None = None

    def add(self, probs: torch.Tensor) -> None:
        current = word_map([probs.detach()], self.token_weights)
        self.total = current if self.total is None else self.total + current


@dataclass
class AttentionController:
    """The editing state shared by every layer of one UNet (see the module docstring).

    Attributes:
        slots: every attention module the method joined, by name.
        policies: the modules the controller acts in, by name (others pass through).
        mode, layout: the current call's mode and batch layout.
        store: where STORE writes; capture: where CAPTURE writes; source: what EDIT fuses with.
        cross_editor: prompt-to-prompt cross-attention editor; self_edit_steps: edit steps `[0, n)` in which
            self-attention is fused; blend: the current step's blend mask (1 keeps the edit; `None` = 0).
        target_maps: accumulates the edit's cross-attention at blend layers (FateZero latent blend).
        reference, guide_steps, guide_key_scale: FRESCO spatial guidance (reference pass, steps, key scale).
        trajectory_min_timestep, trajectory_key_scale: FRESCO temporal guidance while `timestep >= min`.
    """

    slots: dict[str, LayerSlot] = field(default_factory=dict)
    policies: dict[str, LayerPolicy] = field(default_factory=dict)
    mode: EditMode = EditMode.OFF
    layout: BatchLayout | None = None
    store: AttentionStore | None = None
    capture: CapturedSource | None = None
    source: SourceAttention | None = None
    cross_editor: CrossAttentionEditor | None = None
    self_edit_steps: int = 0
    blend: BlendMask | None = None
    target_maps: WordMapAccumulator | None = None
    reference: CapturedSource | None = None
    guide_steps: int = 0
    guide_key_scale: float = 0.2
    trajectory_min_timestep: float = math.inf
    trajectory_key_scale: float = 0.2

    def set_policies(self, policies: list[LayerPolicy]) -> None:
        self.policies = {p.name: p for p in policies}

    def reset(self) -> None:
        """Back to OFF, dropping every per-run object."""
        self.mode, self.layout = EditMode.OFF, None
        self.store = self.capture = self.source = self.reference = None
        self.cross_editor = self.blend = self.target_maps = None
        self.self_edit_steps = self.guide_steps = 0
        self.trajectory_min_timestep = math.inf

    def store_shapes(self, frames: int, latent_size: tuple[int, int], text_len: int) -> list[tuple[int, ...]]:
        """Shapes of the maps STORE keeps per step (in the store's layout) for `frames` frames of one section."""
        shapes = []
        for policy in self.policies.values():
            slot = policy.slot
            tokens = Grid(1, *latent_size).downsampled(slot.level).frame_tokens
            if slot.role == "self" and policy.edit:
                keys = policy.kv.key_count(frames, tokens)
                shapes.append((1, slot.heads, frames * tokens, keys) if policy.kv.shared else (frames, slot.heads, tokens, keys))
            elif slot.role == "cross" and (policy.edit or policy.blend):
                shapes.append((frames, slot.heads, tokens, text_len))
        return shapes

    # ------------------------------------------------------------------------------ per-call checks
    def self_editing(self, ctx: RunContext) -> bool:
        return 0 <= ctx.step_index < self.self_edit_steps

    def guiding(self, ctx: RunContext) -> bool:
        return self.reference is not None and 0 <= ctx.step_index < self.guide_steps

    def tracing(self, ctx: RunContext) -> bool:
        return ctx.timestep is not None and ctx.timestep >= self.trajectory_min_timestep

    def require_source(self) -> SourceAttention:
        if self.source is None:
            raise EditingStateError("EDIT mode needs the source step's attention (controller.source) to be set")
        return self.source


class VideoEditingAttention(AttentionMethod):
    """Attention method of the editing pipelines (FateZero, RealCraft, FRESCO); runs an `AttentionController`.

    It is installed by `FateZeroPipeline`, `RealCraftPipeline` and `FrescoPipeline` on their UNet and driven by
    them; installed on a pipeline of another kind it refuses with a pointer to those pipelines.
    """

    def __init__(self, config: MethodConfig, target: Target) -> None:
        super().__init__(config, target)
        pipeline = target.pipeline
        if pipeline is not None and not getattr(pipeline, "is_video_editing_pipeline", False):
            raise ConfigError(
                f"{config.name} edits an existing video with its own pipeline; use "
                f"diffattn.pipelines.{config.name}.{type(config).__name__.replace('Config', 'Pipeline')}.from_pipe(pipe) "
                f"or `diffattn edit {config.name} --video PATH ...` instead of applying it to {type(pipeline).__name__}"
            )
        if not target.family.frames_in_batch:
            raise UnsupportedModelError(
                f"{config.name} needs a UNet (Stable Diffusion 1.x/2.x, AnimateDiff), whose spatial attention folds "
                f"frames into the batch; {type(target.model).__name__} is a {target.family.name} model"
            )
        self.controller = AttentionController()

    def applies_to(self, layer: LayerInfo) -> bool:
        return layer.role in ("self", "cross")

    def on_install(self, layers: list[LayerInfo]) -> None:
        model = self.target.model
        num_down, num_up = len(model.down_blocks), len(model.up_blocks)
        slots = {}
        for layer in layers:
            place, level = unet_place_level(layer.name, num_down, num_up)
            heads = int(model.get_submodule(layer.name).heads)
            slots[layer.name] = LayerSlot(layer.name, layer.role, place, level, heads)
        self.controller.slots = slots

    def on_remove(self) -> None:
        self.controller.reset()
        self.controller.policies = {}

    # ------------------------------------------------------------------------------------ routing
    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        ctl = self.controller
        policy = ctl.policies.get(call.layer.name)
        if (
            ctl.mode is EditMode.OFF
            or policy is None
            or call.layout.kind not in ("self", "cross")
            or call.attn_mask is not None
            or call.dropout_p
            or call.is_causal
        ):
            return proceed(call)
        if ctl.layout is None:
            raise EditingStateError("the editing controller has a mode but no batch layout")
        if call.layout.kind == "cross":
            return self._cross(call, policy, proceed)
        return self._self(call, policy, proceed)

    def _self(self, call: AttentionCall, policy: LayerPolicy, proceed: Proceed) -> torch.Tensor:
        ctl, ctx, name = self.controller, call.context, policy.name
        guide = policy.guided and ctl.guiding(ctx)
        trace = policy.trajectories is not None and ctl.tracing(ctx)
        store = ctl.mode is EditMode.STORE and policy.edit
        capture = ctl.mode is EditMode.CAPTURE and (policy.edit or policy.guided)
        edit = ctl.mode is EditMode.EDIT and policy.edit and ctl.self_editing(ctx)
        if policy.kv.identity and not (guide or trace or store or capture or edit):
            return proceed(call)
        layout = ctl.layout
        if capture:
            ctl.capture.add_self(name, call.query, call.key)
        query = call.query
        if guide:
            ref_query, ref_key = ctl.reference.query_key(name)
            query = spatial_guidance(query, ref_query, ref_key, ctl.guide_key_scale)
        q, k, v = layout.split(query), layout.split(call.key), layout.split(call.value)
        if store:
            probs = attention_probs(group_query(q, policy.kv.shared), group_kv(k, policy.kv), call.scale)
            ctl.store.add(name, probs)
            out = ungroup(torch.matmul(probs, group_kv(v, policy.kv)), *q.shape[:2], policy.kv.shared)
        else:
            out = frame_attention(q, k, v, policy.kv, call.scale)
        if edit:
            out = self._fuse_self(call, policy, q, k, v, out)
        if trace:
            out = trajectory_attention(layout.split(call.query), k, out, policy.trajectories, ctl.trajectory_key_scale)
        return layout.merge(out)

    def _fuse_self(self, call: AttentionCall, policy: LayerPolicy, q, k, v, out: torch.Tensor) -> torch.Tensor:
        """The cond section: the source's attention, and the edit's own inside the blend mask."""
        ctl = self.controller
        c = ctl.layout.index("cond")
        cond = slice(c, c + 1)
        source = ctl.require_source().self_output(policy.name, policy.kv, v[cond], call.scale)
        if ctl.blend is None:
            fused = source
        else:
            grid = call.layout.grid
            mask = ctl.blend.tokens(grid.height, grid.width).to(out.device, out.dtype)
            mask = mask.view(1, mask.shape[0], 1, mask.shape[1], 1)
            own = out[cond] if policy.edit_kv is None else frame_attention(q[cond], k[cond], v[cond], policy.edit_kv, call.scale)
            fused = source + mask * (own - source)
        out = out.clone()
        out[cond] = fused
        return out

    def _cross(self, call: AttentionCall, policy: LayerPolicy, proceed: Proceed) -> torch.Tensor:
        ctl, ctx, name = self.controller, call.context, policy.name
        keep = ctl.mode in (EditMode.STORE, EditMode.CAPTURE) and (policy.edit or policy.blend)
        edit = ctl.mode is EditMode.EDIT and policy.edit and ctl.cross_editor is not None and ctl.cross_editor.active(ctx.step_index)
        accumulate = ctl.mode is EditMode.EDIT and policy.blend and ctl.target_maps is not None
        if keep:
            probs = attention_probs(call.query, call.key, call.scale)
            if ctl.mode is EditMode.STORE:
                ctl.store.add(name, probs)
            else:
                ctl.capture.add_cross(name, probs)
            return torch.matmul(probs, call.value)
        if not (edit or accumulate):
            return proceed(call)
        rows = ctl.layout.rows("cond")
        probs = attention_probs(call.query[rows], call.key[rows], call.scale)
        if accumulate:  # the edit's own attention, before fusion (as FateZero accumulates it)
            ctl.target_maps.add(probs)
        if edit:
            probs = ctl.cross_editor(ctl.require_source().cross_probs(name), probs, ctx.step_index)
        out = call.dense().clone()
        out[rows] = torch.matmul(probs, call.value[rows])
        return out
