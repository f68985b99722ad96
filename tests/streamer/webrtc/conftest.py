"""An HttpServer with WHEP on 127.0.0.1, serving a hub fed by our real H.264 encoder at 25 fps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from streamer.config import EncoderConfig, HttpServerConfig, WebRtcServerConfig
from streamer.encoder import H264Encoder
from streamer.http.server import HttpServer
from streamer.hub import KeyframeGate, StreamHub
from streamer.webrtc.views import CameraViews
from tests.media import clean_frames
from tools.instant_start import feed

WIDTH, HEIGHT, FPS = 320, 176, 25


@dataclass
class WhepServer:
    server: HttpServer
    hub: StreamHub
    encoder: H264Encoder
    registry: CollectorRegistry
    views: CameraViews

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def whep_server(http: dict[str, Any] | None = None, gop_s: float = 2.0, instant_start: bool = True,
                      originals: list[np.ndarray] | None = None, **webrtc: Any) -> AsyncIterator[WhepServer]:
    """Stream ``live`` over WHEP; ``http`` fields of HttpServerConfig, ``webrtc`` of WebRtcServerConfig.
    The stream is ``clean_frames``; with ``originals`` it is restored from them (the camera's frames), and
    its raw and compare views are served too."""
    hub = StreamHub("live")
    encoder_config = EncoderConfig(bitrate_kbps=800, gop_s=gop_s)
    encoder = H264Encoder(encoder_config, fps_hint=FPS)
    views = CameraViews("live", encoder_config)
    if instant_start:
        hub.keyframes = KeyframeGate(encoder.request_keyframe, 0.25)
    registry = CollectorRegistry()
    config = WebRtcServerConfig(**{"ice_host_addresses": ["127.0.0.1"], **webrtc})
    server = HttpServer(HttpServerConfig(**{"host": "127.0.0.1", "port": 0, **(http or {})}), [], registry,
                        config, {"live": hub, **views.hubs()})
    feeder = asyncio.create_task(feed(hub, encoder, clean_frames(WIDTH, HEIGHT, FPS), originals, views.offer))
    await server.start()
    try:
        yield WhepServer(server, hub, encoder, registry, views)
    finally:
        feeder.cancel()
        await server.stop()
        hub.close()
        views.close()
