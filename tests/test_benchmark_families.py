"""`benchmarks/families.py` builds each family's call as that family's pipeline would, in the dtype the GPU run uses.

The GPU run is bf16; the script's `--tiny` CPU check is float32, where a tensor handed over in the wrong dtype goes
unnoticed (HunyuanVideo 1.5's timestep embedder takes the timestep in the latents' dtype, as its pipeline passes it).
Each family's tiny configuration runs one bf16 forward here.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def scripts():
    """The two scripts as modules; afterwards neither name stays importable (`tests/test_script_names.py`)."""
    names = ("families", "e2e")
    assert not any(name in sys.modules for name in names)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        try:
            yield tuple(importlib.import_module(name) for name in names)
        finally:
            for name in names:
                sys.modules.pop(name, None)


FAMILY_NAMES = ["wan2.2-ti2v-5b", "wan-vace-1.3b", "skyreels-v2-1.3b", "hunyuanvideo-1.5", "ltx-2"]


def test_every_family_is_covered(scripts):
    families, _ = scripts
    assert list(families.FAMILIES) == FAMILY_NAMES


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_family_inputs_run_in_bf16(scripts, name):
    families, e2e = scripts
    spec = families.FAMILIES[name]
    config = {**spec.config, **spec.tiny}
    device = torch.device("cpu")
    model = e2e.build_model(config, device, torch.bfloat16, spec.model_class)
    inputs = spec.inputs(config, spec.tiny_latent, device, torch.bfloat16, torch.Generator().manual_seed(0))
    out = e2e.forward(model, inputs)
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
