"""The method contract: what a method is made of, how `diffattn.apply` installs it, and where its code lives.

A method is a **config** class and an **implementation** class.

The config is a frozen dataclass deriving from `MethodConfig` (its fields are the settings), decorated with
`@register_method` in a module of `diffattn/configs/` (every module there is imported, so registered, on first use
of the registry). Its class attributes tell the rest of diffattn what to do with it:

- `name`, `description`: the method's name (`diffattn.apply(pipe, "sparge")`, `--method sparge`) and one line
  for `diffattn info`, `--help` and the app.
- `category`: one of `CATEGORIES` below; groups methods in the README table and the app's tabs.
- `implementation`: `"module:Class"` of the implementation, imported when the method is applied.
- `scope`: `"denoiser"` builds one implementation per denoiser of a pipeline (the two experts of Wan 2.2 A14B each
  get their own, so per-layer state never mixes); `"pipeline"` builds one for the pipeline, on its main denoiser
  (noise initialisation, editing: they act once per pipeline call).
- `runner`: `"module:function"` of a sampling routine, for methods that need their own sampling loop (FreeSwim's
  two stages, InitNO): `function(pipe, configs, call_kwargs) -> (output, AttentionStats | None)`, which
  `diffattn generate` then calls instead of `pipe(...)`. Empty for methods that act inside `pipe(...)`.
- `incompatible`: names of methods it cannot be applied together with.
- `incompatible_caches`: class names of diffusers cache configs (`model.enable_cache(...)`) it refuses to run with,
  in either order (`diffattn.caches`).
- `tiny_models`, `tiny_settings`: the built-in tiny models (`diffattn.testing`) it runs on, and settings that make
  a run there show it acting; the contract tests and the generic `diffattn demo` entry use them.
- `compiles`: whether it works with the denoiser compiled by `torch.compile` (checked by the contract tests).

The implementation is built as `cls(config, target)` (`Target` below) and returns from `parts()` the objects to
install: itself by default (`Method`), or one object per kind of machinery it needs (FreeNoise: an attention part
and a pipeline part). Each part's class declares in its body the `installer` that installs it:

- `installer = AttentionInstaller` (`diffattn.processors.base`, inherited from `AttentionMethod`): wraps the
  attention processors and chains the parts in each layer;
- `installer = PipelineInstaller` (`diffattn.extension`, inherited from `PipelineExtension`): wraps the
  pipeline's `__call__` / `prepare_latents` reversibly.

`apply` groups the parts of every method by installer, builds each installer as `installer(target, parts)`,
installs the groups in order of first appearance and removes them in reverse; `Installer.remove` undoes exactly
what `install` did, so `Handle.remove()` restores the model and pipeline bitwise.

Where the code lives: configs in `diffattn/configs/`, in a module named like the implementation's module or the
package holding it (`configs/freeinit.py` - `pipelines/freeinit.py`, `configs/sparse.py` - `processors/sparse/`);
attention-level implementations and attention parts in `processors/`; pipeline-level implementations (FreeInit,
FreeNoise, InitNO) and their pipeline parts in `pipelines/`; model-free math (filters, schedules, scores, masks)
in `diffattn/noise/` and `diffattn/patterns/`; the machinery every method shares (this contract, `apply`,
`diffattn.extension`) in the core, `diffattn/`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch

    from .config import MethodConfig
    from .context import RunContext
    from .geometry import Family
    from .stats import AttentionStats

__all__ = ["CATEGORIES", "Target", "Installer", "Part", "Method", "load", "implementation_of"]

CATEGORIES: dict[str, str] = {
    "observe": "looks at attention without changing it",
    "sparsity": "skips or cheapens attention work (sparse, cached, reused or 8-bit attention)",
    "windows": "restricts attention to windows, e.g. for resolutions beyond training",
    "editing": "edits an existing video through attention",
    "noise": "chooses or refines the initial noise",
}
"""The values of `MethodConfig.category`, with what a method of each does."""


@dataclass
class Target:
    """What a method is installed on: the denoiser, its pipeline when known, and the shared run state."""

    model: torch.nn.Module
    family: Family
    pipeline: Any | None
    context: RunContext
    stats: AttentionStats
    listeners: list[Callable[[RunContext], None]]
    """Called by the context hook before every forward, after the context is updated."""
    prefix: str = ""
    """Prepended to layer names: empty for the main denoiser, e.g. `"transformer_2."` for a second expert."""


class Installer(Protocol):
    """Installs a group of parts that share machinery on one target; `remove` undoes exactly that."""

    def __init__(self, target: Target, parts: list[Any]) -> None: ...

    def install(self) -> None: ...

    def remove(self) -> None: ...


class Part(Protocol):
    """Something an installer installs: its class names that installer."""

    installer: ClassVar[type[Installer]]


class Method:
    """Base of implementations: built as `cls(config, target)`; `parts()` are what `apply` installs.

    A subclass that is itself a part (an `AttentionMethod` or a `PipelineExtension`) keeps the default `parts()`;
    one made of several parts builds them in `__init__` and returns them from `parts()`.
    """

    def __init__(self, config: MethodConfig, target: Target) -> None:
        self.config = config
        self.target = target

    @property
    def name(self) -> str:
        return self.config.name

    def parts(self) -> tuple[Part, ...]:
        """The objects to install, in order (by default the implementation itself)."""
        return (self,)  # type: ignore[return-value]  # a one-part method's class declares `installer`


def load(path: str) -> Any:
    """The object a `"module:name"` path names (a config's `implementation` or `runner`), importing its module."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def implementation_of(config: MethodConfig) -> type[Method]:
    """The implementation class that `config.implementation` names."""
    return load(config.implementation)
