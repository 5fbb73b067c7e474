"""`diffattn.apply` and the `Handle` it returns.

`apply(pipe_or_model, *configs_or_names, **settings)` installs one or more methods on a diffusers pipeline
(its transformer or UNet is found) or directly on a denoiser model, atomically: if anything fails midway,
everything installed so far is removed again before the error propagates. `Handle.remove()` restores the
exact original objects, so outputs afterwards are bitwise identical to before.

Each method config names (as a dotted path) the class implementing it; the parts of every implementation that
share an installer (all attention parts share one set of processors, for example) are installed together by it
(`diffattn.method` describes the contract).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from .caches import check_caches
from .config import AttentionConfig, MethodConfig
from .context import ContextHook, RunContext, install_context_hook, remove_context_hook
from .errors import AlreadyAppliedError, IncompatibleMethodsError, UnsupportedModelError
from .geometry import family_of
from .method import Installer, Method, Target, implementation_of
from .registry import resolve_configs
from .stats import AttentionStats

__all__ = ["apply", "Handle", "find_denoisers", "handle_of"]

logger = logging.getLogger("diffattn")

_HANDLE_ATTR = "_diffattn_handle"
_DENOISER_ATTRS = ("transformer", "transformer_2", "unet")


def find_denoisers(obj: Any) -> tuple[Any | None, list[tuple[str, torch.nn.Module]]]:
    """Split a pipeline or model into `(pipeline or None, [(component name, denoiser), ...])`.

    Pipelines with two experts (Wan 2.2 A14B: `transformer` for high noise, `transformer_2` for low noise) give
    both. Raises `UnsupportedModelError` for anything that is neither a supported pipeline nor a denoiser.
    """
    if isinstance(obj, torch.nn.Module):
        family_of(obj)
        return None, [("", obj)]
    components = getattr(obj, "components", None)
    if isinstance(components, dict):
        models = [(attr, components[attr]) for attr in _DENOISER_ATTRS if isinstance(components.get(attr), torch.nn.Module)]
        if models:
            for _, model in models:
                family_of(model)
            return obj, models
        raise UnsupportedModelError(
            f"{type(obj).__name__} has no transformer or unet component; diffattn needs a diffusion denoiser"
        )
    raise UnsupportedModelError(
        f"expected a diffusers DiffusionPipeline or a denoiser model (torch.nn.Module); got {type(obj).__name__}"
    )


def handle_of(obj: Any) -> Handle | None:
    """The handle currently applied to a pipeline's denoiser or a model, if any."""
    try:
        _, models = find_denoisers(obj)
    except UnsupportedModelError:
        return None
    return getattr(models[0][1], _HANDLE_ATTR, None)


def _check_composition(configs: list[MethodConfig]) -> None:
    seen: dict[str, MethodConfig] = {}
    for config in configs:
        if config.name in seen:
            raise IncompatibleMethodsError(f"method {config.name!r} was given twice; pass it once")
        for other in seen:
            if other in config.incompatible or config.name in type(seen[other]).incompatible:
                raise IncompatibleMethodsError(
                    f"methods {other!r} and {config.name!r} cannot be applied together; apply one of them"
                )
        seen[config.name] = config


class Handle:
    """The installed methods on one pipeline's denoiser(s). Use `remove()` or a `with` block to take them off.

    Attributes:
        configs: the method configs, in the order given.
        stats (`AttentionStats`): per layer and step: density, skipped tiles, time; per method the calls it acted
            on. A method that acted on no call of a pipeline call (all dense steps, too few tokens, ...) is named
            with why in one `diffattn` log warning for that call, and in `stats.summary()["never_ran"]`.
        context (`RunContext`): what the processors see for the current call (shared by all denoisers).
        pipeline, model, models: the pipeline (if one was given), its main denoiser, and all its denoisers.
        methods (`list[Method]`): the implementations on the main denoiser, in the order of `configs`.
    """

    def __init__(self, pipeline: Any | None, models: list[tuple[str, torch.nn.Module]], configs: list[MethodConfig]) -> None:
        self.pipeline = pipeline
        self.models = [model for _, model in models]
        self.model = self.models[0]
        self.configs = tuple(configs)
        self.family = family_of(self.model)
        self.stats = AttentionStats()
        self.context = RunContext(family=self.family.name)
        listeners: list[Callable[[RunContext], None]] = [self._refuse_caches, self._update_phases]
        self.targets = [
            Target(model, family_of(model), pipeline, self.context, self.stats, listeners, f"{name}." if i else "")
            for i, (name, model) in enumerate(models)
        ]
        self.target = self.targets[0]
        # One implementation per denoiser for scope "denoiser" (per-layer state must not mix experts); one on the
        # main denoiser for scope "pipeline" (noise initialisation, editing act once per pipeline call).
        self._instances: list[list[Method]] = [
            [implementation_of(c)(c, target) for c in configs if i == 0 or c.scope == "denoiser"]
            for i, target in enumerate(self.targets)
        ]
        self.methods = self._instances[0]
        self._installers: list[Installer] = []
        self._hooked: list[torch.nn.Module] = []
        self._removed = False
        self._run, self._run_steps, self._reported = -1, None, -1

    # --------------------------------------------------------------------------------- lifecycle
    def _install(self) -> None:
        for target, instances in zip(self.targets, self._instances):
            hook = ContextHook(
                self.context, target.family, self._schedule, self._cfg_enabled, target.listeners, [self._after_forward]
            )
            install_context_hook(target.model, hook)
            self._hooked.append(target.model)
            setattr(target.model, _HANDLE_ATTR, self)
            groups: dict[type[Installer], list[Any]] = {}
            for method in instances:
                for part in method.parts():
                    groups.setdefault(type(part).installer, []).append(part)
            for installer_cls, members in groups.items():
                installer = installer_cls(target, members)
                self._installers.append(installer)
                installer.install()

    def remove(self) -> None:
        """Take every method off and restore the original processors, hooks and pipeline; idempotent."""
        if self._removed:
            return
        self._report_run()
        errors = []
        for installer in reversed(self._installers):
            try:
                installer.remove()
            except Exception as exc:  # keep removing the rest; report the first failure
                errors.append(exc)
        self._installers.clear()
        for model in self._hooked:
            remove_context_hook(model)
        for model in self.models:
            if getattr(model, _HANDLE_ATTR, None) is self:
                delattr(model, _HANDLE_ATTR)
        self._removed = True
        if errors:
            raise errors[0]

    @property
    def active(self) -> bool:
        return not self._removed

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        names = ", ".join(c.name for c in self.configs)
        state = "active" if self.active else "removed"
        return f"Handle({names}; {type(self.model).__name__}; {state})"

    # ------------------------------------------------------------------------------ run context
    def _schedule(self) -> torch.Tensor | None:
        scheduler = getattr(self.pipeline, "scheduler", None)
        timesteps = getattr(scheduler, "timesteps", None)
        return timesteps if isinstance(timesteps, torch.Tensor) else None

    def _cfg_enabled(self) -> bool:
        """Whether the pipeline is running classifier-free guidance."""
        flag = getattr(self.pipeline, "do_classifier_free_guidance", None)
        if flag is None:
            flag = (getattr(self.pipeline, "guidance_scale", None) or 0) > 1
        return bool(flag)

    def _refuse_caches(self, ctx: RunContext) -> None:
        """Before every denoiser call: a diffusers cache enabled after `apply` is refused like one enabled before."""
        check_caches(self.configs, self.models)

    def _update_phases(self, ctx: RunContext) -> None:
        if ctx.run_index != self._run:
            self._report_run()
            self._run, self._run_steps = ctx.run_index, ctx.num_steps
        ctx.phases = {
            c.name: c.phase(ctx.step_index, ctx.num_steps) for c in self.configs if isinstance(c, AttentionConfig)
        }

    def _after_forward(self, ctx: RunContext) -> None:
        """After a forward of the run's last step (when the step count is known), report the run."""
        if ctx.num_steps is not None and ctx.step_index >= ctx.num_steps - 1:
            self._report_run()

    def _report_run(self) -> None:
        """Log, once per run and in one line, the methods that never ran in it or left calls dense (and why)."""
        if self._run < 0 or self._reported == self._run or not self.stats.enabled:
            return
        self._reported = self._run
        line = self.stats.run_report(self._run, self._run_steps)
        if line is not None:
            logger.warning("diffattn: %s", line)


def apply(target: Any, *methods: MethodConfig | str | dict, **settings: Any) -> Handle:
    """Install methods on a pipeline or denoiser model and return the `Handle` that removes them.

    Args:
        target: a diffusers `DiffusionPipeline` (its `transformer` or `unet` is used, and `transformer_2` too
            for two-expert pipelines such as Wan 2.2 A14B) or the denoiser itself.
        *methods: method configs (e.g. `diffattn.RadialConfig(dense_steps=12)`), method names, or settings
            dicts with a `"method"` key. Several methods compose where they can (see each config).
        **settings: settings for the single method given by name, e.g. `apply(pipe, "sparge", topk=0.5)`.

    Raises:
        UnsupportedModelError: `target` is not a supported pipeline or denoiser.
        UnknownMethodError / ConfigError: a method name or setting is invalid.
        AlreadyAppliedError: diffattn is already applied to this denoiser.
        IncompatibleMethodsError: the methods cannot be applied together, or one refuses the diffusers cache
            enabled on the denoiser (`diffattn.caches`; the same error at the first call if the cache comes later).
    """
    configs = resolve_configs(methods, settings)
    pipeline, models = find_denoisers(target)
    existing = next((getattr(m, _HANDLE_ATTR) for _, m in models if getattr(m, _HANDLE_ATTR, None) is not None), None)
    if existing is not None:
        raise AlreadyAppliedError(
            f"diffattn is already applied to this {type(existing.model).__name__} "
            f"({', '.join(c.name for c in existing.configs)}); call handle.remove() before applying "
            f"{', '.join(c.name for c in configs)}, or pass all methods in one apply() call"
        )
    _check_composition(configs)
    check_caches(configs, [model for _, model in models])
    handle = Handle(pipeline, models, configs)
    try:
        handle._install()
    except BaseException:
        handle.remove()
        raise
    return handle
