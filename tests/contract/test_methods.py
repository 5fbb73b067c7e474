"""The method contract, checked for every registered method (in the spirit of diffusers' tester mixins).

A method added to the registry is picked up here without listing it: it must declare the contract's attributes,
be exported as `diffattn.<Class>`, round-trip its config, refuse wrong settings with `ConfigError`, parse every
field from the command line, apply and remove atomically on a tiny model it supports (bitwise restore, a second
apply refused), compose with `observe` (or refuse it by design), appear in the demo, the app, `diffattn info` and
the README's table, and work under `torch.compile` where it claims to. Every run is on the tiny models, with the
tiny settings.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
import torch

import diffattn
from diffattn.api import find_denoisers, handle_of
from diffattn.app.catalog import HIGH_RESOLUTION, editor_configs, generation_methods
from diffattn.app.settings import method_panel
from diffattn.cli import build_parser
from diffattn.cli.demos import load_entries
from diffattn.cli.info import collect
from diffattn.cli.options import method_flag, method_settings
from diffattn.config import MethodConfig
from diffattn.errors import AlreadyAppliedError, ConfigError, DiffAttnError, IncompatibleMethodsError
from diffattn.generation import pipeline_frames
from diffattn.method import CATEGORIES, Method, implementation_of, load
from diffattn.registry import methods
from diffattn.testing import FAMILIES, tiny_call_kwargs, tiny_denoiser, tiny_denoiser_inputs, tiny_pipeline

METHODS = sorted(methods())
COMPILING = sorted(name for name, cls in methods().items() if cls.compiles)
KINDS = ("pipeline", "denoiser")


def config_of(name: str) -> MethodConfig:
    """The method's config with its tiny settings."""
    cls = methods()[name]
    return cls.from_dict(dict(cls.tiny_settings))


# ---------------------------------------------------------------------------------------------- subjects
@dataclass
class Subject:
    """What a method is applied to: a tiny pipeline or its denoiser alone, and how to run it once."""

    kind: str
    obj: Any
    run: Callable[[], torch.Tensor]

    def denoisers(self) -> list[torch.nn.Module]:
        return [model for _, model in find_denoisers(self.obj)[1]]


def _subject(model: str, kind: str) -> Subject:
    """A fresh subject of `kind` on the tiny `model`."""
    if kind == "pipeline":
        pipe = tiny_pipeline(model)
        pipe.set_progress_bar_config(disable=True)
        return Subject(kind, pipe, lambda: pipeline_frames(pipe(**tiny_call_kwargs(model))))
    denoiser = tiny_denoiser(model)
    inputs = tiny_denoiser_inputs(model)
    return Subject(kind, denoiser, lambda: denoiser(**inputs, return_dict=False)[0])


@functools.cache
def shared_subject(model: str, kind: str) -> Subject:
    """One subject per tiny model and kind for the whole module: every test leaves it as it found it (and checks)."""
    return _subject(model, kind)


@functools.cache
def stock_output(model: str, kind: str) -> torch.Tensor:
    with torch.no_grad():
        return shared_subject(model, kind).run()


def _state(subject: Subject) -> tuple:
    """What applying may change and removing must restore: the pipeline's class, each attention processor, hooks."""
    processors = [(name, module.processor) for model in subject.denoisers() for name, module in model.named_modules()
                  if hasattr(module, "processor")]
    hooks = [getattr(model, "_diffusers_hook", None) for model in subject.denoisers()]
    hooked = [sorted(hook.hooks) if hook is not None else [] for hook in hooks]
    return type(subject.obj), processors, hooked


def _applies(name: str, kind: str) -> bool:
    """Whether the method applies to this kind of subject (else it refuses by design with a `DiffAttnError`)."""
    subject = shared_subject(methods()[name].tiny_models[0], kind)
    try:
        diffattn.apply(subject.obj, config_of(name)).remove()
    except DiffAttnError:
        return False
    return True


def _working_kind(name: str, preferred: tuple[str, ...] = KINDS) -> str:
    """The first kind of subject, in `preferred` order, that the method applies to."""
    return next(kind for kind in preferred if _applies(name, kind))


# ------------------------------------------------------------------------------------------- declarations
@pytest.mark.parametrize("name", METHODS)
def test_declares_the_contract(name):
    cls = methods()[name]
    assert cls.name == name and cls.description and "\n" not in cls.description
    assert cls.category in CATEGORIES, f"{cls.__name__}.category must be one of {list(CATEGORIES)}"
    assert cls.scope in ("denoiser", "pipeline")
    assert issubclass(implementation_of(cls()), Method)
    assert not cls.runner or callable(load(cls.runner))
    assert cls.tiny_models and set(cls.tiny_models) <= set(FAMILIES), f"{cls.__name__}.tiny_models: {cls.tiny_models}"
    assert set(cls.tiny_settings) <= {f.name for f in dataclasses.fields(cls)}
    assert set(cls.incompatible) <= set(methods())


@pytest.mark.parametrize("name", METHODS)
def test_config_module_mirrors_the_implementation_module(name):
    """`diffattn/configs/<path>.py` is named like the implementation's module under `processors/` or `pipelines/`, or
    like the package holding it (`configs/freeinit.py` - `pipelines/freeinit.py`, `configs/sparse.py` -
    `processors/sparse/sparge.py`)."""
    cls = methods()[name]
    config_path = cls.__module__.removeprefix("diffattn.configs.")
    layer, _, implementation_path = cls.implementation.partition(":")[0].removeprefix("diffattn.").partition(".")
    assert layer in ("processors", "pipelines"), cls.implementation
    assert implementation_path == config_path or implementation_path.startswith(f"{config_path}."), (
        f"{cls.__module__} does not mirror {cls.implementation}"
    )


@pytest.mark.parametrize("name", METHODS)
def test_is_exported_as_diffattn_attribute(name):
    cls = methods()[name]
    assert getattr(diffattn, cls.__name__) is cls and cls.__name__ in diffattn.__all__


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", METHODS)
def test_config_round_trips_through_dict_and_json(name):
    cls = methods()[name]
    for config in (cls(), config_of(name)):
        data = config.to_dict()
        assert data["method"] == name
        assert cls.from_dict(data) == config
        assert cls.from_dict(json.loads(json.dumps(data))) == config


@pytest.mark.parametrize("name", METHODS)
def test_a_wrong_type_for_any_field_raises_config_error_naming_it(name):
    cls = methods()[name]
    for field in dataclasses.fields(cls):
        with pytest.raises(ConfigError, match=field.name):
            cls(**{field.name: object()})
    with pytest.raises(ConfigError, match=f"unknown {name} setting"):
        cls.from_dict({"no_such_setting": 1})


def _cli_text(value: Any) -> str:
    """A field value as typed after its `--<method>-<field>` flag."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


@pytest.mark.parametrize("name", METHODS)
def test_every_field_parses_from_its_command_line_flag(name):
    config = config_of(name)
    parser = build_parser()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        args = parser.parse_args(["generate", method_flag(name, field.name), _cli_text(value)])
        parsed = method_settings(args)[name][field.name]
        assert type(config).from_dict({**config.to_dict(), field.name: parsed}) == config, (field.name, parsed)


# -------------------------------------------------------------------------------------- apply and remove
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", METHODS)
def test_apply_and_remove_restore_bitwise_or_refuse_untouched(name, kind):
    """On the method's tiny model, as a pipeline and as a bare denoiser: either it runs (finite output), a second
    apply is refused, and removing restores processors, hooks, the pipeline's class and the output bitwise; or it
    refuses by design with a `DiffAttnError`, before changing anything."""
    model = methods()[name].tiny_models[0]
    subject, stock = shared_subject(model, kind), stock_output(model, kind)
    before = _state(subject)
    with torch.no_grad():
        try:
            handle = diffattn.apply(subject.obj, config_of(name))
        except DiffAttnError:
            assert _state(subject) == before and handle_of(subject.obj) is None
        else:
            try:
                assert torch.isfinite(subject.run()).all()
                with pytest.raises(AlreadyAppliedError):
                    diffattn.apply(subject.obj, config_of(name))
            finally:
                handle.remove()
        assert _state(subject) == before and handle_of(subject.obj) is None
        assert torch.equal(subject.run(), stock)


@pytest.mark.parametrize("name", METHODS)
def test_applies_to_its_tiny_model(name):
    assert any(_applies(name, kind) for kind in KINDS), f"{name} refuses both its tiny pipeline and its denoiser"


@pytest.mark.parametrize("name", METHODS)
def test_composes_with_observe_or_refuses_by_design(name):
    kind = _working_kind(name)
    model = methods()[name].tiny_models[0]
    subject, stock = shared_subject(model, kind), stock_output(model, kind)
    with torch.no_grad():
        try:
            handle = diffattn.apply(subject.obj, config_of(name), diffattn.ObserveConfig())
        except IncompatibleMethodsError:
            assert name == "observe" or "observe" in methods()[name].incompatible
        else:
            with handle:
                assert torch.isfinite(subject.run()).all()
                assert handle.stats.summary()["calls"] > 0  # observe saw the attention calls
        assert torch.equal(subject.run(), stock)


@pytest.mark.parametrize("name", COMPILING)
def test_works_under_torch_compile_where_it_claims_to(name):
    """The denoiser compiled (dynamo, eager backend) gives the eager output with the method applied (a bare
    denoiser's forward where the method takes one: a pipeline call traces several)."""
    kind = _working_kind(name, preferred=KINDS[::-1])
    subject = _subject(methods()[name].tiny_models[0], kind)  # a fresh one: compiling changes the modules
    torch._dynamo.reset()
    try:
        with torch.no_grad(), diffattn.apply(subject.obj, config_of(name)):
            eager = subject.run()
            for denoiser in subject.denoisers():
                if getattr(denoiser, "_repeated_blocks", None):  # regional compilation, as the README recommends
                    denoiser.compile_repeated_blocks(backend="eager")
                else:
                    denoiser.compile(backend="eager")
            compiled = subject.run()
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    finally:
        torch._dynamo.reset()


def test_some_methods_claim_torch_compile():
    assert {"observe", "sparge", "radial", "psa", "lite", "pab"} <= set(COMPILING)


# ------------------------------------------------------------------------------------------- front ends
@functools.cache
def _demo_methods() -> set[str]:
    return {method for entry in load_entries().values() for method in entry.methods}


@pytest.mark.parametrize("name", METHODS)
def test_has_a_demo_entry(name):
    assert name in _demo_methods()


@pytest.mark.parametrize("name", METHODS)
def test_the_app_offers_it_with_a_widget_per_setting(name):
    attention, noise = generation_methods()
    assert name in {**attention, **noise, **editor_configs()} or name == HIGH_RESOLUTION
    cls = methods()[name]
    with gr.Blocks():
        panel = method_panel({name: cls})
    assert [w.field for w in panel.widgets if w.suffixes] == list(cls.file_settings())
    assert {w.field for w in panel.widgets} == {f.name for f in dataclasses.fields(cls)}


@functools.cache
def _info_methods() -> dict[str, str]:
    return collect()["methods"]


@pytest.mark.parametrize("name", METHODS)
def test_diffattn_info_lists_it(name):
    assert _info_methods()[name] == methods()[name].description


def test_every_field_type_is_one_the_front_ends_know():
    """Flags, widgets and checks follow bool, int, float, str, Literal, tuples and `X | None`: nothing untyped."""
    known = (bool, int, float, str, type(None))
    for cls in methods().values():
        for field, tp in cls.field_types().items():
            parts = [tp]
            while parts:
                part = parts.pop()
                origin = typing.get_origin(part)
                if origin is typing.Literal:
                    continue
                if origin is not None:
                    parts.extend(a for a in typing.get_args(part) if a is not Ellipsis)
                else:
                    assert part in known, f"{cls.__name__}.{field}: {tp}"


def _readme_rows() -> dict[str, str]:
    """Method name -> category, from the README's methods table (`| category | method | name | state |`)."""
    lines = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| category | method | name | state |")
    rows = {}
    for line in itertools.takewhile(lambda text: text.startswith("|"), lines[start + 2:]):
        category, _, name, _ = (cell.strip() for cell in line.strip("|").split("|", 3))
        rows[name.strip("`").split()[-1]] = category
    return rows


@pytest.mark.parametrize("name", METHODS)
def test_has_a_readme_row_under_its_category(name):
    assert _readme_rows().get(name) == methods()[name].category
