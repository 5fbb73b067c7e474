"""The editing group's thresholds on the shipped shapes-sd, at the CPU scale (4 held-out clips of 3 frames, 10
steps): each editor recolours the object in most frames and keeps its place and the background better than
re-generation without attention control. Measured at this scale on 2026-12-06 (mask IoU / PSNR outside the object):
FateZero 0.628 / 21.2 dB, RealCraft 0.653 / 21.6, their baseline 0.578 / 20.3; FRESCO 0.852 / 28.0, its per-frame
SDEdit baseline 0.473 / 18.1. The floors sit a little under those, so a method that stops working fails here."""

import pytest

from diffattn.defaults import TRAINED_IMAGE_MODEL, installed
from diffattn.shapes.quality import QualitySettings, run_groups

FLOORS = {  # method: (hue_changed, mask_iou, psnr_outside)
    "fatezero": (0.75, 0.55, 20.0),
    "realcraft": (0.75, 0.55, 20.0),
    "fresco": (0.75, 0.75, 25.0),
}


@pytest.fixture(scope="module")
def editing_rows():
    assert installed(TRAINED_IMAGE_MODEL), "the shapes-sd weights ship in diffattn/shapes/weights/shapes-sd"
    return {row.method: row for row in run_groups(["editing"], QualitySettings())}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(FLOORS))
def test_editor_beats_regeneration_on_the_trained_model(editing_rows, method):
    row = editing_rows[method]
    hue, iou, psnr = FLOORS[method]
    metrics = row.metrics
    assert row.verdict, f"{method} no longer keeps the object and background better than its baseline: {metrics}"
    assert metrics["hue_changed"] >= hue and metrics["mask_iou"] >= iou and metrics["psnr_outside"] >= psnr, metrics
