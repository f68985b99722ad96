from __future__ import annotations

from pathlib import Path

import pytest

from streamer.config import ConfigError, build_config, load_config_file, source_from_argument

GOOD = """
cameras:
  - name: gate
    source: {type: rtsp, url: "rtsp://user:pass@10.0.0.5/stream", transport: udp}
    window: {size: 5, lookahead: 0}
    sinks:
      - {type: file, path: /tmp/gate.mkv}
  - name: yard
    source: {type: demo, width: 320, height: 180}
    engine: {type: passthrough}
server:
  rtsp:
    port: 9554
    auth: {method: digest, users: [{username: a, password: b}]}
"""


def test_good_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    config = load_config_file(path, environ={})
    assert [camera.name for camera in config.cameras] == ["gate", "yard"]
    assert config.cameras[0].source.type == "rtsp" and config.cameras[0].source.transport == "udp"
    assert config.server.rtsp.port == 9554 and config.server.http.port == 8080


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("cameras: [{source: {type: rtsp, url: 'http://x'}}]", "cameras.0.source.url"),
        ("cameras: [{source: {type: demo}, window: {size: 4}}]", "cameras.0.window.size"),
        ("cameras: [{source: {type: demo}, colour: red}]", "cameras.0.colour"),
        ("cameras: [{source: {type: webcam}}]", "cameras.0.source"),
        ("cameras: [{source: {type: demo}}]\nserver: {rtsp: {port: 70000}}", "server.rtsp.port"),
        ("server: {}", "cameras"),
        ("cameras: [{source: {type: demo}, engine: {model: lite-turbo}}]", "cameras.0.engine.model"),
        ("cameras: [{source: {type: demo}}, {source: {type: demo}}]", "camera names must be unique"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config_file(path, environ={})
    assert field in str(error.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("cameras: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(path, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "absent.yaml", environ={})


def test_environment_overrides() -> None:
    data = {"cameras": [{"source": {"type": "demo"}}]}
    environ = {"STREAMER__SERVER__RTSP__PORT": "9000", "STREAMER__CAMERAS__0__ENGINE__TYPE": "passthrough"}
    config = build_config(data, environ=environ)
    assert config.server.rtsp.port == 9000
    assert config.cameras[0].engine.type == "passthrough"
    with pytest.raises(ConfigError, match="no list item"):
        build_config({"cameras": [{"source": {"type": "demo"}}]}, environ={"STREAMER__CAMERAS__3__NAME": "x"})


def test_source_argument() -> None:
    assert source_from_argument("demo") == {"type": "demo"}
    assert source_from_argument("rtsp://cam/s") == {"type": "rtsp", "url": "rtsp://cam/s"}
    assert source_from_argument("clip.mp4") == {"type": "file", "path": "clip.mp4"}


def test_passwords_are_redacted_from_logged_urls() -> None:
    from streamer.sources.rtsp import redact

    assert redact("rtsp://admin:hunter2@cam:554/s") == "rtsp://admin:***@cam:554/s"
    assert redact("rtsp://cam/s") == "rtsp://cam/s"


def test_engine_model_takes_a_shipped_name_or_a_path(tmp_path: Path) -> None:
    from engines import DEFAULT_MODEL, resolve_model, shipped_models

    assert "lite" in shipped_models()
    assert resolve_model("lite") == resolve_model(None) == DEFAULT_MODEL
    assert resolve_model(str(tmp_path / "mine.onnx")) == tmp_path / "mine.onnx"
    assert resolve_model("mine.onnx") == Path("mine.onnx")
    extensionless = tmp_path / "mymodel"
    extensionless.write_bytes(b"")
    assert resolve_model(str(extensionless)) == extensionless
