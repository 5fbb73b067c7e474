"""Test-wide settings: never touch the network; run Triton kernels in the interpreter on CPU-only machines."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
# MKL rounds differently for weights whose buffers are not 64-byte aligned (as loaded from safetensors);
# strict mode makes save -> load round trips bitwise. Must be set before torch's first matrix product.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tiny models are dominated by per-op overhead: one thread is faster and steadier than several (set before any
# fixture builds a model, so module-scoped references run under the same setting as the tests).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: on a CPU-only machine they are deselected (the README's command also says -m 'not gpu')."""
    if torch.cuda.is_available():
        return
    kept = [item for item in items if "gpu" not in item.keywords]
    deselected = [item for item in items if "gpu" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
