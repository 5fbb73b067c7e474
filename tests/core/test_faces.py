"""The package faces: `diffattn`, `diffattn.pipelines` and `diffattn.processors` re-export lazily, like diffusers."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import diffattn
import diffattn.pipelines as pipelines
import diffattn.processors as processors
from diffattn.registry import methods

PIPELINES = ["FreeSwimPipeline", "InitNOPipeline", "FateZeroPipeline", "RealCraftPipeline", "FrescoPipeline"]


@pytest.mark.parametrize("name", PIPELINES)
def test_every_pipeline_imports_from_the_pipelines_package(name):
    cls = getattr(pipelines, name)
    assert cls is getattr(importlib.import_module(pipelines._EXPORTS[name]), name)
    assert name in pipelines.__all__ and name in dir(pipelines)
    assert getattr(diffattn, name) is cls


def test_processors_export_the_contract_and_every_method_implementation_living_there():
    for config in methods().values():
        module, _, name = config.implementation.partition(":")
        if module.startswith("diffattn.processors."):
            assert getattr(processors, name) is getattr(importlib.import_module(module), name)
            assert name in processors.__all__
    from diffattn.processors import AttentionCall, AttentionMethod  # noqa: F401  (the contract)

    assert "AttentionMethod" in processors.__all__


@pytest.mark.parametrize("face", [diffattn, pipelines, processors])
def test_unknown_names_fail_like_a_missing_attribute(face):
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        face.NoSuchThing  # noqa: B018


def test_importing_a_face_loads_no_pipeline_or_method_module():
    """`import diffattn.pipelines` stays cheap: the pipelines' modules load only when a name is used."""
    code = (
        "import sys, diffattn, diffattn.pipelines, diffattn.processors\n"
        "print(sorted(m for m in sys.modules if m.startswith(('diffattn.pipelines.', 'diffattn.processors.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"
