"""A source checkout's `kernels/` folder never shadows Hugging Face's `kernels` package, nor loads twice.

transformers, diffusers and peft import Hugging Face's `kernels`; with the checkout root on sys.path (`python -m
pytest`, `python -c`, a notebook) Python finds this repository's `kernels/` first. Each check runs in a fresh
interpreter started in the repository root, as a user would.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


HF_KERNELS = _installed("kernels")


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


ABSENT_CHECK = (
    "import kernels\n"
    "try:\n    from kernels import get_kernel\nexcept ModuleNotFoundError as exc:\n    print('absent', exc.name)\n"
    "print(getattr(kernels, '__file__', None), hasattr(kernels, '__version__'), kernels.__path__)\n"
)

HIDE_INSTALLED_KERNELS = """
import importlib.machinery, importlib.metadata
_find = importlib.machinery.PathFinder.find_spec
def _find_without_installed(name, path=None, target=None):
    spec = _find(name, path, target)
    return None if name == 'kernels' and spec is not None and 'site-packages' in (spec.origin or '') else spec
importlib.machinery.PathFinder.find_spec = staticmethod(_find_without_installed)
for _name in ('version', 'distribution'):
    def _hidden(name, _original=getattr(importlib.metadata, _name)):
        if name == 'kernels':
            raise importlib.metadata.PackageNotFoundError(name)
        return _original(name)
    setattr(importlib.metadata, _name, _hidden)
"""
"""Makes this interpreter see no installed Hugging Face `kernels` (package or metadata), as on a machine without it."""


def test_top_level_kernels_is_the_installed_package_or_absent():
    """`import kernels` from the checkout root gives the installed package; without one, an empty stand-in."""
    origin = _python(
        "import sys\nimport kernels\nprint(getattr(kernels, '__file__', None))\n"
        "print(sorted(m for m in sys.modules if m.startswith('diffattn')))"
    )
    found, loaded = origin.splitlines()
    assert loaded == "[]"  # diffattn's kernel modules were not loaded under any name
    if HF_KERNELS:
        assert Path(found).resolve().parent.parent != ROOT and "site-packages" in found
    else:
        assert found == "None"


def test_checkout_folder_alone_behaves_as_absent():
    """With nothing but the checkout on sys.path the name holds an empty namespace-like module: no file, no
    version, nothing inside, and importing anything from it fails as for an absent package."""
    out = _python("import sys\nsys.path[:] = ['']\n" + ABSENT_CHECK)
    assert out.splitlines() == ["absent kernels", "None False []"]


def test_transformers_and_diffusers_import_without_hugging_face_kernels():
    """The failure seen on a machine without Hugging Face's `kernels`: transformers' availability probe imports the
    name when no distribution metadata exists, found this folder, and every transformers model import failed."""
    out = _python(
        HIDE_INSTALLED_KERNELS
        + "from transformers import UMT5EncoderModel\nfrom transformers.utils.import_utils import is_kernels_available\n"
        "from diffusers import WanPipeline\nimport peft\nprint(is_kernels_available())\n" + ABSENT_CHECK
    )
    assert out.splitlines() == ["False", "absent kernels", "None False []"]


@pytest.mark.skipif(not HF_KERNELS, reason="Hugging Face's kernels package is not installed (transformers >= 5 installs it)")
def test_peft_and_diffusers_import_from_the_checkout_root():
    """The failure users hit: peft's `from kernels import CUDAProperties` broke `from diffusers import ...`."""
    out = _python("from diffusers import DiffusionPipeline\nimport peft\nfrom kernels import CUDAProperties\nprint('ok')")
    assert out == "ok"


def test_diffattn_kernels_run_after_top_level_import():
    """The package's ops are registered once and still run after the top-level name was imported."""
    out = _python(
        "import torch\n"
        "try:\n    import kernels\nexcept ModuleNotFoundError:\n    pass\n"
        "from diffattn.kernels import block_sparse_attention\nfrom diffattn.plan import BlockPlan\n"
        "q, k, v = (torch.randn(1, 1, 128, 64) for _ in range(3))\n"
        "out = block_sparse_attention(q, k, v, BlockPlan.dense(128, 128, 64, 64), backend='reference')\n"
        "ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)\n"
        "print(float((out - ref).abs().max()) < 1e-5)"
    )
    assert out == "True"


@pytest.mark.parametrize("command", [[sys.executable, "-m", "pytest"], [str(Path(sys.executable).parent / "pytest")]])
def test_pytest_collects_from_the_checkout_root(command):
    """`python -m pytest` puts the checkout root first on sys.path, `pytest` inserts it as the tests' rootdir."""
    result = subprocess.run(
        [*command, "--collect-only", "-q", "-p", "no:cacheprovider", "tests/core", "tests/kernels/test_errors.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "error" not in result.stdout.lower().splitlines()[-1]
