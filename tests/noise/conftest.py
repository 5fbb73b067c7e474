"""Noise tests run the tiny models on one thread: their ops are too small to gain from two, and on a shared
2-core machine two threads per process oversubscribe the cores (10-50x slower calls were measured)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(_deterministic_threads):
    torch.set_num_threads(1)
    yield
