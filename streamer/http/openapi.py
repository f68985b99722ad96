"""The OpenAPI 3.1 document of ``/api/v1`` at ``/api/v1/openapi.json``, and a small page that lists it.

The schemas are generated from the pydantic models the handlers validate and answer with (the camera
entry is ``streamer.config.CameraConfig``, the same model as the YAML file), never written by hand; the
operations are listed here, one line each.
"""

from __future__ import annotations

import html
import json
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streamer import __version__
from streamer.config import CameraConfig
from streamer.config.base import NAME_PATTERN
from streamer.http.inference_api import InferenceStatus
from streamer.http.streams_api import ApiError, StreamChange, StreamList, StreamStatus
from streamer.jobs.models import Job, JobError, JobList, PathSubmission

# (method, path, summary, request model, {status: (response model or None, description)})
Operation = tuple[str, str, str, type[BaseModel] | None, dict[int, tuple[type[BaseModel] | None, str]]]

STREAM_OPERATIONS: list[Operation] = [
    ("get", "/api/v1/streams", "List the cameras with their state", None, {200: (StreamList, "The cameras")}),
    ("post", "/api/v1/streams", "Add a camera (one camera entry of the YAML config); it starts at once",
     CameraConfig, {201: (StreamChange, "Added and started"), 409: (ApiError, "The name is taken"),
                    422: (ApiError, "A field is invalid (each one named)")}),
    ("get", "/api/v1/streams/{name}", "One camera's state, fps, engine, viewers, last error, uptime", None,
     {200: (StreamStatus, "The camera"), 404: (ApiError, "No such camera")}),
    ("put", "/api/v1/streams/{name}", "Replace a camera's settings (it restarts when they differ)", CameraConfig,
     {200: (StreamChange, "Changed (or unchanged)"), 404: (ApiError, "No such camera"),
      422: (ApiError, "A field is invalid")}),
    ("patch", "/api/v1/streams/{name}", "Change some settings (JSON merge patch, RFC 7396; restarts the camera)",
     None, {200: (StreamChange, "Changed (or unchanged)"), 404: (ApiError, "No such camera"),
            422: (ApiError, "A field is invalid")}),
    ("delete", "/api/v1/streams/{name}", "Remove a camera: its viewers' sessions end, its threads stop", None,
     {204: (None, "Removed"), 404: (ApiError, "No such camera")}),
]


JOB_OPERATIONS: list[Operation] = [
    ("post", "/api/v1/jobs", "Restore a video file: a multipart upload (part 'file') or a server path (JSON)",
     PathSubmission, {201: (Job, "Queued"), 403: (JobError, "The path is outside server.jobs.allowed_paths"),
                      413: (JobError, "Over server.jobs.max_upload_bytes"), 415: (JobError, "Not a video"),
                      429: (JobError, "The queue is full"), 400: (JobError, "A bad query parameter")}),
    ("get", "/api/v1/jobs", "List the jobs", None, {200: (JobList, "The jobs")}),
    ("get", "/api/v1/jobs/{job}", "A job's state and progress (frames done / total, fps, ETA)", None,
     {200: (Job, "The job"), 404: (JobError, "No such job")}),
    ("get", "/api/v1/jobs/{job}/result", "Download the restored file (H.264 MP4)", None,
     {200: (None, "The file (video/mp4)"), 404: (JobError, "No such job"), 409: (JobError, "Not done"),
      410: (JobError, "Cancelled or expired: the files were removed")}),
    ("delete", "/api/v1/jobs/{job}", "Cancel a job (or forget a finished one); its files are removed", None,
     {204: (None, "Cancelled or forgotten"), 404: (JobError, "No such job")}),
]

INFERENCE_OPERATIONS: list[Operation] = [
    ("get", "/api/v1/inference", "The shared engines, the cameras using each, each device's batches and shares",
     None, {200: (InferenceStatus, "The inference service")}),
]

UPLOAD = {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}


def openapi_document(operations: list[Operation] | None = None) -> dict[str, Any]:
    operations = [*STREAM_OPERATIONS, *JOB_OPERATIONS, *INFERENCE_OPERATIONS] if operations is None else operations
    models = {model for _, _, _, body, responses in operations
              for model in [body, *(answer for answer, _ in responses.values())] if model is not None}
    keyed: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (model, "validation" if model is CameraConfig else "serialization")
        for model in sorted(models, key=lambda model: model.__name__)
    ]
    _, schemas = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, body, responses in operations:
        operation: dict[str, Any] = {"summary": summary, "responses": {
            str(status): {"description": text, **({"content": {"application/json": {"schema": _ref(model)}}}
                                                  if model is not None else {})}
            for status, (model, text) in responses.items()
        }}
        if "{name}" in path:
            operation["parameters"] = [{"name": "name", "in": "path", "required": True,
                                        "schema": {"type": "string", "pattern": NAME_PATTERN}}]
        if "{job}" in path:
            operation["parameters"] = [{"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}]
        if method in ("post", "put", "patch"):
            schema = _ref(body) if body is not None else {"type": "object", "description": "Fields to change"}
            content_type = "application/merge-patch+json" if method == "patch" else "application/json"
            content: dict[str, Any] = {content_type: {"schema": schema}, "application/json": {"schema": schema}}
            if body is PathSubmission:
                content["multipart/form-data"] = {"schema": UPLOAD}
                operation["parameters"] = [{"name": "exposure", "in": "query", "required": False,
                                            "description": "Brighten dark scenes after restoration",
                                            "schema": {"type": "boolean", "default": False}}]
            operation["requestBody"] = {"required": True, "content": content}
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "streamer API", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def docs_page(document: dict[str, Any]) -> str:
    """A plain page listing the operations and linking the JSON (no CDN, no script)."""
    rows = "".join(
        f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(operation['summary'])}</td></tr>"
        for path, methods in document["paths"].items() for method, operation in methods.items()
    )
    return (
        "<!doctype html><meta charset=utf-8><title>streamer API</title>"
        "<style>body{font:14px sans-serif;margin:2em}td{padding:2px 10px;border-bottom:1px solid #ddd}</style>"
        f"<h1>streamer API {html.escape(document['info']['version'])}</h1>"
        "<p>Bearer token on every path (when <code>server.http.auth</code> is set). Machine-readable: "
        "<a href=/api/v1/openapi.json>/api/v1/openapi.json</a> (OpenAPI 3.1, schemas from the pydantic models).</p>"
        f"<table>{rows}</table>"
    )


def add_openapi_routes(router: web.UrlDispatcher, operations: list[Operation] | None = None) -> None:
    document = openapi_document(operations)
    body = json.dumps(document, indent=1)
    page = docs_page(document)

    async def spec(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    router.add_get("/api/v1/openapi.json", spec)
    router.add_get("/api/v1/docs", docs)
