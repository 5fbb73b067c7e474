"""`benchmarks/families.py` builds each family's call as that family's pipeline would, in the dtype the GPU run uses.

The GPU run is bf16; the script's `--tiny` CPU check is float32, where a tensor handed over in the wrong dtype goes
unnoticed (HunyuanVideo 1.5's timestep embedder takes the timestep in the latents' dtype, as its pipeline passes it).
Each family's tiny configuration runs one bf16 forward here.
"""

from __future__ import annotations

import pytest
import torch

from tests.benchmark_scripts import benchmark_scripts


@pytest.fixture(scope="module")
def scripts():
    with benchmark_scripts("families", "e2e") as modules:
        yield modules


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
