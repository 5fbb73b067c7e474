"""Configs, registry and apply's argument handling."""

import dataclasses
import json

import pytest

import diffattn
from diffattn.config import AttentionConfig, Phase
from diffattn.errors import ConfigError, UnknownMethodError
from diffattn.registry import get_method, methods, resolve_configs


def test_registry_lists_methods_with_descriptions():
    registry = diffattn.methods()
    assert "observe" in registry
    for name, cls in registry.items():
        assert cls.name == name and cls.description and ":" in cls.implementation


def test_unknown_method_suggests_closest():
    with pytest.raises(UnknownMethodError, match="Did you mean 'observe'"):
        get_method("obsrve")


def test_every_config_round_trips_through_json():
    for cls in methods().values():
        config = cls()
        again = cls.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config and dataclasses.is_dataclass(again)


def test_config_is_frozen_and_lists_become_tuples():
    config = diffattn.ObserveConfig(layers=[0, 2], dense_layers=[1])
    assert config.layers == (0, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dense_steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "settings", [{"dense_steps": -1}, {"dense_last_steps": -2}, {"layers": (-1,)}, {"dense_layers": ("a",)}]
)
def test_invalid_values_raise_config_error(settings):
    with pytest.raises(ConfigError):
        diffattn.ObserveConfig(**settings)


def test_from_dict_rejects_unknown_keys_and_other_methods():
    with pytest.raises(ConfigError, match="unknown observe setting"):
        diffattn.ObserveConfig.from_dict({"dense_stpes": 2})
    with pytest.raises(ConfigError, match="cannot load settings of method"):
        diffattn.ObserveConfig.from_dict({"method": "radial"})


def test_resolve_names_with_keywords():
    (config,) = resolve_configs(("observe",), {"dense_steps": 3})
    assert config == diffattn.ObserveConfig(dense_steps=3)
    with pytest.raises(ConfigError, match="exactly one method"):
        resolve_configs((diffattn.ObserveConfig(),), {"dense_steps": 3})
    with pytest.raises(ConfigError, match="unknown observe setting"):
        resolve_configs(("observe",), {"topk": 0.5})
    with pytest.raises(ConfigError, match="no method given"):
        resolve_configs((), {})


def test_phase_from_dense_steps_and_last_steps():
    config = AttentionConfig(dense_steps=2, dense_last_steps=1)
    phases = [config.phase(i, 5) for i in range(5)]
    assert phases == [Phase.DENSE, Phase.DENSE, Phase.ACTIVE, Phase.ACTIVE, Phase.DENSE]
    assert config.phase(4, None) is Phase.ACTIVE  # step count unknown: last-steps rule cannot apply


def test_block_selectors():
    config = AttentionConfig(layers=(0, 1, 2), dense_layers=(1,))
    assert [config.runs_in_block(i) for i in range(4)] == [True, False, True, False]
    assert AttentionConfig().runs_in_block(None)


# ------------------------------------------------------------------------------------- generic type checks
def _fields_of_type(kind: type) -> list[tuple[type, str]]:
    """(config class, field) for every registered config field declared `kind` or `kind | None`."""
    found = []
    for cls in methods().values():
        for name, tp in cls.field_types().items():
            if tp is kind or tp == (kind | None):
                found.append((cls, name))
    return found


@pytest.mark.parametrize("cls, field", _fields_of_type(int), ids=lambda x: getattr(x, "name", x))
@pytest.mark.parametrize("value", [True, 2.5, "3"])
def test_int_field_refuses_bool_fraction_and_text(cls, field, value):
    with pytest.raises(ConfigError, match=f"{field} must be a whole number"):
        cls(**{field: value})


@pytest.mark.parametrize("cls, field", _fields_of_type(float), ids=lambda x: getattr(x, "name", x))
def test_float_field_refuses_nan_infinity_and_bool(cls, field):
    for value in (float("nan"), float("inf"), True):
        if value == float("inf") and field in cls.infinite_ok:
            continue
        with pytest.raises(ConfigError, match=f"{field} must be"):
            cls(**{field: value})


def test_topk_true_and_dense_steps_fraction_are_refused():
    with pytest.raises(ConfigError, match=r"topk must be a number or None; got True \(bool\)"):
        diffattn.SpargeConfig(topk=True)
    with pytest.raises(ConfigError, match=r"dense_steps must be a whole number; got 2.5 \(float\)"):
        diffattn.RadialConfig(dense_steps=2.5)


def test_int_is_accepted_for_float_fields_and_stored_as_float():
    config = diffattn.get_method("psa")(cutoffs=[0, 0.5, 0.6, 1], min_full=0)
    assert config.cutoffs == (0.0, 0.5, 0.6, 1.0) and all(type(c) is float for c in config.cutoffs)
    assert type(config.min_full) is float


def test_infinity_only_where_it_means_something():
    assert diffattn.LiteAttentionConfig(threshold=float("-inf")).threshold == float("-inf")  # never skips
    with pytest.raises(ConfigError, match="threshold must be a number \\(not NaN\\)"):
        diffattn.LiteAttentionConfig(threshold=float("nan"))
    with pytest.raises(ConfigError, match="sim_threshold must be a finite number"):
        diffattn.SpargeConfig(sim_threshold=float("-inf"))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"layers": (True,)}, "layers must be a list of whole numbers or None"),
        ({"dense_layers": (1.5,)}, "dense_layers must be a list of whole numbers"),
        ({"attention_sink": 1}, "attention_sink must be true or false"),
        ({"backend": 3}, "backend must be a string"),
    ],
)
def test_tuple_bool_and_str_fields_check_their_items(settings, message):
    with pytest.raises(ConfigError, match=message):
        diffattn.SpargeConfig(**settings)


def test_literal_and_fixed_length_tuple_fields():
    with pytest.raises(ConfigError, match="filter must be one of 'butterworth', 'gaussian', 'ideal', 'box'; got 'sharp'"):
        diffattn.get_method("freeinit")(filter="sharp")
    with pytest.raises(ConfigError, match=r"per_frame_steps must be 2 values \(a number, a number\)"):
        diffattn.get_method("freenoise")(per_frame_steps=(0.1, 0.2, 0.3))
    with pytest.raises(ConfigError, match="kv_frames must be a list of values, each a string or a whole number"):
        diffattn.get_method("fatezero")(kv_frames=(True,))


@pytest.mark.parametrize("settings", [{"window_radius": (0, 4)}, {"window_radius": (4, 0)}, {"base_height": 16, "base_width": 32}])
def test_freeswim_window_radius_zero_is_refused(settings):
    with pytest.raises(ConfigError, match="radius"):
        diffattn.get_method("freeswim")(**settings)


def test_every_config_constructs_with_defaults_and_example_edit_configs_load():
    from diffattn.pipelines.edit_job import EXAMPLE_CONFIGS, load_edit_spec

    for cls in methods().values():
        assert cls() == cls.from_dict(cls().to_dict())
    examples = sorted(EXAMPLE_CONFIGS.glob("*.yaml"))
    assert len(examples) >= 5
    for path in examples:
        load_edit_spec(path).config()


# ------------------------------------------------------------------------------------------- read_settings
@pytest.mark.parametrize(
    "name, text, message",
    [
        ("missing.yaml", None, r"missing\.yaml does not exist"),
        ("broken.yaml", "a: [1, 2\nb: 3\n", r"broken\.yaml is not valid YAML at line 2, column 2: expected ',' or ']'"),
        ("broken.json", '{"a": 1,}', r"broken\.json is not valid JSON at line 1, column 9: Expecting property name"),
        ("list.yaml", "- 1\n- 2\n", r"list\.yaml does not hold a config \(a mapping of settings\); it holds a list"),
        ("empty.yaml", "", r"empty\.yaml is empty"),
        ("binary.json", b"\xff\xfe\x00", r"binary\.json cannot be read as a config file"),
    ],
)
def test_read_settings_missing_or_malformed_file_is_one_line_config_error(tmp_path, name, text, message):
    from diffattn.config import read_settings

    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        read_settings(path)
    assert "\n" not in str(info.value)
