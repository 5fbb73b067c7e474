"""Method configuration: one frozen dataclass per method, validated on construction, serialisable.

`MethodConfig` is the base every method's config derives from. Its class attributes name the method, say
in one line what it does, point (as a dotted path, so the core never imports processors) to the class that
implements it, and say how it is installed (`diffattn.method` documents them together). `AttentionConfig` adds
the selectors every attention method shares: which layers and which denoising steps run the method and which
stay dense.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from .errors import ConfigError

__all__ = [
    "MethodConfig",
    "AttentionConfig",
    "FileSetting",
    "Phase",
    "check",
    "check_range",
    "conform",
    "describe_type",
    "field_parser",
    "read_settings",
    "write_settings",
]


def check(condition: bool, message: str) -> None:
    """Raise `ConfigError(message)` unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def check_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise `ConfigError` unless `low <= value <= high` (either bound may be open-ended; NaN is never in range)."""
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{name} must lie in {bounds}; got {value!r}")


@dataclass(frozen=True)
class FileSetting:
    """Marks a config field as naming a file: `tuned: Annotated[str | None, FileSetting((".json", ".pt"))]`.

    The app then takes the setting only as an upload with one of `suffixes`, never as a path typed by a client.
    """

    suffixes: tuple[str, ...]


class Phase(str, enum.Enum):
    """What an attention method does at a given step: run (`ACTIVE`) or leave attention dense (`DENSE`).

    Per-step policies are reduced to these few values so `torch.compile` recompiles at most once per phase.
    """

    DENSE = "dense"
    ACTIVE = "active"


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method configuration.

    Subclasses are frozen dataclasses whose fields are the method's settings with the papers' defaults,
    validated in `validate()` (called from `__post_init__`).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    category: ClassVar[str] = ""
    """What kind of method it is: a key of `diffattn.method.CATEGORIES` (the README table and the app group by it)."""
    implementation: ClassVar[str] = ""
    """`"module:Class"` of the implementation (`diffattn.method.Method`); imported by `diffattn.apply`."""
    scope: ClassVar[Literal["denoiser", "pipeline"]] = "denoiser"
    """`"denoiser"`: one implementation per denoiser of a pipeline; `"pipeline"`: one, on the main denoiser."""
    incompatible: ClassVar[frozenset[str]] = frozenset()
    """Names of methods this one cannot be applied together with."""
    incompatible_caches: ClassVar[frozenset[str]] = frozenset()
    """Class names of diffusers cache configs (`transformer.enable_cache(...)`, e.g. `"FasterCacheConfig"`) this
    method refuses to run with, in either order (`diffattn.caches`; docs/composition.md says why for each)."""
    runner: ClassVar[str] = ""
    """`"module:function"` of a custom sampling routine, for methods that need their own loop (e.g. two-stage
    FreeSwim): `function(pipe, methods, call_kwargs) -> (pipeline_output, AttentionStats | None)`."""
    tiny_models: ClassVar[tuple[str, ...]] = ()
    """Built-in tiny models (`diffattn.testing.FAMILIES`) the method runs on; the contract tests and the generic demo
    entry run it on the first."""
    tiny_settings: ClassVar[Mapping[str, Any]] = {}
    """Settings (over the defaults) for a run on the tiny model: what such a run needs (e.g. InitNO's subject words)
    and what keeps it short."""
    compiles: ClassVar[bool] = False
    """Whether the method works with its denoiser compiled by `torch.compile` (the contract tests check it)."""
    infinite_ok: ClassVar[frozenset[str]] = frozenset()
    """Float fields for which +-infinity means something (e.g. a threshold of `-inf`: never); NaN never does."""

    def __post_init__(self) -> None:
        types_ = self.field_types()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):  # accept lists for tuple fields (YAML/JSON), keep configs hashable
                value = tuple(value)
            object.__setattr__(self, field.name, conform(field.name, value, types_[field.name], field.name in self.infinite_ok))
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` when a value is out of range; subclasses extend it (types are checked before)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (`{"method": name, **fields}`), round-trips through `from_dict` and JSON/YAML."""
        data: dict[str, Any] = {"method": self.name}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            data[field.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodConfig:
        """Inverse of `to_dict`; unknown keys raise `ConfigError` naming the valid ones."""
        data = dict(data)
        method = data.pop("method", cls.name)
        if cls.name and method != cls.name:
            raise ConfigError(f"{cls.__name__} cannot load settings of method {method!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.name or cls.__name__} setting(s) {unknown}; valid: {sorted(names)}")
        return cls(**data)

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Resolved type hints of the dataclass fields (the CLI builds its flags from them)."""
        return dict(_field_types(cls))

    @classmethod
    def file_settings(cls) -> dict[str, tuple[str, ...]]:
        """The fields that name a file (annotated with `FileSetting`) -> their accepted suffixes."""
        return dict(_file_settings(cls))


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """`MethodConfig.field_types`, resolved once per class (every construction checks against them)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@functools.cache
def _file_settings(cls: type) -> dict[str, tuple[str, ...]]:
    """`MethodConfig.file_settings`, read once per class from the fields' `Annotated` metadata."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = {}
    for field in dataclasses.fields(cls):
        marks = [m for m in getattr(hints[field.name], "__metadata__", ()) if isinstance(m, FileSetting)]
        if marks:
            found[field.name] = marks[0].suffixes
    return found


class _Mismatch(Exception):
    """A value does not have the declared type (internal to `conform`)."""


def conform(name: str, value: Any, tp: Any, infinite_ok: bool = False) -> Any:
    """`value` checked against the declared type `tp`, ints widened to float where a float is declared.

    bool is not an int; `X | None`, `Literal[...]`, `tuple[X, ...]` and fixed-length tuples are followed; NaN is
    refused everywhere and +-infinity unless `infinite_ok`. Raises `ConfigError` naming `name` and what it takes.
    """
    try:
        value = _conform(value, tp)
    except _Mismatch:
        raise ConfigError(f"{name} must be {describe_type(tp)}; got {value!r} ({type(value).__name__})") from None
    bad = [v for v in _floats(value) if math.isnan(v) or (math.isinf(v) and not infinite_ok)]
    if bad:
        kind = "a number (not NaN)" if infinite_ok else "a finite number (not NaN or infinity)"
        raise ConfigError(f"{name} must be {kind}; got {value!r}")
    return value


def _conform(value: Any, tp: Any) -> Any:
    """`value` as type `tp` (ints widened to float), or raise `_Mismatch`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _conform(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, tuple):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_conform(item, args[0]) for item in value)
        if args and len(value) != len(args):
            raise _Mismatch
        return tuple(_conform(item, arg) for item, arg in zip(value, args)) if args else value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _Mismatch
    return value


def _floats(value: Any) -> list[float]:
    """The floats in a conformed value (itself, or the items of a tuple)."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, tuple):
        return [item for item in value if isinstance(item, float)]
    return []


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", type(None): "None"}
_PLURAL_NAMES = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}


def describe_type(tp: Any) -> str:
    """A declared field type in words, for error messages (`tuple[int, ...]` -> "a list of whole numbers")."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURAL_NAMES.get(args[0]) or 'values, each ' + describe_type(args[0])}"
        return f"{len(args)} values ({', '.join(describe_type(a) for a in args)})"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


@dataclass(frozen=True)
class AttentionConfig(MethodConfig):
    """Selectors shared by every attention method.

    Args:
        layers (`tuple[int, ...]`, *optional*):
            Indices of the transformer blocks (or UNet attention blocks) the method runs in; all when `None`.
        dense_layers (`tuple[int, ...]`, defaults to `()`):
            Block indices that always stay dense, e.g. `(0,)` for the first block.
        dense_steps (`int`, defaults to `0`):
            The first `dense_steps` denoising steps stay dense (quality warm-up).
        dense_last_steps (`int`, defaults to `0`):
            The last `dense_last_steps` denoising steps stay dense (needs the step count, known from the pipeline).
    """

    layers: tuple[int, ...] | None = None
    dense_layers: tuple[int, ...] = ()
    dense_steps: int = 0
    dense_last_steps: int = 0

    def validate(self) -> None:
        super().validate()
        check_range("dense_steps", self.dense_steps, 0)
        check_range("dense_last_steps", self.dense_last_steps, 0)
        for name in ("layers", "dense_layers"):
            value = getattr(self, name)
            if value is not None:
                check(all(i >= 0 for i in value), f"{name} must be non-negative block indices; got {value!r}")

    def runs_in_block(self, block_index: int | None) -> bool:
        """Whether the method is active in the block with this index (`None`: a block-less attention)."""
        if block_index is None:
            return self.layers is None
        if block_index in self.dense_layers:
            return False
        return self.layers is None or block_index in self.layers

    def phase(self, step_index: int, num_steps: int | None) -> Phase:
        """The phase of a denoising step; the last-steps rule applies only when the step count is known."""
        if step_index < self.dense_steps:
            return Phase.DENSE
        if num_steps is not None and self.dense_last_steps and step_index >= num_steps - self.dense_last_steps:
            return Phase.DENSE
        return Phase.ACTIVE


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def field_parser(tp: Any):
    """A callable turning a command-line string into a value of type `tp` (used by the CLI)."""
    if _is_optional(tp):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        parse_inner = field_parser(inner)
        return lambda text: None if text.lower() in ("none", "null") else parse_inner(text)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        parse_item = field_parser(args[0]) if args else str
        return lambda text: tuple(parse_item(part) for part in _split(text))
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    if typing.get_origin(tp) is typing.Literal:
        return str
    return str


def _split(text: str) -> Iterable[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"expected a boolean (true/false); got {text!r}")


def read_settings(path: str | Path, what: str = "a config") -> dict[str, Any]:
    """A settings mapping from a YAML (by suffix) or JSON file.

    A missing or unreadable file, malformed YAML/JSON or anything but a mapping raises `ConfigError`, one line
    naming the file and the problem (with its line and column for syntax errors).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; give the path of {what} file (YAML or JSON)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the path of {what} file (YAML or JSON)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read as {what} file: {_one_line(str(exc))}") from None
    data = _parse_settings(path, text)
    if data is None:
        raise ConfigError(f"{path} is empty; it should hold {what} (a mapping of settings)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold {what} (a mapping of settings); it holds a {type(data).__name__}")
    return data


def _parse_settings(path: Path, text: str) -> Any:
    """Parse `text` as YAML (by `path`'s suffix) or JSON; a syntax error raises a one-line `ConfigError`."""
    import json

    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{path} is not valid YAML{where}: {_one_line(problem)}; fix the file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; fix the file "
            "(or name it .yaml if it holds YAML)"
        ) from None


def _one_line(text: str) -> str:
    """`text` with its lines joined, for messages that must stay on one line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def write_settings(data: Mapping[str, Any], path: str | Path) -> Path:
    """Write settings as YAML (by suffix) or JSON, creating the folder; `read_settings` reads them back."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    else:
        path.write_text(json.dumps(dict(data), indent=2))
    return path
