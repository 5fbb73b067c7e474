"""Settings widgets generated from config fields: every registered method's widgets start at its defaults and
give back exactly that config; typed text parses like the CLI flags; bad values name the setting."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pytest

from diffattn.app.limits import AppLimits
from diffattn.app.settings import field_docs, method_chooser, method_panel
from diffattn.config import AttentionConfig
from diffattn.configs import ObserveConfig
from diffattn.errors import ConfigError
from diffattn.registry import methods


def _start_values(panel) -> dict:
    """The widgets' starting values, as the browser would send them back (postprocess, then preprocess)."""
    return {w.key: w.component.preprocess(w.component.postprocess(w.component.value)) for w in panel.widgets}


def test_every_registered_method_round_trips_through_its_widgets():
    registry = methods()
    with gr.Blocks():
        panel = method_panel(registry)
    values = _start_values(panel)
    for name, cls in registry.items():
        fields = set(cls.field_types())
        assert {w.field for w in panel.widgets if w.method == name} == fields, name
        assert panel.configs([name], values) == [cls()], name


def test_chooser_shows_only_the_chosen_methods_settings():
    registry = methods()
    with gr.Blocks():
        chooser = method_chooser(registry, kind="checkboxes", label="Methods", selected=("observe",))
        panel = method_panel(registry, chooser)
    assert [name for name, group in panel.groups.items() if group.visible] == ["observe"]
    assert not panel.groups["observe"].open  # folded: the checkbox list stays short


def test_typed_values_parse_like_cli_flags_and_bad_ones_name_the_setting():
    with gr.Blocks():
        panel = method_panel({"observe": ObserveConfig})
    values = _start_values(panel) | {"observe__layers": "0, 2", "observe__dense_layers": "", "observe__dense_steps": 3}
    assert panel.configs(["observe"], values) == [ObserveConfig(layers=(0, 2), dense_steps=3)]
    assert panel.configs(["observe"], values | {"observe__layers": ""}) == [ObserveConfig(dense_steps=3)]
    with pytest.raises(ConfigError, match="observe: layers cannot be 'first'"):
        panel.configs(["observe"], values | {"observe__layers": "first"})
    with pytest.raises(ConfigError, match="observe: dense_steps needs a value"):
        panel.configs(["observe"], values | {"observe__dense_steps": None})
    with pytest.raises(ConfigError, match="dense_steps must lie in"):
        panel.configs(["observe"], values | {"observe__dense_steps": -1})
    with pytest.raises(ConfigError, match="unknown method 'radial' here; available: observe"):
        panel.configs(["radial"], values)


def test_field_docs_reads_both_docstring_styles_through_the_bases():
    @dataclass(frozen=True)
    class Example(AttentionConfig):
        """An example.

        Args:
            alpha (`float`, *optional*, defaults to `0.5`): first line
                continues here.
            beta (`tuple[int, ...]`, defaults to `(1, 2)`):
                On the next line.
        """

        alpha: float = 0.5
        beta: tuple[int, ...] = (1, 2)

    docs = field_docs(Example)
    assert docs["alpha"] == "first line continues here."
    assert docs["beta"] == "On the next line."
    assert docs["dense_steps"].startswith("The first `dense_steps` denoising steps stay dense")


@pytest.mark.parametrize(("values", "message"), [
    ({"radial__decay_factor": float("nan")}, "radial: decay_factor must be a finite number"),
    ({"radial__decay_factor": "inf"}, "radial: decay_factor must be a finite number"),
    ({"radial__dense_steps": 2.5}, "radial: dense_steps must be a whole number"),
    ({"radial__dense_steps": 10**9}, "radial: dense_steps must lie between"),
], ids=["float_nan", "float_inf", "int_fraction", "int_above_cap"])
def test_bad_setting_values_are_refused_naming_the_setting(values, message):
    registry = {"radial": methods()["radial"]}
    with gr.Blocks():
        panel = method_panel(registry)
    with pytest.raises(ConfigError, match=message):
        panel.configs(["radial"], _start_values(panel) | values)


def test_tuning_file_is_an_upload_and_a_server_path_is_refused_unopened(tmp_path, touches):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    with gr.Blocks():
        panel = method_panel({"sparge": methods()["sparge"]}, limits=AppLimits(upload_dirs=(allowed,)))
    widget = next(w for w in panel.widgets if w.key == "sparge__tuned")
    assert isinstance(widget.component, gr.File) and widget.suffixes == (".json", ".pt")
    bashrc = tmp_path / "home" / ".bashrc.json"
    bashrc.parent.mkdir()
    bashrc.write_text("{}")
    values = _start_values(panel)
    touches.clear()
    with pytest.raises(ConfigError, match="sparge tuned file must be uploaded through the app"):
        panel.configs(["sparge"], values | {"sparge__tuned": str(bashrc)})
    assert touches.of(bashrc) == []
    inside = allowed / "tuning.json"
    inside.write_text("{}")
    assert panel.settings("sparge", values | {"sparge__tuned": str(inside)})["tuned"] == str(inside.resolve())
