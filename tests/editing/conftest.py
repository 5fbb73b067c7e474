"""Shared fixtures of the editing tests: tiny SD / SD+ControlNet pipelines and the sample clip."""

import pytest

from diffattn.testing import sample_clip, tiny_pipeline


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
