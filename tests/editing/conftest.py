"""Shared fixtures of the editing tests: tiny SD / SD+ControlNet pipelines and the sample clip.

Tiny models gain nothing from intra-op threads and lose a lot to contention on a shared CPU, so each module runs
single-threaded (restored afterwards).
"""

import pytest
import torch

from diffattn.testing import sample_clip, tiny_pipeline


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd_pipe():
    return tiny_pipeline("sd")


@pytest.fixture(scope="module")
def controlnet_pipe():
    return tiny_pipeline("sd-controlnet")


@pytest.fixture(scope="module")
def clip():
    """3 frames of the sample clip at 64x64 (an 8x8 latent)."""
    return sample_clip(3, 64, 64)
