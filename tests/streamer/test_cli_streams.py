"""``streamer streams list|show|add|remove`` against a real ``streamer run --config … --config-writeback``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from streamer.cli import main
from tests.conftest import FPS, HEIGHT, WIDTH
from tests.peers.processes import StreamerProcess

DEMO = {"type": "demo", "width": WIDTH, "height": HEIGHT, "fps": FPS}


def test_streams_commands_against_a_running_server(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("cli-test-token-0123456789\n")
    config = tmp_path / "streamer.yaml"
    config.write_text(yaml.safe_dump({
        "cameras": [{"name": "gate", "source": DEMO, "engine": {"type": "passthrough"}}],
        "server": {"http": {"auth": {"token_file": str(token)}}},
    }))
    streamer = StreamerProcess("--config", str(config), "--config-writeback", "--host", "127.0.0.1").start()
    server = ["--server", f"http://127.0.0.1:{streamer.http_port}"]
    auth = [*server, "--token-file", str(token)]
    try:
        assert main(["streams", "add", "yard", "demo", "--engine", "passthrough", *auth]) == 0
        assert "added yard" in capsys.readouterr().out
        assert main(["streams", "list", *auth]) == 0
        listing = capsys.readouterr().out
        assert "gate" in listing and "yard" in listing and "cli-test-token-0123456789" not in listing
        assert main(["streams", "show", "yard", *auth]) == 0
        assert json.loads(capsys.readouterr().out)["name"] == "yard"
        assert main(["streams", "add", "yard", "demo", *auth]) == 1  # the name is taken
        assert "name: already in use" in capsys.readouterr().err
        assert main(["streams", "add", "bad name", "demo", *auth]) == 1
        err = capsys.readouterr().err  # the field once, in the config file's words
        assert "HTTP 422: invalid camera entry\n" in err and err.count("name: must be 1 to 64 characters") == 1, err
        assert main(["streams", "list", *server]) == 1  # no token
        assert "401" in capsys.readouterr().err
        monkeypatch.setenv("STREAMER_TOKEN", "cli-test-token-0123456789")
        assert main(["streams", "remove", "gate", *server]) == 0
        assert [camera["name"] for camera in yaml.safe_load(config.read_text())["cameras"]] == ["yard"]
        assert main(["streams", "remove", "gate", *server]) == 1
        assert "no stream named 'gate'" in capsys.readouterr().err
    finally:
        streamer.kill()
    monkeypatch.delenv("STREAMER_TOKEN")
    assert main(["streams", "list", *server]) == 2  # nothing listens: one clear line
    assert "cannot reach" in capsys.readouterr().err
