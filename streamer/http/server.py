"""aiohttp application: /healthz, /metrics, /api/streams."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamer.config import HttpServerConfig

if TYPE_CHECKING:
    from streamer.pipeline import CameraPipeline

log = logging.getLogger(__name__)


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
        "readers": [{"name": sub.name, "dropped": sub.dropped} for sub in pipeline.hub.subscriptions],
    }


class HttpServer:
    def __init__(self, config: HttpServerConfig, pipelines: list[CameraPipeline], registry: CollectorRegistry) -> None:
        self.config = config
        self.pipelines = pipelines
        self.registry = registry
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.app = web.Application()
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/api/streams", self.streams)

    @property
    def port(self) -> int:
        if self._site is None or self._site._server is None:
            return self.config.port
        sockets = getattr(self._site._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self.config.port

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await self._site.start()
        log.info("HTTP server listening on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the process and its event loop answer. Whether cameras produce output is /readyz."""
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: 200 only while every camera produces output frames; else 503 with each reason."""
        cameras = {}
        for pipeline in self.pipelines:
            readiness = pipeline.readiness()
            cameras[pipeline.name] = {"ready": readiness.ready, "state": readiness.state, "reason": readiness.reason}
        ready = all(camera["ready"] for camera in cameras.values())
        return web.json_response({"status": "ready" if ready else "not ready", "cameras": cameras},
                                 status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def streams(self, request: web.Request) -> web.Response:
        return web.json_response({"streams": [stream_status(pipeline) for pipeline in self.pipelines]})
