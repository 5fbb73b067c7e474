"""`diffattn app`: its options reach the app's limits, and a model it may not load is refused before launching."""

from __future__ import annotations

from diffattn.cli import build_parser, main


def test_app_command_parses_its_limits(tmp_path):
    args = build_parser().parse_args(["app", "--port", "7999", "--model-dir", str(tmp_path), "--model-dir", "/srv/m",
                                      "--no-hub", "--max-upload-mb", "5", "--max-video-seconds", "3"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7999, "tiny:wan")
    assert args.model_dir == [str(tmp_path), "/srv/m"] and args.no_hub
    assert (args.max_upload_mb, args.max_video_seconds) == (5.0, 3.0)


def test_app_command_refuses_a_model_outside_the_allowed_folders(tmp_path, capsys):
    (tmp_path / "pipe").mkdir()
    assert main(["app", "--model", str(tmp_path / "pipe")]) == 2
    assert "outside the folders this app may load from" in capsys.readouterr().err
    assert main(["app", "--model", "org/name", "--no-hub"]) == 2
    assert "does not load models from the hub" in capsys.readouterr().err
