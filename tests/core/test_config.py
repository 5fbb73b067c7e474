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
