"""Camera sharding: which worker of N runs which camera of a shared configuration."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamer.config import AppConfig, ConfigError, build_config
from streamer.sharding import Shard, assign, owner, parse_pins, parse_shard, restrict, shard_from
from tests.peers.processes import StreamerProcess

NAMES = ["gate", "yard", "lobby", "dock-1", "dock-2", "parking.north", "parking.south", "roof"]
MANY = [f"camera-{index:04d}" for index in range(2000)]


def config_of(names: list[str]) -> AppConfig:
    return build_config({"cameras": [{"name": name, "source": {"type": "demo"}} for name in names]}, environ={})


def test_assignment_is_fixed_across_processes_and_versions() -> None:
    # Workers compute owners independently, so the hash must never depend on the process (Python's str hash
    # is salted per process) or change between releases: a change here reshuffles every deployed camera.
    assert assign(NAMES, 4) == {"gate": 3, "yard": 3, "lobby": 0, "dock-1": 3, "dock-2": 2,
                                "parking.north": 3, "parking.south": 3, "roof": 1}


def test_one_shard_owns_everything() -> None:
    assert set(assign(MANY[:50], 1).values()) == {0}


@pytest.mark.parametrize("count", [1, 2, 4, 7])
def test_adding_a_shard_moves_only_the_cameras_the_new_shard_wins(count: int) -> None:
    before, after = assign(MANY, count), assign(MANY, count + 1)
    moved = [name for name in MANY if before[name] != after[name]]
    assert all(after[name] == count for name in moved)  # nothing moves between the old shards
    share = len(moved) / len(MANY)
    assert abs(share - 1 / (count + 1)) < 0.04, share  # about 1/(N+1) of the cameras


def test_removing_the_last_shard_moves_only_its_cameras() -> None:
    before, after = assign(MANY, 8), assign(MANY, 7)
    assert all(after[name] == before[name] for name in MANY if before[name] != 7)


def test_cameras_spread_evenly() -> None:
    counts = Counter(assign(MANY, 8).values())
    assert set(counts) == set(range(8))
    assert all(abs(count - 250) < 50 for count in counts.values()), counts


def test_a_pin_overrides_the_hash_and_nothing_else() -> None:
    pins = {"gate": 0, "roof": 2}
    pinned = assign(NAMES, 4, pins)
    assert pinned["gate"] == 0 and pinned["roof"] == 2
    assert {name: shard for name, shard in pinned.items() if name not in pins} == \
        {name: shard for name, shard in assign(NAMES, 4).items() if name not in pins}
    assert owner("gate", 4) == 3  # without the pin


def test_parse_pins() -> None:
    assert parse_pins("gate=0, yard=2,") == {"gate": 0, "yard": 2}
    assert parse_pins(["gate=1", "a.b-c=3,yard=0"]) == {"gate": 1, "a.b-c": 3, "yard": 0}
    assert parse_pins(None) == {} and parse_pins("") == {}
    for bad in ("gate", "gate=x", "=2", "gate=-1"):
        with pytest.raises(ConfigError, match="NAME=INDEX"):
            parse_pins(bad)


def test_parse_shard_explicit_and_from_the_pod_name() -> None:
    assert parse_shard("3/8", {}) == Shard(3, 8)
    assert parse_shard(" 0/1 ", {}) == Shard(0, 1)
    assert parse_shard("auto", {"STREAMER_SHARDS": "8"}, hostname="streamer-3") == Shard(3, 8)
    assert parse_shard("auto", {"STREAMER_SHARDS": "8", "HOSTNAME": "streamer-5"}) == Shard(5, 8)
    assert parse_shard("auto", {"STREAMER_SHARDS": "16"}, hostname="streamer-gpu-12.streamer.video.svc") == Shard(12, 16)


@pytest.mark.parametrize(("text", "environ", "hostname", "message"), [
    ("3-8", {}, None, "expected I/N"),
    ("8/8", {}, None, "shard index must be 0 to 7"),
    ("0/0", {}, None, "shard count must be"),
    ("auto", {}, "streamer-3", "needs STREAMER_SHARDS"),
    ("auto", {"STREAMER_SHARDS": "4"}, "worker", "does not end in -ORDINAL"),
    ("auto", {"STREAMER_SHARDS": "4"}, "streamer-4", "shard index must be 0 to 3"),
])
def test_parse_shard_errors(text: str, environ: dict[str, str], hostname: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_shard(text, environ, hostname)


def test_a_pin_beyond_the_shards_is_an_error() -> None:
    with pytest.raises(ConfigError, match="gate=4: there are only shards 0 to 3"):
        parse_shard("1/4", {}, pins={"gate": 4})


def test_shard_from_flag_then_environment() -> None:
    environ = {"STREAMER_SHARD": "1/4", "STREAMER_SHARD_PINS": "gate=1,yard=2"}
    assert shard_from(None, None, {}) is None
    assert shard_from(None, None, {"STREAMER_SHARD": " "}) is None
    assert shard_from(None, None, environ) == Shard(1, 4, {"gate": 1, "yard": 2})
    assert shard_from("2/3", ["yard=0"], environ) == Shard(2, 3, {"gate": 1, "yard": 0})  # the flags win


def test_the_shards_split_a_configuration_without_overlap() -> None:
    config = config_of(NAMES)
    shares = [[camera.name for camera in restrict(config, Shard(index, 4)).cameras] for index in range(4)]
    assert sorted(name for share in shares for name in share) == sorted(NAMES)
    assert shares[3] == ["gate", "yard", "dock-1", "parking.north", "parking.south"]  # order of the file kept
    assert restrict(config, None) is config
    assert [camera.name for camera in config.cameras] == NAMES  # the shared configuration is left alone


def test_an_empty_shard_runs_with_no_camera_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="streamer.sharding"):
        config = restrict(config_of(["lobby"]), Shard(1, 2, {"nowhere": 0}))
    assert config.cameras == []
    assert "shard 1/2: no camera of the 1 in the configuration falls to this shard" in caplog.text
    assert "shard pins name no camera of the configuration: nowhere" in caplog.text


def test_writeback_is_refused_with_a_shard() -> None:
    with pytest.raises(ConfigError, match="--config-writeback cannot be used with --shard"):
        restrict(config_of(NAMES), Shard(0, 2), writeback=True)
    assert restrict(config_of(NAMES), None, writeback=True).cameras  # no shard: nothing to refuse


def get_json(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_streamer_run_with_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers of one config, as a StatefulSet starts them: pod 0 runs the camera, pod 1 runs none, says
    so, and is alive and ready all the same."""
    config = tmp_path / "cameras.yaml"
    config.write_text("cameras:\n"
                      "  - {name: lobby, source: {type: demo, width: 160, height: 96}, engine: {type: passthrough}}\n")
    assert owner("lobby", 2) == 0
    monkeypatch.setitem(os.environ, "STREAMER_SHARD", "auto")
    monkeypatch.setitem(os.environ, "STREAMER_SHARDS", "2")
    workers: list[StreamerProcess] = []
    try:
        for ordinal in (0, 1):
            monkeypatch.setitem(os.environ, "HOSTNAME", f"streamer-{ordinal}")
            workers.append(StreamerProcess("--config", str(config)).start())
        first, second = workers
        assert any("shard 0/2: 1 of 1 camera(s): lobby" in line for line in first.log), "".join(first.log)
        assert any("shard 1/2: no camera of the 1 in the configuration falls to this shard; running with none"
                   in line for line in second.log), "".join(second.log)
        assert [stream["name"] for stream in get_json(first.http_port, "/api/v1/streams")[1]["streams"]] == ["lobby"]
        assert get_json(second.http_port, "/api/v1/streams") == (200, {"streams": []})
        assert get_json(second.http_port, "/readyz") == (200, {"status": "ready", "cameras": {}})
        with urllib.request.urlopen(f"http://127.0.0.1:{second.http_port}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        for worker in workers:
            worker.kill()
