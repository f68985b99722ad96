"""Passwords never reach logs, /api/streams or `validate-config` output, whatever characters they hold."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from streamer.redact import redact_config, redact_text, redact_url
from tests.peers.processes import ROOT, GstCamera, StreamerProcess, free_port

# every password below is built from these words; none of them may survive redaction
WORDS = ["alpha7", "bravo7", "charlie7", "delta7", "echo7", "foxtrot7", "golf7", "hotel7", "india7", "juliet7",
         "kilo7", "lima7", "mike7", "november7", "oscar7", "papa7"]


def leaked(text: str) -> list[str]:
    return [word for word in WORDS if word in text]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://cam.local:554/live", "rtsp://cam.local:554/live"),
        ("rtsp://admin:alpha7@cam/live", "rtsp://admin:***@cam/live"),
        ("rtsp://admin:alpha7@bravo7@cam/live", "rtsp://admin:***@cam/live"),  # '@': the last one ends it
        ("rtsp://admin:alpha7:bravo7@cam:554/live", "rtsp://admin:***@cam:554/live"),  # ':'
        ("rtsp://admin:alpha7%bravo7@cam/live", "rtsp://admin:***@cam/live"),  # a raw '%'
        ("rtsp://admin:alpha7%40bravo7%3Acharlie7%2Fdelta7%25@cam/live", "rtsp://admin:***@cam/live"),  # encoded
        ("rtsp://admin:alpha7/bravo7@cam/live", "rtsp://admin:***@cam/live"),  # a raw '/': FFmpeg cannot use it
        ("rtsp://admin:alpha7?bravo7@cam/live", "rtsp://admin:***@cam/live"),  # a raw '?'
        ("rtsp://admin:alpha7#bravo7@cam/live", "rtsp://admin:***@cam/live"),  # a raw '#'
        ("rtsp://admin:alpha7/b@ravo7:c/harlie7@10.0.0.2:554/live", "rtsp://admin:***@10.0.0.2:554/live"),
        ("rtsp://admin:@cam/live", "rtsp://admin:***@cam/live"),
        ("rtsp://alpha7@cam/live", "rtsp://***@cam/live"),  # a bare user part may be a token: hidden too
        ("rtsps://us%3Aer:alpha7@[fe80::1]:322/live", "rtsps://us%3Aer:***@[fe80::1]:322/live"),
        ("rtsp://admin:alpha7@cam/path@2", "rtsp://admin:***@cam/path@2"),  # '@' in the path stays
        ("rtsp://cam/live@2", "rtsp://cam/live@2"),
        ("rtsp://cam:554/user=admin&password=alpha7&channel=1", "rtsp://cam:554/user=admin&password=***&channel=1"),
        ("rtsp://cam/live?token=alpha7&pwd=bravo7#x", "rtsp://cam/live?token=***&pwd=***#x"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert not leaked(expected)


def test_redact_text_and_config() -> None:
    message = "[Errno 111] Connection refused: 'rtsp://u:alpha7@bravo7@127.0.0.1:1/x'; Authorization: Bearer charlie7"
    assert redact_text(message) == "[Errno 111] Connection refused: 'rtsp://u:***@127.0.0.1:1/x'; Authorization: Bearer ***"
    config = {"cameras": [{"source": {"url": "rtsp://u:alpha7@h/x", "transport": "tcp"}}],
              "server": {"rtsp": {"auth": {"users": [{"username": "viewer", "password": "bravo7"}]}},
                         "http": {"auth": {"token": "charlie7", "token_file": None}}}}
    assert redact_config(config) == {
        "cameras": [{"source": {"url": "rtsp://u:***@h/x", "transport": "tcp"}}],
        "server": {"rtsp": {"auth": {"users": [{"username": "viewer", "password": "***"}]}},
                   "http": {"auth": {"token": "***", "token_file": None}}},
    }


CONNECTING_PASSWORD = "alpha7@bravo7:charlie7%2Fdelta7%25echo7%zz"  # '@', ':', encoded '/' and '%', a raw '%'


def test_validate_config_prints_everything_but_secrets(tmp_path: Path) -> None:
    config = tmp_path / "secret.yaml"
    config.write_text(yaml.safe_dump({
        "cameras": [
            {"name": "gate", "source": {"type": "rtsp", "url": f"rtsp://admin:{CONNECTING_PASSWORD}@10.0.0.2/live"},
             "sinks": [{"type": "rtsp_publish", "url": "rtsp://pub:foxtrot7/golf7@hotel7@10.0.0.3/x"}]},
            {"name": "yard", "source": {"type": "rtsp", "url": "rtsp://cam:554/user=admin&password=india7"}},
        ],
        "server": {"rtsp": {"auth": {"users": [{"username": "viewer", "password": "juliet7:kilo7@lima7"}]}},
                   "http": {"auth": {"token": "mike7-november7-oscar7"}}},
    }))
    result = subprocess.run([sys.executable, "-m", "streamer", "validate-config", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not leaked(result.stdout + result.stderr), leaked(result.stdout + result.stderr)
    printed = yaml.safe_load(result.stdout)
    assert printed["cameras"][0]["source"]["url"] == "rtsp://admin:***@10.0.0.2/live"
    assert printed["cameras"][0]["sinks"][0]["url"] == "rtsp://pub:***@10.0.0.3/x"
    assert printed["cameras"][1]["source"]["url"] == "rtsp://cam:554/user=admin&password=***"
    assert printed["server"]["rtsp"]["auth"]["users"] == [{"username": "viewer", "password": "***"}]
    assert printed["server"]["http"]["auth"]["token"] == "***"
    # otherwise complete: every default is there
    assert printed["cameras"][0]["source"]["reconnect_backoff_s"] == [0.5, 1.0, 2.0, 5.0, 10.0]
    assert printed["server"]["http"]["max_connections"] == 256 and printed["log_level"] == "info"


def test_passwords_stay_out_of_the_log_and_the_api(camera: GstCamera, tmp_path: Path) -> None:
    """A camera that connects, two that fail (FFmpeg errors quote the URL), a publish target that fails."""
    closed = free_port()
    cameras = [
        ("good", f"rtsp://admin:{CONNECTING_PASSWORD}@127.0.0.1:{camera.port}/cam"),
        ("slash", f"rtsp://admin:foxtrot7/golf7@hotel7@127.0.0.1:{closed}/cam"),  # raw '/': refused at start
        ("refused", f"rtsp://admin:india7@juliet7:kilo7%40@127.0.0.1:{closed}/cam"),
    ]
    config = {"cameras": [{"name": name, "source": {"type": "rtsp", "url": url}, "engine": {"type": "passthrough"}}
                          for name, url in cameras],
              "server": {"rtsp": {"host": "127.0.0.1"}, "http": {"host": "127.0.0.1"}}}
    config["cameras"][0]["sinks"] = [
        {"type": "rtsp_publish", "url": f"rtsp://pub:lima7@mike7:november7%2F@127.0.0.1:{closed}/out", "reconnect_s": 0.5}
    ]
    path = tmp_path / "cameras.yaml"
    path.write_text(yaml.safe_dump(config))
    process = StreamerProcess("--config", str(path)).start()
    try:
        deadline = time.monotonic() + 30
        wanted = ["source good: connected to rtsp://admin:***@127.0.0.1",
                  "camera slash cannot start: cameras.1.source.url: a '/', '?' or '#' in the user name or password",
                  "source refused: cannot open", "publish to rtsp://pub:***@127.0.0.1"]
        while not all(any(text in line for line in process.log) for text in wanted):
            assert time.monotonic() < deadline, "missing log lines:\n" + "".join(line for line in process.log if "rtsp_publish" not in line)[-4000:]
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{process.http_port}/api/streams", timeout=5) as response:
            api = response.read().decode()
    finally:
        process.terminate()
    streams = {stream["name"]: stream for stream in json.loads(api)["streams"]}
    assert "rtsp://admin:***@127.0.0.1" in streams["refused"]["source"]["last_error"]
    assert any(reader["name"].startswith("publish-rtsp://pub:***@127.0.0.1") for reader in streams["good"]["readers"])
    log = "".join(process.log)
    assert not leaked(log), [line for line in process.log if leaked(line)][:5]
    assert not leaked(api), api
