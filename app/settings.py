"""Settings widgets generated from method config fields, and the way back from widget values to configs.

Every registered method appears with one widget per dataclass field (checkbox, number, dropdown or text,
chosen by the field's type; label and help text from the config's docstring), so a method a colleague adds
shows up in the app without touching it. Widget values reach the event handler as keyword arguments named
`<method>__<field>`, which is also how `gradio_client` callers set them.

Values coming back are checked before any config is built (which then checks types and ranges itself): numbers
must lie within the app's caps (`limits.check_settings`), and a setting that names a file (a field annotated with
`FileSetting`, e.g. Sparge's `tuned`) is an upload widget whose value must be a file the app received (`limits.check_file`): a
path typed by a client is refused without being opened.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import gradio as gr

from diffattn.config import MethodConfig, field_parser
from diffattn.docstrings import field_docs as docstring_field_docs
from diffattn.errors import ConfigError

from .limits import AppLimits, bounded, check_file, check_settings, upload_root

__all__ = ["SettingWidget", "MethodPanel", "method_chooser", "method_panel", "optional_uploads", "field_docs"]



@dataclass(frozen=True)
class SettingWidget:
    """One config field's widget: which method and field it sets, the field's type, the component, and for a field
    that names a file, the accepted suffixes (the widget is then an upload)."""

    method: str
    field: str
    kind: Any
    component: gr.components.Component
    suffixes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Keyword name of this widget's value in event handlers and API calls."""
        return f"{self.method}__{self.field}".replace("-", "_")

    def value(self, raw: Any) -> Any:
        """The widget's value as the field's type (text is parsed like the CLI's `--<method>-<field>` flags)."""
        optional = _optional_inner(self.kind) is not None
        if raw is None or (optional and isinstance(raw, str) and not raw.strip()):
            if optional:
                return None
            raise ConfigError(f"{self.method}: {self.field} needs a value")
        if self.kind is int:  # whole numbers only: no silent truncation of 2.5
            return bounded(f"{self.method}: {self.field}", raw, -math.inf, math.inf)
        try:
            if isinstance(raw, str):
                return field_parser(self.kind)(raw)
            return self.kind(raw) if self.kind in (float, bool) else raw
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.method}: {self.field} cannot be {raw!r} ({exc})") from exc


@dataclass
class MethodPanel:
    """Settings widgets of several methods: the chooser (which methods run; `None`: all), one group each, and the
    limits their values are checked against."""

    registry: dict[str, type[MethodConfig]]
    chooser: gr.CheckboxGroup | gr.Radio | None
    groups: dict[str, gr.Accordion]
    widgets: list[SettingWidget]
    limits: AppLimits

    def inputs_kwargs(self) -> dict[str, gr.components.Component]:
        return {w.key: w.component for w in self.widgets}

    def settings(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """One method's settings `{field: value}` from the widget values (`values` keyed like `inputs_kwargs`),
        within the app's limits; file settings become the paths of files the app received."""
        if name not in self.registry:
            raise ConfigError(f"unknown method {name!r} here; available: {', '.join(self.registry) or 'none'}")
        widgets = [w for w in self.widgets if w.method == name and w.key in values]
        settings = {w.field: w.value(values[w.key]) for w in widgets}
        check_settings(self.registry[name], settings, self.limits)
        for widget in widgets:
            if widget.suffixes and settings[widget.field] is not None:
                settings[widget.field] = str(check_file(settings[widget.field], self.limits, upload_root(),
                                                        what=f"{name} {widget.field} file", suffixes=widget.suffixes))
        return settings

    def configs(self, names: Iterable[str], values: Mapping[str, Any]) -> list[MethodConfig]:
        """Validated configs of the chosen methods from the widget values."""
        configs = []
        for name in names:
            settings = self.settings(name, values)  # checks the name first
            configs.append(self.registry[name].from_dict(settings))
        return configs


def optional_uploads(handler: Callable[..., Any], *panels: MethodPanel) -> Callable[..., Any]:
    """`handler`, declaring the panels' upload settings as keyword parameters that default to `None`.

    Gradio lets API callers leave a parameter out only if its widget has a value or the function's parameter
    defaults to `None`; an upload widget starts empty, and settings arrive through `**kwargs`.
    """
    signature = inspect.signature(handler)
    *named, settings = signature.parameters.values()
    uploads = [inspect.Parameter(w.key, inspect.Parameter.KEYWORD_ONLY, default=None)
               for panel in panels for w in panel.widgets if w.suffixes]
    handler.__signature__ = signature.replace(parameters=[*named, *uploads, settings])  # type: ignore[attr-defined]
    return handler


def method_chooser(registry: Mapping[str, type[MethodConfig]], *, kind: Literal["checkboxes", "radio"], label: str,
                   info: str = "", selected: tuple[str, ...] = (), labels: Mapping[str, str] | None = None,
                   ) -> gr.CheckboxGroup | gr.Radio:
    """Which methods run: checkboxes (any number) or a radio (exactly one); `labels` are display names."""
    choices = [((labels or {}).get(name, name), name) for name in registry]
    if kind == "checkboxes":
        return gr.CheckboxGroup(choices=choices, value=list(selected), label=label, info=info)
    return gr.Radio(choices=choices, value=selected[0] if selected else None, label=label, info=info)


def method_panel(registry: Mapping[str, type[MethodConfig]], chooser: gr.CheckboxGroup | gr.Radio | None = None,
                 initial: Mapping[str, Mapping[str, Any]] | None = None, limits: AppLimits | None = None,
                 ) -> MethodPanel:
    """Build (inside the current Blocks context) each method's settings accordion.

    With a `chooser` only the chosen methods' settings are shown (folded for checkboxes); without one every
    method of `registry` runs and its settings are shown. `initial` replaces config defaults as the widgets'
    starting values (`{method: {field: value}}`). Values are checked against `limits` (default: `AppLimits()`).
    """
    chosen = _as_set(chooser.value) if chooser is not None else set(registry)
    groups, widgets = {}, []
    for name, cls in registry.items():
        folded = isinstance(chooser, gr.CheckboxGroup)
        with gr.Accordion(f"{name} settings", open=not folded, visible=name in chosen,
                          elem_id=f"{name}-settings") as group:
            gr.Markdown(cls.description)
            widgets.extend(_widgets(cls, (initial or {}).get(name, {})))
        groups[name] = group
    if chooser is not None:
        chooser.change(
            lambda value: [gr.Accordion(visible=name in _as_set(value)) for name in groups],
            inputs=chooser, outputs=list(groups.values()),
            api_name=f"show_{str(chooser.label).lower().replace(' ', '_')}_settings", api_visibility="private",
            queue=False,
        )
    return MethodPanel(dict(registry), chooser, groups, widgets, limits or AppLimits())


def _as_set(chosen: str | Iterable[str] | None) -> set[str]:
    if chosen is None:
        return set()
    return {chosen} if isinstance(chosen, str) else set(chosen)


def _widgets(cls: type[MethodConfig], initial: Mapping[str, Any], columns: int = 2) -> list[SettingWidget]:
    """One widget per field, `columns` to a row, the method's own fields first, then inherited ones (e.g. layer and
    step selectors)."""
    docs = field_docs(cls)
    types_ = cls.field_types()
    defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
                for f in dataclasses.fields(cls)}
    files = cls.file_settings()
    defaults.update(initial)
    inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    order = sorted(types_, key=lambda name: name in inherited)
    widgets = []
    for start in range(0, len(order), columns):
        with gr.Row():
            for name in order[start:start + columns]:
                if name in files:
                    component = gr.File(label=f"{name.replace('_', ' ')} ({', '.join(files[name])} upload)",
                                        file_types=list(files[name]), type="filepath")
                else:
                    component = _component(name, types_[name], defaults[name], docs.get(name, ""))
                widgets.append(SettingWidget(cls.name, name, types_[name], component, files.get(name, ())))
    return widgets


def _component(name: str, kind: Any, default: Any, info: str) -> gr.components.Component:
    """Checkbox for booleans, number box for numbers, dropdown for literals, text for the rest.

    Optional values use a text box (empty: automatic) so every widget has a value, which lets API callers
    leave any setting out.
    """
    label = name.replace("_", " ")
    if kind is bool:
        return gr.Checkbox(value=default, label=label, info=info)
    if kind in (int, float):
        return gr.Number(value=default, label=label, info=info, precision=0 if kind is int else None)
    if typing.get_origin(kind) is typing.Literal:
        return gr.Dropdown(choices=list(typing.get_args(kind)), value=default, label=label, info=info)
    inner = _optional_inner(kind)
    text = "" if default is None else ", ".join(map(str, default)) if isinstance(default, tuple) else str(default)
    hints = ["comma-separated" if typing.get_origin(inner or kind) is tuple else "",
             "empty: automatic" if inner else ""]
    return gr.Textbox(value=text, label=label, info=info, placeholder="; ".join(h for h in hints if h) or None)


def _optional_inner(kind: Any) -> Any | None:
    """`X` for `X | None`, else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind):
        return next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return None


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring entry (`diffattn.docstrings.field_docs`), shortened to a help line for a widget."""
    return {name: textwrap.shorten(text, width=160, placeholder=" …") for name, text in docstring_field_docs(cls).items()}
