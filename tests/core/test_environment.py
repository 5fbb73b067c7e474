"""`diffattn info` reports the installed version of every dependency, so a drift in a new release is visible."""

from __future__ import annotations

import importlib.metadata
import re

from diffattn.cli.info import collect
from diffattn.environment import dependency_versions


def test_every_declared_dependency_and_the_indirect_ones_are_reported():
    declared = {re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0] for r in importlib.metadata.requires("diffattn")}
    versions = dependency_versions()
    assert declared | {"kernels", "huggingface-hub"} <= set(versions)
    for name in ("torch", "diffusers", "transformers"):
        assert versions[name] == importlib.metadata.version(name)


def test_info_collects_the_dependency_versions():
    assert collect()["packages"] == dependency_versions()
