"""SpargeAttn: plans predicted per call from pooled q/k (`diffattn.kernels.sparge_plan`), and its calibration."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from diffattn.configs.sparse import SpargeConfig
from diffattn.context import LayerInfo
from diffattn.errors import ConfigError
from diffattn.kernels import block_sparse_attention, sparge_plan
from diffattn.method import Target
from diffattn.plan import BlockPlan
from diffattn.processors.sparse.sparge_tuning import SpargeCalibrationConfig, SpargeLayerSettings, SpargeTuning

from ..base import AttentionCall, Proceed
from .common import BlockSparseMethod, SparseLayout, attach_plan, joint_plan, sparse_views

__all__ = [
    "SpargeMethod",
    "SpargeCalibration",
    "sparge_view_plan",
    "autotune_head",
    "select_head_settings",
    "load_spargeattn_parameters",
]

DENSE_SETTING = 1.0
"""theta and tau of a head left dense: no block is self-similar above 1.0, so every block is computed."""
_THETAS = tuple(i / 16 for i in range(-16, 16))
_THETA_BIN = 2 / 16
_MIN_SPARSITY = 0.1
_CDF_TOLERANCE = 1e-3
_PV_RANGE, _PV_TOLERANCE = 50.0, 0.1


_SPARGEATTN_MODULE = ".inner_attention."
_SPARGEATTN_FIELDS = ("simthreshd1", "cdfthreshd", "pvthreshd", "is_sparse")
_SPARGEATTN_RENAMES = ((".self_attn", ".attn1"),)
"""Wan's original module names (which SpargeAttn's Wan example tunes) -> diffusers' names."""


def load_spargeattn_parameters(path: str | Path, block_q: int) -> SpargeTuning:
    """SpargeAttn's tuned per-head parameters (its `extract_sparse_attention_state_dict` saved with `torch.save`)
    as a `SpargeTuning`, so tuned checkpoints run here unchanged.

    The file maps `<layer>.inner_attention.{simthreshd1,cdfthreshd,pvthreshd,is_sparse}` to per-head tensors; it
    is read with `torch.load(weights_only=True)` (tensors only, no code). Error targets and tuning sparsity are
    not in the file and are recorded as NaN.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a tensor state dict
        raise ConfigError(f"cannot read SpargeAttn parameter file {str(path)!r}: {exc}") from exc
    grouped: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in state.items() if isinstance(state, Mapping) else ():
        layer, found, field = str(key).rpartition(_SPARGEATTN_MODULE)
        if found and isinstance(value, torch.Tensor):
            for old, new in _SPARGEATTN_RENAMES:
                layer = layer.replace(old, new)
            grouped[layer][field] = value.detach().flatten()
    if not grouped:
        raise ConfigError(
            f"{str(path)!r} holds no SpargeAttn parameters ('<layer>.inner_attention.cdfthreshd' ...); pass a file "
            "saved from SpargeAttn's extract_sparse_attention_state_dict or one written by diffattn.tune_sparge"
        )
    layers = {}
    for layer, values in grouped.items():
        missing = [f for f in _SPARGEATTN_FIELDS if f not in values]
        if missing:
            raise ConfigError(f"{str(path)!r}: layer {layer!r} lacks {missing}; the file is incomplete")
        heads = values["is_sparse"].numel()
        layers[layer] = SpargeLayerSettings(
            sim_threshold=tuple(values["simthreshd1"].float().tolist()),
            cdf_threshold=tuple(values["cdfthreshd"].float().tolist()),
            pv_threshold=tuple(values["pvthreshd"].float().tolist()),
            sparsity=(math.nan,) * heads,
            dense=tuple((~values["is_sparse"].bool()).tolist()),
        )
    return SpargeTuning(math.nan, math.nan, 0, layers, block_q)


def _load_tuning(config: SpargeConfig) -> SpargeTuning | None:
    """The tuned settings of `config.tuned`: SpargeAttn's `.pt`/`.pth` parameter files or `tune_sparge` JSON."""
    if config.tuned is None:
        return None
    if Path(config.tuned).suffix.lower() in (".pt", ".pth"):
        return load_spargeattn_parameters(config.tuned, config.block_q)
    return SpargeTuning.load(config.tuned)


def _plan_backend(backend: str) -> str:
    """`sparge_plan`'s backend for a method backend (it has no flex path)."""
    return backend if backend in ("triton", "reference") else "auto"


def sparge_view_plan(
    call: AttentionCall,
    *,
    topk: float | None = None,
    cdf_threshold: float | None = None,
    sim_threshold: float | torch.Tensor,
    attention_sink: bool,
    backend: str,
) -> BlockPlan:
    """SpargeAttn's plan for a call on the sparse view: predicted over video x video, text columns kept."""
    layout: SparseLayout = call.layout
    n = layout.video_tokens
    video = sparge_plan(
        call.query, call.key[:, :, :n], block_q=layout.block_q, block_k=layout.block_k, topk=topk,
        cdf_threshold=cdf_threshold, sim_threshold=sim_threshold, attention_sink=attention_sink, scale=call.scale,
        backend=_plan_backend(backend),
    )
    if not layout.text_keys:
        return video
    return joint_plan(video.to_block_mask(), layout)


@dataclass(frozen=True)
class _TunedLayer:
    """A layer's tuned settings on a device: head groups sharing one tau (the planner takes one tau per call)."""

    groups: tuple[tuple[float, torch.Tensor, torch.Tensor], ...]
    """(tau, head indices, their theta) per distinct tau."""
    pv_threshold: torch.Tensor


class SpargeMethod(BlockSparseMethod):
    """Attaches SpargeAttn's predicted plan (global settings, or per-head tuned ones for the layers tuned)."""

    config: SpargeConfig

    def __init__(self, config: SpargeConfig, target: Target) -> None:
        super().__init__(config, target)
        self._tuning = _load_tuning(config)
        if self._tuning is not None and self._tuning.block_q != config.block_q:
            raise ConfigError(
                f"{config.tuned} was tuned with {self._tuning.block_q}-token query blocks but the config uses "
                f"{config.block_q}; set query_block={self._tuning.block_q} or tune again"
            )
        self._tuned: dict[tuple[str, torch.device], _TunedLayer] = {}

    def refine(self, call: AttentionCall) -> AttentionCall:
        options = self.kernel_options()
        settings = self._tuning.layers.get(call.layer.name) if self._tuning is not None else None
        if settings is None:
            plan = sparge_view_plan(
                call, topk=self.config.topk, cdf_threshold=self.config.cdf_threshold,
                sim_threshold=self.config.similarity_threshold, attention_sink=self.config.attention_sink,
                backend=self.config.backend,
            )
            if self.config.pv_threshold is not None:
                options["pv_threshold"] = self.config.pv_threshold
            return attach_plan(call, plan, **options)
        tuned = self._tuned_layer(call.layer.name, settings, call.query.device, call.query.shape[1])
        return attach_plan(call, self._tuned_plan(call, tuned), pv_threshold=tuned.pv_threshold, **options)

    def _tuned_layer(self, name: str, settings: SpargeLayerSettings, device: torch.device, heads: int) -> _TunedLayer:
        key = (name, device)
        if key not in self._tuned:
            if settings.heads != heads:
                raise ConfigError(
                    f"tuned settings for {name} have {settings.heads} heads but the model has {heads}; "
                    "tune again for this model"
                )
            theta = torch.tensor(settings.sim_threshold, dtype=torch.float32, device=device)
            groups = []
            for tau in sorted(set(settings.cdf_threshold)):
                heads_idx = torch.tensor([h for h, t in enumerate(settings.cdf_threshold) if t == tau], device=device)
                groups.append((tau, heads_idx, theta[heads_idx]))
            pv = torch.tensor(settings.pv_threshold, dtype=torch.float32, device=device)
            self._tuned[key] = _TunedLayer(tuple(groups), pv)
        return self._tuned[key]

    def _tuned_plan(self, call: AttentionCall, tuned: _TunedLayer) -> BlockPlan:
        """Per-head tau: one planner call per group of heads sharing a tau, merged into one plan."""
        if len(tuned.groups) == 1:
            tau, _, theta = tuned.groups[0]
            return sparge_view_plan(call, cdf_threshold=tau, sim_threshold=theta, attention_sink=True, backend=self.config.backend)
        layout: SparseLayout = call.layout
        batch, heads = call.query.shape[:2]
        mask = torch.zeros(batch, heads, layout.q_blocks, layout.kv_blocks, dtype=torch.bool, device=call.query.device)
        for tau, heads_idx, theta in tuned.groups:
            part = call.replace(query=call.query[:, heads_idx], key=call.key[:, heads_idx])
            plan = sparge_view_plan(part, cdf_threshold=tau, sim_threshold=theta, attention_sink=True, backend=self.config.backend)
            mask[:, heads_idx] = plan.to_block_mask().expand(batch, -1, -1, -1)
        return joint_plan(mask, layout)

    def on_install(self, layers: list[LayerInfo]) -> None:
        """Refuse tuned settings that name none of the main denoiser's layers (they would silently do nothing)."""
        if self._tuning is None or self.target.prefix or not layers:
            return
        names = {layer.name for layer in layers}
        if not names & set(self._tuning.layers):
            raise ConfigError(
                f"{self.config.tuned} tunes layers such as {sorted(self._tuning.layers)[:3]} but this model's "
                f"sparsifiable layers are named like {sorted(names)[:3]}; tune this model (diffattn.tune_sparge)"
            )

    def on_remove(self) -> None:
        self._tuned.clear()


# ----------------------------------------------------------------------------------------------- tuning
@dataclass(frozen=True)
class Candidate:
    """One tuning result of a head at one theta."""

    sim_threshold: float
    cdf_threshold: float
    pv_threshold: float
    sparsity: float


def _relative_l1(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.float() - reference.float()).abs().sum() / reference.float().abs().sum().clamp_min(1e-30))


def _smallest_passing(passes, low: float, high: float, tolerance: float) -> float:
    """Bisect the smallest value in [low, high] for which the monotone predicate `passes` holds (`high` if none)."""
    while high - low > tolerance:
        middle = (low + high) / 2
        if passes(middle):
            high = middle
        else:
            low = middle
    return high


def autotune_head(call: AttentionCall, reference: torch.Tensor, config: SpargeCalibrationConfig) -> list[Candidate]:
    """SpargeAttn's search for one head (`call` holds that head only, on the sparse view; `reference` its dense output)."""
    options = {} if config.backend == "auto" else {"backend": config.backend}

    def plan(theta: float, tau: float) -> BlockPlan:
        return sparge_view_plan(call, cdf_threshold=tau, sim_threshold=theta, attention_sink=False, backend=config.backend)

    def error(p: BlockPlan, pv: float | None = None) -> float:
        out = block_sparse_attention(call.query, call.key, call.value, p, scale=call.scale, pv_threshold=pv, **options)
        return _relative_l1(out, reference)

    candidates = []
    for theta in _THETAS:
        tau = _smallest_passing(lambda t, theta=theta: error(plan(theta, t)) < config.l1, 0.0, 1.0, _CDF_TOLERANCE)
        chosen = plan(theta, tau)
        pv = _PV_RANGE
        if config.tune_pv:
            pv = _smallest_passing(lambda p, chosen=chosen: error(chosen, p) < config.pv_l1, 0.0, _PV_RANGE, _PV_TOLERANCE)
        sparsity = 1.0 - chosen.density()
        candidates.append(Candidate(theta, tau, pv, sparsity))
        if sparsity < _MIN_SPARSITY:
            break
    return candidates


def select_head_settings(candidates: list[Candidate]) -> tuple[Candidate, bool]:
    """SpargeAttn's choice over a head's accumulated candidates: `(settings, sparse enough)`.

    Candidates are binned by theta (width 1/8); the bin with the largest summed sparsity gives the largest theta,
    tau and P.V threshold in it, and its mean sparsity decides whether the head is worth making sparse.
    """
    bins: dict[int, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        bins[int((candidate.sim_threshold + 1.0) // _THETA_BIN)].append(candidate)
    best = max(bins.values(), key=lambda group: sum(c.sparsity for c in group))
    mean_sparsity = sum(c.sparsity for c in best) / len(best)
    chosen = Candidate(
        max(c.sim_threshold for c in best), max(c.cdf_threshold for c in best), max(c.pv_threshold for c in best),
        mean_sparsity,
    )
    return chosen, mean_sparsity > _MIN_SPARSITY


class SpargeCalibration(BlockSparseMethod):
    """Searches every sparsifiable call per head (`autotune_head`) and returns the exact dense output."""

    config: SpargeCalibrationConfig

    def __init__(self, config: SpargeCalibrationConfig, target: Target) -> None:
        super().__init__(config, target)
        self.calls = 0
        self._candidates: dict[str, dict[int, list[Candidate]]] = defaultdict(lambda: defaultdict(list))
        self._dense: dict[str, set[int]] = defaultdict(set)
        self._heads: dict[str, int] = {}

    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        views = sparse_views(call, self.config) if self.active(call) else ""
        if not isinstance(views, str):
            for view in views:
                self._tune(view.call)
        return proceed(call)

    def _tune(self, call: AttentionCall) -> None:
        name = call.layer.name
        heads = call.query.shape[1]
        self._heads[name] = heads
        self.calls += 1
        reference = F.scaled_dot_product_attention(call.query, call.key, call.value, scale=call.scale)
        for head in range(heads):
            if head in self._dense[name]:
                continue
            one = call.replace(
                query=call.query[:, head : head + 1], key=call.key[:, head : head + 1], value=call.value[:, head : head + 1]
            )
            self._candidates[name][head] += autotune_head(one, reference[:, head : head + 1], self.config)
            if not select_head_settings(self._candidates[name][head])[1]:
                self._dense[name].add(head)

    def settings(self) -> dict[str, SpargeLayerSettings]:
        """The tuned settings of every layer seen so far."""
        result = {}
        for name, heads in self._heads.items():
            values = []
            for head in range(heads):
                chosen, sparse = select_head_settings(self._candidates[name][head])
                if head in self._dense[name] or not sparse:
                    chosen = Candidate(DENSE_SETTING, DENSE_SETTING, chosen.pv_threshold, chosen.sparsity)
                values.append((chosen, head not in self._dense[name] and sparse))
            result[name] = SpargeLayerSettings(
                sim_threshold=tuple(c.sim_threshold for c, _ in values),
                cdf_threshold=tuple(c.cdf_threshold for c, _ in values),
                pv_threshold=tuple(c.pv_threshold for c, _ in values),
                sparsity=tuple(c.sparsity for c, _ in values),
                dense=tuple(not sparse for _, sparse in values),
            )
        return result
