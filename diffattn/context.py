"""The run context: what every processor may know about the denoiser call it is part of.

One diffusers `ModelHook` on the root denoiser (`ContextHook`, registered as `"diffattn::context"`) publishes,
before every forward, the latent grid, the text length, the timestep, the step index, the CFG branch and the
phase of each installed method. Processors read the `RunContext`; nothing monkey-patches a forward or relies
on `attention_kwargs`.

Step counting: a step is a distinct timestep, so Wan's separate cond/uncond calls and CogVideoX's batched CFG
both count one step per timestep. A new run starts when the pipeline's scheduler gets a new timestep schedule
(`set_timesteps`), when the timestep rises (model-only use), or when `RunContext.start_run()` is called.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .config import Phase
from .geometry import Family, Grid, bind_forward_args

__all__ = ["RunContext", "LayerInfo", "ContextHook", "CONTEXT_HOOK", "install_context_hook", "remove_context_hook"]

CONTEXT_HOOK = "diffattn::context"


@dataclass(frozen=True)
class LayerInfo:
    """One attention module.

    Args:
        name (`str`): its qualified name in the denoiser, e.g. `"blocks.3.attn1"`.
        index (`int`): its position among all attention modules of the denoiser.
        block (`int`, *optional*): ordinal of the transformer block that holds it (what layer selectors count).
        role (`str`): `"self"`, `"cross"`, `"joint"` (text and video in one sequence), `"temporal"`, `"text"` (text
            refiners) or `"audio"` (LTX-2's attention whose queries are audio tokens; no method joins it).
    """

    name: str
    index: int
    block: int | None
    role: str


@dataclass
class RunContext:
    """State of the current denoiser call, published by `ContextHook` before every forward."""

    family: str
    grid: Grid | None = None
    text_len: int | None = None
    batch: int | None = None
    timestep: float | None = None
    step_index: int = -1
    num_steps: int | None = None
    cfg_branch: str | None = None
    """`"cond"`, `"uncond"`, `"batched"` (one call holds [uncond, cond]) or `None` (no CFG, or unknown)."""
    call_in_step: int = 0
    run_index: int = -1
    phases: dict[str, Phase] = field(default_factory=dict)
    """Phase of each installed method (by method name) for this step."""
    layer: LayerInfo | None = None
    """The attention module being run, set by diffattn's processors."""
    forward_index: int = -1
    _explicit_run: bool = False
    _schedule: Any = None  # the scheduler's timesteps tensor of the current run (shared by all denoisers' hooks)

    def start_run(self, num_steps: int | None = None) -> None:
        """Begin a new run explicitly (e.g. DDIM inversion, whose timesteps rise); the next call is step 0."""
        self.run_index += 1
        self.step_index = -1
        self.timestep = None
        self.num_steps = num_steps
        self._explicit_run = True

    def phase(self, method: str) -> Phase:
        """Phase of an installed method at this step (`ACTIVE` when it has no step schedule)."""
        return self.phases.get(method, Phase.ACTIVE)

    def summary(self) -> dict[str, Any]:
        """Plain-data snapshot (for logs and tests)."""
        return {
            "family": self.family,
            "grid": None if self.grid is None else (self.grid.frames, self.grid.height, self.grid.width),
            "text_len": self.text_len,
            "timestep": self.timestep,
            "step_index": self.step_index,
            "num_steps": self.num_steps,
            "cfg_branch": self.cfg_branch,
            "call_in_step": self.call_in_step,
            "run_index": self.run_index,
        }


class _BranchState(BaseState):
    """Empty per-branch state; the StateManager only carries the pipeline's `cache_context` to us."""

    def reset(self, *args, **kwargs) -> None:
        pass


_TIMESTEP_ARGS = ("timestep", "t")
_GUIDER_BRANCHES = {"pred_cond": "cond", "pred_uncond": "uncond"}
"""`cache_context` names of diffusers' classifier-free guiders (`ClassifierFreeGuidance` and its kin) per branch."""
_TEXT_ARGS = ("encoder_hidden_states",)


class ContextHook(ModelHook):
    """Publishes a `RunContext` before every forward of the root denoiser (`listeners`) and tells `after_forward`
    listeners when a forward has finished."""

    _is_stateful = True  # so the pipeline's `cache_context(name)` reaches our StateManager

    def __init__(
        self,
        context: RunContext,
        family: Family,
        schedule: Callable[[], torch.Tensor | None] | None = None,
        cfg_enabled: Callable[[], bool] | None = None,
        listeners: list[Callable[[RunContext], None]] | None = None,
        after_forward: list[Callable[[RunContext], None]] | None = None,
    ) -> None:
        super().__init__()
        self.context = context
        self.family = family
        self.schedule = schedule or (lambda: None)
        self.cfg_enabled = cfg_enabled or (lambda: False)
        self.listeners = listeners if listeners is not None else []
        self.after_forward = after_forward if after_forward is not None else []
        self.branch_state = StateManager(_BranchState)

    def pre_forward(self, module: torch.nn.Module, *args, **kwargs):
        bound = bind_forward_args(module, args, kwargs)
        ctx = self.context
        ctx.forward_index += 1
        ctx.grid = self.family.grid(module, bound)
        text = next((bound[k] for k in _TEXT_ARGS if isinstance(bound.get(k), torch.Tensor)), None)
        ctx.text_len = int(text.shape[1]) if text is not None and text.ndim == 3 else None
        first = next(v for v in bound.values() if isinstance(v, torch.Tensor))
        ctx.batch = int(first.shape[0])
        self._advance(_timestep_value(next((bound[k] for k in _TIMESTEP_ARGS if k in bound), None)))
        ctx.cfg_branch = self._branch()
        ctx.layer = None
        for listener in self.listeners:
            listener(ctx)
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        for listener in self.after_forward:
            listener(self.context)
        return output

    def _branch(self) -> str | None:
        """The CFG branch: the pipeline's `cache_context` name, else inferred from how the family runs CFG."""
        named = self.branch_state._context
        if named is not None and named.name in ("cond", "uncond"):
            return named.name
        if named is not None and named.name == "cond_uncond":
            return "batched"
        if named is not None:  # diffusers' guiders (pred_cond, pred_uncond), extra guidance passes (LTX-2's uncond_stg)
            return _GUIDER_BRANCHES.get(named.name, named.name)
        if not self.cfg_enabled():
            return None
        if self.family.separate_cfg:  # one call per branch, conditional first (diffusers' Wan/Hunyuan pipelines)
            return "cond" if self.context.call_in_step == 0 else "uncond"
        return "batched"

    def _advance(self, timestep: float | None) -> None:
        """Update run, step and call counters for a call at `timestep`."""
        ctx = self.context
        schedule = self.schedule()
        new_schedule = schedule is not None and schedule is not ctx._schedule
        if schedule is not None:
            ctx._schedule = schedule
        fresh_explicit = ctx._explicit_run and ctx.step_index < 0
        rising = timestep is not None and ctx.timestep is not None and timestep > ctx.timestep and not ctx._explicit_run
        if not fresh_explicit and (new_schedule or rising or ctx.run_index < 0):
            ctx.run_index += 1
            ctx.step_index = -1
            ctx.timestep = None
            ctx.num_steps = _steps_left(schedule, timestep)
            ctx._explicit_run = False
        if ctx.step_index < 0 or timestep is None or not math.isclose(timestep, ctx.timestep, rel_tol=0, abs_tol=1e-6):
            ctx.step_index += 1
            ctx.call_in_step = 0
        else:
            ctx.call_in_step += 1
        ctx.timestep = timestep

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.branch_state.reset()
        return module


def _timestep_value(timestep: Any) -> float | None:
    """The call's timestep; for per-token timesteps (Wan 2.2 TI2V keeps conditioning tokens at 0) the largest."""
    if timestep is None:
        return None
    if isinstance(timestep, torch.Tensor):
        return float(timestep.detach().max().item()) if timestep.numel() else None
    return float(timestep)


def _steps_left(schedule: torch.Tensor | None, timestep: float | None) -> int | None:
    """Distinct timesteps from `timestep` to the end of `schedule` (the run's step count), if both are known."""
    if schedule is None or timestep is None or schedule.numel() == 0:
        return None
    values = torch.unique_consecutive(schedule.detach().flatten().cpu().double())
    position = int((values - timestep).abs().argmin())
    return int(values.numel() - position)


def install_context_hook(model: torch.nn.Module, hook: ContextHook) -> None:
    """Register `hook` on `model` under `CONTEXT_HOOK`."""
    HookRegistry.check_if_exists_or_initialize(model).register_hook(hook, CONTEXT_HOOK)


def remove_context_hook(model: torch.nn.Module) -> None:
    """Remove the context hook from `model` if present, keeping any hook registered after it working.

    diffusers' `HookRegistry.remove_hook` points the next hook's `forward` at the removed hook's inner forward; for
    a hook that replaces the forward (`new_forward`, e.g. FasterCache's denoiser hook) that drops its replacement
    and leaves it calling the removed hook. Here the next hook gets its replacement back and calls the inner forward.
    """
    registry = getattr(model, "_diffusers_hook", None)
    if registry is None or registry.get_hook(CONTEXT_HOOK) is None:
        return
    index = registry._hook_order.index(CONTEXT_HOOK)
    above = registry._fn_refs[index + 1] if index + 1 < len(registry._fn_refs) else None
    replacement = above.forward if above is not None and above.original_forward is not None else None
    registry.remove_hook(CONTEXT_HOOK, recurse=False)
    if replacement is not None:
        above.original_forward, above.forward = above.forward, replacement
