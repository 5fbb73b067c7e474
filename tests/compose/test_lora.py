"""LoRA loaded and hot-swapped through the pipeline's `load_lora_weights` after `diffattn.apply` (tiny Wan).

A LoRA made in code with peft on the tiny transformer is saved with the pipeline's `save_lora_weights`; loaded
after `apply`, it changes the output exactly as without diffattn (dense-equivalent Sparge, float rounding apart),
a second LoRA hot-swapped into the same adapter slot does too, the method keeps acting, and `remove()` leaves
the LoRA in place.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import diffattn
from diffattn.testing import tiny_pipeline

from .conftest import COMMON, METHODS, denoise, relative_error
from .test_caches import acted

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def save_lora(folder: Path, seed: int) -> Path:
    """A rank-4 LoRA on the tiny Wan transformer's attention projections, with random (non-zero) weights."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = tiny_pipeline("wan")
    torch.manual_seed(seed)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=TARGETS))
    pipe.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))
    return folder


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> tuple[Path, Path]:
    return save_lora(tmp_path_factory.mktemp("lora_a"), 1), save_lora(tmp_path_factory.mktemp("lora_b"), 2)


def lora_outputs(loras: tuple[Path, Path], configs=()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
    """(base, with LoRA a, after hot-swapping LoRA b) outputs of a fresh pipeline, diffattn applied first if given."""
    pipe = tiny_pipeline("wan")
    pipe.transformer.enable_lora_hotswap(target_rank=4)
    handle = diffattn.apply(pipe, *configs) if configs else None
    base = denoise(pipe.transformer)
    pipe.load_lora_weights(loras[0], adapter_name="style")
    first = denoise(pipe.transformer)
    pipe.load_lora_weights(loras[1], adapter_name="style", hotswap=True)
    if handle is not None:
        handle.stats.clear()  # what the handle shows afterwards is the hot-swapped run alone
    swapped = denoise(pipe.transformer)
    return base, first, swapped, handle


def test_lora_load_and_hotswap_after_apply_match_stock(loras):
    stock = lora_outputs(loras)[:3]
    *ours, handle = lora_outputs(loras, (diffattn.SpargeConfig(topk=1.0, **COMMON),))
    assert handle.stats.summary()["mean_density"] == 1.0
    handle.remove()
    assert not torch.equal(stock[1], stock[0]) and not torch.equal(stock[2], stock[1])  # both LoRAs change the output
    for out, reference in zip(ours, stock):
        assert relative_error(out, reference) < 2e-5


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_acts_in_the_run_after_a_hot_swap(loras, method):
    *_, handle = lora_outputs(loras, (METHODS[method](),))
    assert acted(handle, method)
    handle.remove()
