"""Pipeline parts: how methods wrap a pipeline's `__call__` and `prepare_latents`, reversibly.

Core machinery of every pipeline-level method (`diffattn.method`): a method's pipeline part derives from
`PipelineExtension`, whose installer is `PipelineInstaller`. The methods themselves live in `diffattn.pipelines`
(FreeInit, FreeNoise's sampling part, InitNO's redirect), their model-free math in `diffattn.noise`.

`pipe(...)` looks `__call__` up on the pipeline's *class*, so an instance attribute cannot wrap it. Attaching the
first extension therefore gives that one pipeline instance a dynamically created subclass of its own class
(same name, module and docstring; `isinstance` checks still hold; other instances are untouched) whose
`__call__` and `prepare_latents` run the attached extensions around the originals. Detaching the last extension
restores `pipe.__class__`, so the pipeline is exactly as before: nothing is monkey-patched on any class, and no
pipeline code is copied.

Extensions form a chain ordered by `order` (outer first), like attention methods:

- `around_call(pipe, proceed, arguments)`: `arguments` is the call's keyword arguments with the pipeline's
  defaults filled in; call `proceed(arguments)` (possibly changed, possibly several times) to run the rest.
- `around_prepare_latents(pipe, proceed, arguments)`: same for `prepare_latents`, whose result (a tensor, or a
  tuple whose first element is the latents for image-to-video pipelines) is the initial noise of the loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from .errors import UnsupportedModelError
from .method import Method, Target

__all__ = ["PipelineExtension", "PipelineInstaller", "attach", "detach", "extensions_of", "call_arguments", "first_latents"]

_EXTENSIONS = "_diffattn_pipeline_extensions"
Proceed = Callable[[dict[str, Any]], Any]


class PipelineInstaller:
    """Installer of pipeline parts (`PipelineExtension`): attaches each to the target's pipeline; `remove` detaches
    them, restoring the pipeline's class when the last one goes."""

    def __init__(self, target: Target, parts: list[PipelineExtension]) -> None:
        self.target = target
        self.parts = parts
        self._attached: list[PipelineExtension] = []

    def install(self) -> None:
        if self.target.pipeline is None:
            raise UnsupportedModelError(
                f"{', '.join(part.name for part in self.parts)} wraps a pipeline's sampling; apply it to the pipeline, "
                "not to its denoiser"
            )
        for part in self.parts:
            attach(self.target.pipeline, part)
            self._attached.append(part)

    def remove(self) -> None:
        for part in reversed(self._attached):
            detach(self.target.pipeline, part)
        self._attached.clear()


class PipelineExtension(Method):
    """Base of pipeline parts (and of pipeline-only implementations); the defaults pass everything through."""

    installer = PipelineInstaller
    order: ClassVar[int] = 100
    """Position in the chain: lower runs outside (e.g. FreeInit's loop, 0, wraps FreeNoise's prompts, 50)."""

    def around_call(self, pipe: Any, proceed: Proceed, arguments: dict[str, Any]) -> Any:
        return proceed(arguments)

    def around_prepare_latents(self, pipe: Any, proceed: Proceed, arguments: dict[str, Any]) -> Any:
        return proceed(arguments)


def call_arguments(function: Callable, instance: Any, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments by name, defaults filled in, `**kwargs` flattened (so `function(instance, **result)` works)."""
    signature = inspect.signature(function)
    bound = signature.bind(instance, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(signature.parameters)))
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(arguments.pop(name, {}))
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL and arguments.get(name):
            raise TypeError(f"{function.__qualname__} got extra positional arguments; pass them by name")
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            arguments.pop(name, None)
    return arguments


def first_latents(prepared: Any) -> torch.Tensor:
    """The latents of a `prepare_latents` result (a tensor, or a tuple led by the latents)."""
    return prepared[0] if isinstance(prepared, tuple) else prepared


def extensions_of(pipe: Any) -> list[PipelineExtension]:
    """The extensions attached to `pipe`, outer first (empty when none)."""
    return list(pipe.__dict__.get(_EXTENSIONS, ()))


def _run(chain: list[PipelineExtension], hook: str, pipe: Any, original: Callable, arguments: dict[str, Any], position: int = 0) -> Any:
    if position == len(chain):
        return original(pipe, **arguments)
    proceed = functools.partial(_run, chain, hook, pipe, original, position=position + 1)
    return getattr(chain[position], hook)(pipe, proceed, arguments)


@functools.cache
def _patched_class(base: type) -> type:
    """The per-instance subclass of `base` that routes `__call__` and `prepare_latents` through the extensions."""
    original_call = base.__call__
    original_prepare = base.prepare_latents

    @functools.wraps(original_call)
    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        arguments = call_arguments(original_call, self, args, kwargs)
        return _run(extensions_of(self), "around_call", self, original_call, arguments)

    @functools.wraps(original_prepare)
    def prepare_latents(self, *args, **kwargs):
        arguments = call_arguments(original_prepare, self, args, kwargs)
        return _run(extensions_of(self), "around_prepare_latents", self, original_prepare, arguments)

    namespace = {
        "__call__": __call__,
        "prepare_latents": prepare_latents,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "_diffattn_base_class": base,
    }
    return type(base.__name__, (base,), namespace)


def attach(pipe: Any, extension: PipelineExtension) -> None:
    """Add `extension` to `pipe` (patching its class on the first one)."""
    if not callable(getattr(type(pipe), "prepare_latents", None)):
        raise UnsupportedModelError(
            f"{type(pipe).__name__} has no prepare_latents method, so diffattn cannot reach its initial noise"
        )
    extensions = pipe.__dict__.get(_EXTENSIONS)
    if extensions is None:
        extensions = []
        pipe.__dict__[_EXTENSIONS] = extensions
        pipe.__class__ = _patched_class(type(pipe))
    extensions.append(extension)
    extensions.sort(key=lambda e: e.order)


def detach(pipe: Any, extension: PipelineExtension) -> None:
    """Remove `extension`; with the last one gone, `pipe` gets its original class back."""
    extensions = pipe.__dict__.get(_EXTENSIONS)
    if extensions is None or extension not in extensions:
        return
    extensions.remove(extension)
    if not extensions:
        del pipe.__dict__[_EXTENSIONS]
        pipe.__class__ = type(pipe)._diffattn_base_class

