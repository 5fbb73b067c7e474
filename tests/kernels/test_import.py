"""The kernel sources imported under a second name must not register diffattn's custom ops twice."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

from diffattn.kernels import block_sparse_attention, triton_attention
from diffattn.plan import BlockPlan

from ._kernel_testing import qkv


def test_top_level_kernels_import_registers_nothing(monkeypatch):
    """transformers/diffusers probe for Hugging Face's `kernels` package by importing `kernels`; from a source
    checkout that finds this folder. Importing it under that name loads no kernel module, and the ops still run."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))  # the repository root, as in a checkout
    module = importlib.import_module("kernels")
    assert module.__name__ == "kernels" and module.__all__ == []
    assert not [name for name in sys.modules if name.startswith("kernels.")]
    q, k, v = qkv(1, 1, 128, 128, 64)
    backend = "triton" if triton_attention.INTERPRETED else "reference"
    out = block_sparse_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), BlockPlan.dense(128, 128, 64, 64), backend=backend)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (out.float() - expected).abs().max() < 2e-2
