"""FreeSwim tests run tiny models, which gain nothing from intra-op threads and lose a lot to thread contention
on a shared CPU; the suite-wide fixture restores the thread count after each test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield
