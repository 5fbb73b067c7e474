"""`diffattn app`: its options reach the app's limits; a model it may not load, a busy or invalid port and a limit
that is not positive are refused in one line (exit status 2) before the server starts."""

from __future__ import annotations

import socket

import pytest

from diffattn.cli import build_parser, main


def test_app_command_parses_its_limits(tmp_path):
    args = build_parser().parse_args(["app", "--port", "7999", "--model-dir", str(tmp_path), "--model-dir", "/srv/m",
                                      "--no-hub", "--max-upload-mb", "5", "--max-video-seconds", "3"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7999, None)  # None: `default_model()` decides
    assert args.model_dir == [str(tmp_path), "/srv/m"] and args.no_hub
    assert (args.max_upload_mb, args.max_video_seconds) == (5.0, 3.0)


def test_app_command_refuses_a_model_outside_the_allowed_folders(tmp_path, capsys):
    (tmp_path / "pipe").mkdir()
    assert main(["app", "--model", str(tmp_path / "pipe")]) == 2
    assert "outside the folders this app may load from" in capsys.readouterr().err
    assert main(["app", "--model", "org/name", "--no-hub"]) == 2
    assert "does not load models from the hub" in capsys.readouterr().err


@pytest.fixture
def no_server(monkeypatch):
    """Fails the test instead of serving (and blocking) if `diffattn app` gets past its checks."""
    from diffattn.app import server

    monkeypatch.setattr(server, "build_demo", lambda *args, **kwargs: pytest.fail("the server was started"))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("diffattn app: error: ") and err.count("\n") == 1, err
    return err


def test_app_command_refuses_a_busy_port(no_server, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is not available" in _one_line_error(capsys)


def test_app_command_refuses_port_99999(no_server, capsys):
    assert main(["app", "--port", "99999"]) == 2
    assert "port must lie between 1 and 65535 in this app; got 99999" in _one_line_error(capsys)


def test_app_command_refuses_a_negative_upload_limit(no_server, capsys):
    assert main(["app", "--max-upload-mb", "-1"]) == 2
    assert "max_upload_mb must be a positive number; got -1.0" in _one_line_error(capsys)


@pytest.mark.parametrize(("model", "message"), [
    ("tiny:nope", "no built-in tiny model 'nope'; choose one of tiny:wan, "),
    ("not a model", "'not a model' is neither tiny:<family>, a hub id like 'org/name', nor a local folder"),
], ids=["unknown_tiny_model", "not_a_model_spec"])
def test_app_command_refuses_an_unknown_model(no_server, capsys, model, message):
    assert main(["app", "--model", model]) == 2
    assert message in _one_line_error(capsys)


def test_app_command_passes_its_job_time_limit(monkeypatch, without_trained_weights):
    from diffattn.app import server

    launched = {}
    monkeypatch.setattr(server, "launch", lambda model, **kwargs: launched.update(kwargs, model=model))
    monkeypatch.setattr("diffattn.app.launch", server.launch)
    assert main(["app", "--max-job-seconds", "30"]) == 0
    assert launched["limits"].max_job_seconds == 30 and launched["model"] == "tiny:wan"
