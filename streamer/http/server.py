"""aiohttp application: /healthz, /metrics, /api/streams."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamer.config import HttpServerConfig, JobsConfig, WebRtcServerConfig
from streamer.http.guard import SHUTDOWN_TIMEOUT_S, ErrorReporter, HttpStats, listen
from streamer.http.inference_api import add_inference_routes
from streamer.http.middleware import build_middlewares
from streamer.http.openapi import add_openapi_routes
from streamer.http.streams_api import StreamsApi, recurrent_state
from streamer.jobs.service import JobService
from streamer.metrics import HttpCollector, WebRtcCollector
from streamer.registry import StreamRegistry
from streamer.webrtc.whep import WhepService
from streamer.webrtc.whip import WhipService

if TYPE_CHECKING:
    from streamer.hub import StreamHub
    from streamer.inference import InferenceService
    from streamer.pipeline import CameraPipeline
    from streamer.streams import StreamManager

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"  # the viewer page: plain HTML/JS/CSS, no CDN, works offline


def stream_status(pipeline: CameraPipeline) -> dict[str, Any]:
    source = pipeline.source.stats
    restore = pipeline.restorer.stats if pipeline.restorer else None
    readiness = pipeline.readiness()
    return {
        "name": pipeline.name,
        "ready": readiness.ready,
        "state": readiness.state,
        "reason": readiness.reason,
        "running": pipeline.running,
        "stages": {
            stage: {"running": health.running, "restarts": health.restarts, "last_error": health.last_error}
            for stage, health in pipeline.stage_health().items()
        },
        "engine": pipeline.engine.describe() if pipeline.engine else None,
        "recurrent_state": recurrent_state(pipeline),
        "source": {
            "connected": source.connected,
            "frames": source.frames,
            "reconnects": source.reconnects,
            "corrupt_packets": source.corrupt_packets,
            "last_error": source.last_error,
        },
        "frames_out": restore.frames_out if restore else 0,
        "frames_restored": restore.restored if restore else 0,
        "frames_degraded": dict(restore.degraded) if restore else {},
        "size": pipeline.hub.size,
        "fps": round(pipeline.hub.fps_estimate, 2),
        "readers": [{"name": sub.name, "dropped": sub.dropped} for sub in pipeline.readers()],
    }


class HttpServer:
    def __init__(self, config: HttpServerConfig, pipelines: StreamRegistry | list[CameraPipeline],
                 registry: CollectorRegistry, webrtc: WebRtcServerConfig | None = None,
                 hubs: Mapping[str, StreamHub] | None = None, manager: StreamManager | None = None,
                 jobs: JobsConfig | None = None, inference: InferenceService | None = None) -> None:
        self.config = config
        self.streams = pipelines if isinstance(pipelines, StreamRegistry) else StreamRegistry(pipelines)
        self.registry = registry
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.stats = HttpStats()
        self._errors = ErrorReporter(self.stats)
        self.app = web.Application(
            middlewares=build_middlewares(config, self.stats, self._errors), client_max_size=config.max_body_bytes + 1
        )
        registry.register(HttpCollector(self.stats))
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/api/streams", self.streams_v0)
        if manager is not None:
            StreamsApi(self.streams, manager).add_routes(self.app.router)
        self.jobs = JobService(jobs, registry, self._live_pressure) if jobs is not None and jobs.enabled else None
        if self.jobs is not None:
            self.jobs.add_routes(self.app.router)
        if inference is not None:
            add_inference_routes(self.app.router, inference)
        add_openapi_routes(self.app.router)
        self.whep: WhepService | None = None
        self.whip: WhipService | None = None
        if webrtc is not None and webrtc.enabled:
            self.whep = WhepService(webrtc, hubs if hubs is not None else self.streams.hubs,
                                    open_access=config.auth is None)
            self.whep.add_routes(self.app.router)
            self.streams.on_remove(self.whep.registry.end_stream)
            api_token = config.auth.bearer_token() if config.auth is not None else None
            self.whip = WhipService(webrtc, self.streams.whip_sources, api_token)
            self.whip.add_routes(self.app.router)
            self.streams.on_remove(self.whip.registry.end_stream)
            registry.register(WebRtcCollector(self.whep, self.whip))
            self.app.router.add_get("/", self.page)
            self.app.router.add_static("/static/", STATIC, follow_symlinks=False)

    def _live_pressure(self) -> int:
        """Frames the cameras sent unrestored because the engine was busy or slow (what jobs yield to)."""
        return sum(pipeline.restorer.stats.degraded.get(reason, 0) for pipeline in self.streams
                   if pipeline.restorer is not None for reason in ("engine_busy", "engine_slow"))

    @property
    def port(self) -> int:
        sockets = self._listener.sockets if self._listener is not None else ()
        return int(sockets[0].getsockname()[1]) if sockets else self.config.port

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        try:
            self._listener = await listen(self._runner, self.config, self.stats, self._errors)
        except OSError:
            await self.stop()
            raise
        log.info("HTTP server listening on %s:%d", self.config.host, self.port)
        open_whip = self.whip.open_cameras() if self.whip is not None else []
        warning = exposure_warning(self.config, self.port, webrtc=self.whep is not None, open_whip=open_whip)
        if warning:
            log.warning("%s", warning)

    async def stop(self) -> None:
        listener, runner = self._listener, self._runner
        self._listener = self._runner = None
        if listener is not None:
            listener.close()
        if self.whep is not None:
            await self.whep.close()
        if self.whip is not None:
            await self.whip.close()
        if self.jobs is not None:
            await self.jobs.close()
        if runner is not None:
            await runner.cleanup()

    async def page(self, request: web.Request) -> web.FileResponse:
        """The viewer page (streams, WebRTC player, raw | restored compare, live stats)."""
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the process and its event loop answer. Whether cameras produce output is /readyz."""
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: 200 only while every camera produces output frames; else 503 with each reason."""
        cameras = {}
        for pipeline in self.streams:
            readiness = pipeline.readiness()
            cameras[pipeline.name] = {"ready": readiness.ready, "state": readiness.state, "reason": readiness.reason}
        ready = all(camera["ready"] for camera in cameras.values())
        return web.json_response({"status": "ready" if ready else "not ready", "cameras": cameras},
                                 status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def streams_v0(self, request: web.Request) -> web.Response:
        """The viewer page's detailed list (readers and stages); integrations use /api/v1/streams."""
        return web.json_response({"streams": [stream_status(pipeline) for pipeline in self.streams]})


def exposure_warning(config: HttpServerConfig, port: int, webrtc: bool = False,
                     open_whip: list[str] | None = None) -> str | None:
    """The warning for an API that other machines can reach without a token (None when it is protected):
    /metrics and /api, WHEP viewing when ``webrtc``, WHIP publishing to the ``open_whip`` cameras."""
    if config.auth is not None or _is_loopback(config.host):
        return None
    exposed = "/metrics, /api"
    if webrtc:
        exposed += ", WHEP viewing (/whep/<camera>, and the unrestored /whep/<camera>/raw)"
    if open_whip:
        exposed += f", WHIP publishing to {', '.join(open_whip)} (anyone can inject video; set source.token)"
    return (
        f"HTTP: {exposed} on {config.host or '0.0.0.0'}:{port} are open to anyone who can reach this "
        "port (no token): set server.http.auth.token or token_file (or STREAMER__SERVER__HTTP__AUTH__TOKEN), "
        "or server.http.host: 127.0.0.1 to serve this machine only"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
