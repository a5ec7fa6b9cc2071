"""Where the app serves: the --port / --host flags and GRADIO_SERVER_PORT / GRADIO_SERVER_NAME agree."""

from __future__ import annotations

import socket

import pytest

import app
from models.errors import InputError
from ui import server


def test_flag_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert server.address(app.build_parser().parse_args([])) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert server.address(app.build_parser().parse_args([])) == ("0.0.0.0", 7999)
    assert server.address(app.build_parser().parse_args(["--port", "8001", "--host", "::1"])) == ("::1", 8001)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "seventy")
    with pytest.raises(InputError, match="GRADIO_SERVER_PORT must be a port number"):
        server.address(app.build_parser().parse_args([]))


@pytest.mark.parametrize("how", ["flag", "env"])
def test_busy_port_advice_names_both_ways(monkeypatch, capsys, how):
    """The advice printed for a busy port names the flag and the variable, and the variable is really read."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["--model", "fake"]
        if how == "flag":
            argv += ["--port", str(port)]
        else:
            monkeypatch.setenv("GRADIO_SERVER_PORT", str(port))
        assert app.main(argv) == 1
    out = capsys.readouterr().out
    assert f"Cannot serve on 127.0.0.1:{port}" in out and "--port N" in out and "GRADIO_SERVER_PORT=N" in out
