"""The quality suite's core and its sparse group: SSIM against closed forms, rows on the untrained models (structure;
thresholds on the trained shapes-wan: test_quality_thresholds_video.py)."""

import pytest
import torch

from diffattn.errors import ConfigError
from diffattn.media.metrics import ssim
from diffattn.shapes.quality import GROUPS, QualitySettings, run_groups
from diffattn.shapes.quality.sparse import FRAMES, rows


def test_ssim_of_identical_frames_is_one_and_of_constants_is_the_luminance_term():
    video = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert ssim(video, video) == pytest.approx(1.0, abs=1e-6)
    a, b = torch.full((1, 3, 12, 12), 0.2), torch.full((1, 3, 12, 12), 0.6)
    c1 = 0.01**2
    assert ssim(a, b) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), rel=1e-5)
    assert ssim(a, b) == pytest.approx(ssim(b, a), rel=1e-6)


def test_ssim_falls_with_noise_and_checks_its_inputs():
    video = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(2))
    values = [ssim(video, (video + level * noise).clamp(0, 1)) for level in (0.01, 0.05, 0.2)]
    assert 1 > values[0] > values[1] > values[2] > 0
    with pytest.raises(ConfigError, match="equal shapes"):
        ssim(video, video[..., :16])
    with pytest.raises(ConfigError, match="does not fit"):
        ssim(video[..., :4, :4], video[..., :4, :4])


def test_unknown_group_names_the_known_ones():
    with pytest.raises(ValueError, match="sparse"):
        run_groups(["nope"], QualitySettings())
    assert "sparse" in GROUPS


@pytest.mark.slow
def test_sparse_rows_on_the_untrained_model_measure_each_method():
    """Structure only (random weights): every method has a row; methods that skip tiles report a density below one
    and a skipped fraction per step; LiteAttention and 8-bit attention keep every tile."""
    settings = QualitySettings(weights="untrained", samples=1, steps=3)
    found = {row.method: row for row in rows(settings, methods=("sparge", "radial", "lite"))}
    assert set(found) == {"sparge", "radial", "lite"}
    for row in found.values():
        assert row.metrics["samples"] == 1 and 0 <= row.metrics["accuracy"] <= 1
        assert len(row.series["skipped_tiles_per_step"]) == 3
        assert str(FRAMES) in row.setting
    assert found["sparge"].metrics["density"] < 1 and found["sparge"].metrics["skipped_tiles"] > 0
    assert found["radial"].series["skipped_tiles_per_step"][0] == 0  # its scaled dense first step
    lite = found["lite"].metrics
    if lite["skipped_tiles"] == 0:  # nothing skipped: its kernel's output is dense attention's, so the clips are equal
        assert lite["psnr_vs_dense_db"] == 100 and lite["ssim_vs_dense"] == pytest.approx(1, abs=1e-6)
