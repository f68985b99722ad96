"""``GET /api/v1/inference``: the shared engines, which cameras use each, and what each device's worker did."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from streamer.inference import InferenceService


class SharedEngineStatus(BaseModel):
    engine: str = Field(description="The engine as the log names it (backend, model, precision)")
    backend: str
    model: str
    device: str
    cameras: list[str] = Field(description="The cameras sharing it")


class DeviceStatus(BaseModel):
    device: str
    batches: int = Field(description="Calls into the engines")
    windows: int = Field(description="Windows restored (a batch holds one or more)")
    busy_seconds: float = Field(description="Seconds the device's worker spent restoring")
    queued: int = Field(description="Windows waiting now")
    expired: int = Field(description="Windows dropped unrun: still queued at their frame's deadline")
    rejected: int = Field(description="Windows refused: the camera's queue was full")
    failed: int = Field(description="Windows whose batch failed in the backend")
    batch_sizes: dict[str, int] = Field(description="Batches by number of windows")
    camera_seconds: dict[str, float] = Field(description="Compute seconds by camera (its share of the device)")


class InferenceStatus(BaseModel):
    shared: bool = Field(description="server.inference.shared: one engine per model and device")
    threads: int = Field(description="server.inference.threads (0 = all cores)")
    max_batch: int = Field(description="server.inference.max_batch (0 = the backend's choice)")
    engines: list[SharedEngineStatus]
    devices: list[DeviceStatus]


def add_inference_routes(router: web.UrlDispatcher, service: InferenceService) -> None:
    async def status(request: web.Request) -> web.Response:
        return web.json_response(InferenceStatus.model_validate(service.describe()).model_dump(mode="json"))

    router.add_get("/api/v1/inference", status)
