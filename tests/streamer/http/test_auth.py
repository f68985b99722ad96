"""Optional bearer-token auth: every path but /healthz needs the token; the token never leaks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.config import ConfigError, build_config
from streamer.http.server import exposure_warning
from tests.peers.processes import ROOT, StreamerProcess
from tests.streamer.http.conftest import TOKEN, http_get, http_server, request
from tests.streamer.webrtc.conftest import whep_server

CHALLENGE = 'Bearer realm="streamer"'


async def test_without_auth_every_path_answers() -> None:
    async with http_server() as server:
        for path in ("/healthz", "/metrics", "/api/streams"):
            status, _, _ = await request(server.port, path)
            assert status == 200, path


async def test_token_is_required_everywhere_but_healthz() -> None:
    async with http_server(auth={"token": TOKEN}) as server:
        status, _, body = await request(server.port, "/healthz")
        assert status == 200 and b'"status"' in body
        for path in ("/metrics", "/api/streams", "/no-such-path", "/healthz/../metrics"):
            status, headers, _ = await request(server.port, path)
            assert status == 401, path
            assert headers["www-authenticate"] == CHALLENGE
        for value in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN,
                      f"Bearer {TOKEN} {TOKEN}", "Bearer \u00e9\u00e9"):
            status, headers, _ = await request(server.port, "/metrics", {"Authorization": value})
            assert status == 401, value
            assert headers["www-authenticate"].startswith(CHALLENGE)
        status, headers, _ = await request(server.port, "/api/streams", {"Authorization": "Bearer wrong-token"})
        assert headers["www-authenticate"] == f'{CHALLENGE}, error="invalid_token"'
        for value in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} "):
            status, _, body = await request(server.port, "/api/streams", {"Authorization": value})
            assert status == 200 and body.startswith(b'{"streams"'), value
        status, _, metrics = await request(server.port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and b"streamer_http_auth_failures_total 12.0\n" in metrics  # 4 + 7 + 1 refused
        assert TOKEN.encode() not in metrics


async def test_token_file_and_realm(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    async with http_server(auth={"token_file": str(token_file), "realm": "site 7"}) as server:
        status, headers, _ = await request(server.port, "/metrics")
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="site 7"'
        status, _, _ = await request(server.port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"token": "short"}, "server.http.auth.token: must be 16 to 4096 characters"),
        ({"token": "has spaces in the token"}, "server.http.auth.token: must be 16 to 4096 characters"),
        ({"token": 12345678901234567890}, "server.http.auth.token: must be text"),
        ({}, "server.http.auth: give either token or token_file"),
        ({"token": TOKEN, "token_file": "/x"}, "server.http.auth: give either token or token_file"),
        ({"token_file": "/nonexistent/token"}, "cannot read /nonexistent/token: No such file or directory"),
        ({"token": TOKEN, "realm": 'a"b'}, "server.http.auth.realm: must be printable ASCII"),
    ],
)
def test_bad_auth_config_names_the_field(auth: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_config({"cameras": [{"source": {"type": "demo"}}], "server": {"http": {"auth": auth}}}, environ={})
    assert message in str(raised.value)
    assert "12345678901234567890" not in str(raised.value) and "has spaces" not in str(raised.value)


async def test_the_viewer_page_and_its_static_files_need_no_token() -> None:
    async with whep_server(http={"auth": {"token": TOKEN}}) as server:
        for path in ("/", "/static/app.js", "/static/style.css", "/static/publish.html", "/static/publish.js"):
            status, _, body = await request(server.port, path)
            assert status == 200 and body, path  # browsers load pages without an Authorization header
        for path in ("/api/streams", "/metrics", "/readyz", "/static/../metrics", "/static/%2e%2e/metrics"):
            status, _, body = await request(server.port, path)
            assert status in (401, 404) and b"streamer_" not in body and b"streams" not in body, path
        for path in ("/api/streams", "/metrics", "/readyz"):
            status, _, _ = await request(server.port, path)
            assert status == 401, path
        status, _, _ = await request(server.port, "/", method="POST")
        assert status == 401  # only reading the page is public


def test_exposure_warning_only_when_reachable_off_host_without_token() -> None:
    def config(http: dict) -> object:
        return build_config({"cameras": [{"source": {"type": "demo"}}], "server": {"http": http}}, environ={}).server.http

    assert exposure_warning(config({}), 8080) is not None  # the default: 0.0.0.0, no token
    assert exposure_warning(config({"host": "::"}), 8080) is not None
    assert exposure_warning(config({"host": "192.168.1.10"}), 8080) is not None
    assert exposure_warning(config({"host": "127.0.0.1"}), 8080) is None
    assert exposure_warning(config({"host": "::1"}), 8080) is None
    assert exposure_warning(config({"host": "localhost"}), 8080) is None
    assert exposure_warning(config({"auth": {"token": TOKEN}}), 8080) is None
    assert exposure_warning(config({"auth": {"token": TOKEN}}), 8080, webrtc=True) is None
    warning = exposure_warning(config({}), 8080, webrtc=True, open_whip=["phone"]) or ""
    assert "/whep/<camera>/raw" in warning and "WHIP" in warning and "phone" in warning
    assert "WHIP" not in (exposure_warning(config({}), 8080, webrtc=True, open_whip=[]) or "")


async def test_the_warning_is_logged_once_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamer.http")
    async with http_server(host="0.0.0.0"):
        pass
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "server.http.auth.token" in warnings[0].getMessage()
    caplog.clear()
    async with http_server(host="0.0.0.0", auth={"token": TOKEN}):
        pass
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_token_from_the_environment_in_a_real_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "streamer.yaml"
    config.write_text(
        "cameras:\n  - name: cam\n    source: {type: demo, width: 160, height: 96, fps: 10}\n"
        "    engine: {type: passthrough}\n"
        "server:\n  rtsp: {host: 127.0.0.1}\n  http: {host: 0.0.0.0}\nlog_level: debug\n"
    )
    monkeypatch.setenv("STREAMER__SERVER__HTTP__AUTH__TOKEN", TOKEN)
    process = StreamerProcess("--config", str(config)).start()
    try:
        port = process.http_port
        assert http_get(port, "/healthz")[0] == 200
        assert http_get(port, "/metrics")[0] == 401
        assert http_get(port, "/api/streams", "wrong-token-wrong-token")[0] == 401
        status, metrics = http_get(port, "/metrics", TOKEN)
        status_api, api = http_get(port, "/api/streams", TOKEN)
        assert status == 200 and status_api == 200
        assert TOKEN.encode() not in metrics + api
        validate = subprocess.run([sys.executable, "-m", "streamer", "validate-config", str(config)], cwd=ROOT,
                                  env=dict(os.environ), capture_output=True, text=True, timeout=60)
        assert validate.returncode == 0 and "token: '***'" in validate.stdout
        assert TOKEN not in validate.stdout + validate.stderr
    finally:
        process.terminate()
    log = "".join(process.log)
    assert TOKEN not in log
    assert "open to anyone" not in log  # bound to 0.0.0.0 but with a token: no exposure warning
