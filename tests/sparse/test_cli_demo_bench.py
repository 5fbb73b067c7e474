"""The sparse methods from the command line, the demo entry, and the end-to-end benchmark's CPU check."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from diffattn.cli import main

SIZE = ["--height", "128", "--width", "128", "--frames", "29", "--steps", "2"]  # 8 x 8 x 8 = 512 tokens


@pytest.mark.parametrize(
    "methods, flags",
    [
        ("radial,lite", ["--radial-dense-steps", "1", "--radial-min-tokens", "256", "--lite-min-tokens", "256", "--lite-threshold", "0"]),
        ("pab,lite", ["--pab-spatial-timestep-range", "0,1001", "--lite-min-tokens", "256"]),
        ("sparge", ["--sparge-topk", "0.25", "--sparge-min-tokens", "256"]),
        ("psa", ["--psa-dense-steps", "0", "--psa-mode", "topk", "--psa-min-tokens", "256"]),
    ],
)
def test_generate_runs_sparse_methods_and_writes_their_stats(methods, flags, tmp_path, capsys):
    stats = tmp_path / "stats.json"
    status = main(["generate", "--model", "tiny:wan", "--method", methods, *flags, *SIZE,
                   "--out", str(tmp_path / "video.mp4"), "--stats", str(stats)])
    assert status == 0 and (tmp_path / "video.mp4").stat().st_size > 0
    layers = json.loads(stats.read_text())["layers"]
    records = [r for steps in layers.values() for r in steps.values()]
    if "pab" in methods:
        assert sum(r.get("reused", 0) for r in records) > 0
    if methods != "pab,lite":
        densities = [r["density"] for r in records if r["density"] is not None]
        assert densities and min(densities) < 1.0


def test_the_demo_entry_runs_and_checks_its_equivalence(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--only", "sparse-tiny-wan"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "sparse-tiny-wan | yes" in report
    assert (tmp_path / "sparse_radial+lite.mp4").stat().st_size > 0
    methods = json.loads((tmp_path / "report.json").read_text())["sparse-tiny-wan"]["methods"]
    # 8 bits move the (random-weight) video, but less than Sparge dropping half of the blocks does
    assert methods["quantized"]["quantized_calls"] > 0
    assert 0 < methods["quantized"]["max_abs_diff_vs_dense"] < methods["sparge"]["max_abs_diff_vs_dense"]


def test_the_benchmark_runs_on_the_cpu(tmp_path):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "e2e.py"
    spec = importlib.util.spec_from_file_location("e2e_benchmark", path)
    e2e = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e)
    report = e2e.main(["--tiny", "--out", str(tmp_path / "e2e_tiny.json")])
    data = json.loads((tmp_path / "e2e_tiny.json").read_text())
    assert data == json.loads(json.dumps(report))
    forward = data["models"]["tiny-wan"]["forward"]
    assert forward["sparge (top-k 0.5)"]["rel_l1"] < 0.05 and forward["sparge 90% (top-k 0.1)"]["density"] < 0.5
    assert len(data["models"]["tiny-wan"]["lite_schedule"]["skipped_fraction_per_step"]) == 6
    assert set(data["quality_proxy"]) == {"sparge (top-k 0.5)", "radial (decay 0.2)", "psa (Wan 14B thresholds)", "lite (threshold -10)",
                                          "lite (threshold -10, final-max marks)", "quantized int8", "quantized int8-fp8",
                                          "radial int8-fp8"}
    for label in ("quantized int8", "quantized int8-fp8", "sparge 90% int8-fp8"):  # 8 bits: close to dense, not equal
        assert 0 < forward[label]["rel_l1"] < 0.05
    assert (tmp_path / "e2e_tiny.md").read_text().startswith("### tiny-wan")
