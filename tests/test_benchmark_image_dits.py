"""`benchmarks/image_dits.py`: models run in the order asked, and a run cut short keeps every model it finished."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import benchmark_scripts


@pytest.fixture(scope="module")
def image_dits():
    with benchmark_scripts("image_dits", "e2e") as (module, _):
        yield module


def test_models_run_in_the_order_asked_and_unknown_names_are_refused(image_dits, capsys):
    names = ["sd3.5-large-1024", "flux1-dev-1024"]
    assert list(image_dits.catalogue(False, names)) == names
    assert list(image_dits.catalogue(False, None)) == list(image_dits.MODELS)
    with pytest.raises(SystemExit):
        image_dits.main(["--models", "flux3"])
    assert "invalid choice" in capsys.readouterr().err


def test_the_report_is_written_after_each_model(image_dits, tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    written = []
    write = image_dits.write_report

    def record(report, out, table):
        written.append(list(report["models"]))
        write(report, out, table)

    monkeypatch.setattr(image_dits, "write_report", record)
    image_dits.main(["--tiny", "--repeats", "1"])
    names = [f"tiny-{family}" for family in image_dits.TINY_FAMILIES]
    assert written == [names[: i + 1] for i in range(len(names))]
    saved = json.loads((tmp_path / "image_dits_tiny.json").read_text())
    assert list(saved["models"]) == names
    for model in saved["models"].values():
        assert {"dense", "sparge 90% (top-k 0.1)"} <= set(model["forward"])
        assert model["forward"]["sparge 90% (top-k 0.1)"]["density"] < 1
