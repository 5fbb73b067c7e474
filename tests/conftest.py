"""Test-wide settings: never touch the network; run Triton kernels in the interpreter on CPU-only machines. Fixtures
that install (smoke-trained) or remove the trained shapes-world weights for the tests of the defaults."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
# MKL rounds differently for weights whose buffers are not 64-byte aligned (as loaded from safetensors);
# strict mode makes save -> load round trips bitwise. Must be set before torch's first matrix product.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
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


@pytest.fixture(scope="session")
def smoke_weights(tmp_path_factory):
    """A weights folder laid out like the package's (`diffattn.shapes.models.WEIGHTS`) holding a smoke training run
    of each trained shapes model (seconds; the models are not usable, their structure is the real one)."""
    from diffattn.shapes.models import MODELS
    from diffattn.shapes.train import PRESETS, train

    root = tmp_path_factory.mktemp("weights")
    for name in MODELS:
        train(name, root / name, PRESETS["smoke"], seed=0, workers=1)
    return root


@pytest.fixture
def with_trained_weights(smoke_weights, monkeypatch):
    """The trained shapes models count as installed (the smoke runs stand in for the real weights)."""
    monkeypatch.setattr("diffattn.shapes.models.WEIGHTS", smoke_weights)
    return smoke_weights


@pytest.fixture
def without_trained_weights(tmp_path, monkeypatch):
    """No trained shapes model is installed (a clean checkout before the weights ship), whatever this one holds."""
    monkeypatch.setattr("diffattn.shapes.models.WEIGHTS", tmp_path / "no-weights")
