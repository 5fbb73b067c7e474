"""FreeSwim tests run tiny models, which gain nothing from intra-op threads and lose a lot to thread contention on
a shared CPU. One thread per test module (set before any module fixture builds a reference), restored afterwards."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
