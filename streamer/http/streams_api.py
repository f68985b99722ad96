"""``/api/v1/streams``: list, inspect, add, change and remove cameras while the service runs.

Bodies are one camera entry of the YAML configuration (``streamer.config.CameraConfig``), validated by the
same pydantic models: a bad body is 422 with each field's path and reason, a taken name 409, an unknown one
404. Every response is one of the models below, so the OpenAPI document is generated from them.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, Field

from streamer.streams import StreamConflict, StreamInvalid, StreamManager, StreamNotFound

if TYPE_CHECKING:
    from streamer.pipeline import CameraPipeline
    from streamer.registry import StreamRegistry

MAX_BODY_BYTES = 65536


class FieldError(BaseModel):
    field: str = Field(description="Path of the field in the camera entry, e.g. source.url")
    reason: str = Field(description="What is wrong with it")


class ApiError(BaseModel):
    error: str = Field(description="What went wrong, in one line")
    fields: list[FieldError] = Field(default_factory=list, description="Each invalid field (422 only)")


class StreamStatus(BaseModel):
    name: str = Field(description="The camera's name: rtsp://host:port/<name>, /whep/<name>")
    state: str = Field(description="starting | running | stalled | failed | finished | stopped")
    ready: bool = Field(description="Producing output frames now (what /readyz checks)")
    reason: str = Field(description="Why not ready ('ok' when ready)")
    fps_in: float = Field(description="Frames a second decoded from the source (last few seconds)")
    fps_out: float = Field(description="Frames a second of the restored stream")
    engine: str | None = Field(description="Backend, model and precision restoring it (None before it is built)")
    level: str | None = Field(description="The degradation ladder's level now: full, fast, half, temporal "
                              "(None before the engine is built)")
    viewers: dict[str, int] = Field(description="Readers by protocol: rtsp, webrtc (the raw and compare views' included), rtsp_publish, file")
    frames_in: int = Field(description="Frames decoded from the source")
    frames_out: int = Field(description="Frames handed to the encoder")
    frames_restored: int = Field(description="Frames that went through the model")
    reconnects: int = Field(description="Source reconnect attempts")
    last_error: str | None = Field(description="The newest error of the source or a stage")
    uptime_s: float = Field(description="Seconds since the camera was started")
    recurrent_state: dict[str, int] | None = Field(
        None, description="A recurrent model's windows by how its state went in: 'continued' from the previous "
        "frame, 'restarted' from the window's own frame (a stream's start, a gap); None for other models")
    exposure_gain: float | None = Field(
        None, description="Gain the exposure correction applied to the last frame (1: left alone); None when off")
    output_scale: int = Field(1, description="Output size over the camera's: 2 for an upscaling model (lite-sr2)")
    frames_upscaled: int = Field(
        0, description="Frames an upscaling model's camera sent at the output size by bicubic scaling, not by the "
        "model (restored at a lower ladder level, or not restored)")


def recurrent_state(pipeline: CameraPipeline) -> dict[str, int] | None:
    """A recurrent model's windows by how its state went in (None for a window model)."""
    counts = pipeline.restorer.engine.recurrent_counts() if pipeline.restorer else None
    return None if counts is None else {"continued": counts[0], "restarted": counts[1]}


class StreamList(BaseModel):
    streams: list[StreamStatus]


class StreamChange(BaseModel):
    stream: StreamStatus
    restarted: bool = Field(description="The camera was restarted for the change (its viewers reconnect)")
    persisted: bool = Field(description="The change was written to the config file (--config-writeback)")


class StreamsApi:
    def __init__(self, registry: StreamRegistry, manager: StreamManager) -> None:
        self.registry = registry
        self.manager = manager
        self._fps: dict[str, tuple[float, int, float]] = {}  # name -> (time, frames, fps) for fps_in

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v1/streams", self.list)
        router.add_post("/api/v1/streams", self.create)
        router.add_get("/api/v1/streams/{name}", self.show)
        router.add_put("/api/v1/streams/{name}", self.put)
        router.add_patch("/api/v1/streams/{name}", self.patch)
        router.add_delete("/api/v1/streams/{name}", self.delete)

    async def list(self, request: web.Request) -> web.Response:
        return _json(StreamList(streams=[self.status(pipeline) for pipeline in self.registry]))

    async def show(self, request: web.Request) -> web.Response:
        pipeline = self.registry.get(request.match_info["name"])
        if pipeline is None:
            return _error(404, f"no stream named {request.match_info['name']!r}")
        return _json(self.status(pipeline))

    async def create(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        try:
            pipeline = await self.manager.add(body)
        except StreamConflict as error:
            return _error(409, str(error), [FieldError(field="name", reason="already in use")])
        except StreamInvalid as error:
            return _invalid(error)
        change = StreamChange(stream=self.status(pipeline), restarted=False, persisted=self.manager.writeback is not None)
        return _json(change, 201, {"Location": f"/api/v1/streams/{pipeline.name}"})

    async def put(self, request: web.Request) -> web.Response:
        return await self._change(request, merge=False)

    async def patch(self, request: web.Request) -> web.Response:
        return await self._change(request, merge=True)

    async def _change(self, request: web.Request, merge: bool) -> web.Response:
        name = request.match_info["name"]
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        entry = _merge(self.manager.entries.get(name, {}), body) if merge else body
        try:
            restarted = await self.manager.replace(name, entry)
        except StreamNotFound:
            return _error(404, f"no stream named {name!r}")
        except StreamInvalid as error:
            return _invalid(error)
        pipeline = self.registry.get(name)
        if pipeline is None:  # removed by a concurrent DELETE
            return _error(404, f"no stream named {name!r}")
        persisted = restarted and self.manager.writeback is not None
        return _json(StreamChange(stream=self.status(pipeline), restarted=restarted, persisted=persisted))

    async def delete(self, request: web.Request) -> web.Response:
        try:
            await self.manager.remove(request.match_info["name"])
        except StreamNotFound:
            return _error(404, f"no stream named {request.match_info['name']!r}")
        return web.Response(status=204)

    def status(self, pipeline: CameraPipeline) -> StreamStatus:
        readiness = pipeline.readiness()
        source = pipeline.source.stats
        restore = pipeline.restorer.stats if pipeline.restorer else None
        viewers: dict[str, int] = {}
        for subscription in pipeline.readers():
            viewers[subscription.protocol] = viewers.get(subscription.protocol, 0) + 1
        last_error = pipeline.failure or source.last_error or next(
            (health.last_error for health in pipeline.stage_health().values() if health.last_error), None)
        return StreamStatus(
            name=pipeline.name, state=readiness.state, ready=readiness.ready, reason=readiness.reason,
            fps_in=self._fps_in(pipeline), fps_out=round(pipeline.hub.fps_estimate, 2),
            engine=pipeline.engine.describe() if pipeline.engine else None,
            level=pipeline.restorer.controller.level if pipeline.restorer else None, viewers=viewers,
            frames_in=source.frames, frames_out=restore.frames_out if restore else 0,
            frames_restored=restore.restored if restore else 0, reconnects=source.reconnects,
            last_error=last_error or None, uptime_s=round(time.time() - pipeline.started_at, 1),
            recurrent_state=recurrent_state(pipeline),
            exposure_gain=round(pipeline.exposure.gain, 3) if pipeline.exposure is not None else None,
            output_scale=pipeline.output_scaler.factor if pipeline.output_scaler is not None else 1,
            frames_upscaled=pipeline.output_scaler.upscaled if pipeline.output_scaler is not None else 0,
        )

    def _fps_in(self, pipeline: CameraPipeline) -> float:
        """Decoded frames a second between two reads at least 1 s apart; on a first read (or a camera read
        less than a second ago) the camera's frame rate from its timestamps, while it is connected."""
        now, frames = time.monotonic(), pipeline.source.stats.frames
        then, before, rate = self._fps.get(pipeline.name, (now, frames, -1.0))
        if now - then >= 1.0:
            rate = round(max(0, frames - before) / (now - then), 2)
            then, before = now, frames
        self._fps[pipeline.name] = (then, before, rate)
        for gone in [known for known in self._fps if known not in self.registry]:
            del self._fps[gone]
        if rate < 0:  # not measured yet
            restorer = pipeline.restorer
            connected = pipeline.source.stats.connected and restorer is not None and restorer.stats.frames_in > 0
            return round(1.0 / restorer.interval_s, 2) if connected and restorer is not None else 0.0
        return rate


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _error(413, f"body over {MAX_BODY_BYTES} bytes")
    if request.content_type != "application/json":
        return _error(415, "send the camera entry as application/json")
    try:
        body = json.loads(await request.text())
    except (ValueError, UnicodeDecodeError) as error:
        return _error(400, f"body is not JSON: {error}")
    if not isinstance(body, dict):
        return _error(422, "body must be a JSON object", [FieldError(field="(body)", reason="not an object")])
    return body


def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7396): objects merge, null removes, anything else replaces."""
    merged = dict(base)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json",
                        headers=headers)


def _error(status: int, message: str, fields: list[FieldError] | None = None) -> web.Response:
    return _json(ApiError(error=message, fields=fields or []), status)


def _invalid(error: StreamInvalid) -> web.Response:
    fields = [FieldError(field=field, reason=reason) for field, reason in error.errors]
    return _error(422, f"invalid camera entry: {error}", fields)
