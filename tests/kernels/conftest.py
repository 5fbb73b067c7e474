"""Kernel tests run where the kernels do: on the GPU when there is one (compiled Triton kernels), else on the CPU
(the Triton interpreter). Files whose checks hold on any device opt in with
`pytestmark = pytest.mark.usefixtures("kernel_device")`; `test_errors.py` builds CPU and meta inputs on purpose."""

import pytest
import torch


@pytest.fixture
def kernel_device():
    """Every tensor the test creates lands on the GPU when there is one (torch's default-device context)."""
    if not torch.cuda.is_available():
        yield torch.device("cpu")
        return
    with torch.device("cuda"):
        yield torch.device("cuda")
