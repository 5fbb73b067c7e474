"""`diffattn demo` on the trained shapes models: first and run when installed (smoke-trained stand-ins, 2 steps
here), last and skipped with the training command when not, without failing the demo."""

from __future__ import annotations

import json

import pytest

from diffattn.cli import main
from diffattn.cli.demos import load_entries

SHAPES_ENTRIES = ["shapes-wan", "shapes-sd-edit"]


def test_with_weights_the_shapes_entries_come_first_and_run(with_trained_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("diffattn.cli.demos.shapes.STEPS", 2)
    assert list(load_entries())[:2] == SHAPES_ENTRIES
    assert main(["demo", "--out", str(tmp_path), "--only", "shapes-*"]) == 0
    assert "2/2 demo entries ok, 0 skipped" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    runs = report["shapes-wan"]["runs"]
    assert list(runs) == ["dense (observe)", "sparge", "radial"]
    assert all(isinstance(run["correct"], bool) and (tmp_path / run["video"]).is_file() for run in runs.values())
    assert runs["dense (observe)"]["mean_density"] == 1.0 and runs["sparge"]["mean_density"] < 1.0
    edit = report["shapes-sd-edit"]
    assert edit["ok"] and {"hue_changed", "mask_iou", "psnr_outside"} <= set(edit)
    assert (tmp_path / edit["video"]).is_file() and (tmp_path / edit["source"]).is_file()


def test_without_weights_the_shapes_entries_are_skipped_last(without_trained_weights, tmp_path, capsys):
    assert list(load_entries())[-2:] == SHAPES_ENTRIES
    assert main(["demo", "--out", str(tmp_path), "--only", "shapes-*", "--only", "sample-clip"]) == 0
    out = capsys.readouterr().out
    assert "1/3 demo entries ok, 2 skipped" in out and "python -m diffattn.shapes.train shapes-wan" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert "train them with `python -m diffattn.shapes.train shapes-sd" in report["shapes-sd-edit"]["skipped"]
    assert "| shapes-wan | skipped |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("weights", ["with_trained_weights", "without_trained_weights"])
def test_demo_list_says_which_entries_would_be_skipped(weights, request, capsys):
    request.getfixturevalue(weights)
    assert main(["demo", "--list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("shapes-wan "))
    assert ("skipped here" in line) == (weights == "without_trained_weights")
