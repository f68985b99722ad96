"""Tap configuration: strict, bounded, and cameras sharing an endpoint agree on its socket."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streamer.config import ConfigError, build_config
from streamer.taps.publisher import TapError, TapSocket, TapSockets
from tests.peers.processes import free_port

DEMO = {"type": "demo"}


def config(*taps: dict[str, Any]) -> Any:
    return build_config({"cameras": [{"name": f"cam{index}", "source": DEMO, "taps": tap}
                                      for index, tap in enumerate(taps)]}, environ={})


@pytest.mark.parametrize(("taps", "words"), [
    ({"endpoint": "http://x:1"}, "tcp://host:port or ipc:///path"),
    ({"pattern": "req"}, "'pub' or 'push'"),
    ({"points": [{"point": "raw"}, {"point": "raw"}]}, "may appear once"),
    ({"points": [{"point": "restored", "quality": 0}]}, "quality"),
    ({"points": [{"point": "restored", "width": 33}]}, "multiple of 2"),
    ({"points": [{"point": "restored", "fps": 5}]}, "fps"),
])
def test_bad_tap_settings_are_named(taps: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        config({"enabled": True, **taps})


def test_cameras_on_one_endpoint_share_one_socket_and_must_agree() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=r"same taps\.pattern"):
        config({"enabled": True, "endpoint": endpoint}, {"enabled": True, "endpoint": endpoint, "pattern": "push"})
    two = config({"enabled": True, "endpoint": endpoint}, {"enabled": True, "endpoint": endpoint})
    sockets = TapSockets()
    try:
        taps = [sockets.taps_for(camera.name, camera.taps, lambda level: None) for camera in two.cameras]
        assert len(sockets.sockets) == 1 and len(sockets.sockets[endpoint].taps) == 4
        assert taps[1]["restored"].topic == b"cam1/restored"
    finally:
        sockets.stop()
        sockets.stop()  # idempotent


def test_an_endpoint_in_use_is_a_clear_error() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    taps = config({"enabled": True, "endpoint": endpoint}).cameras[0].taps
    first = TapSocket(taps)
    try:
        with pytest.raises(TapError, match=re.escape(f"taps.endpoint={endpoint}: cannot bind")):
            TapSocket(taps)
    finally:
        first.stop()
