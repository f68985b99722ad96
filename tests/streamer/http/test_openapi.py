"""The OpenAPI document is valid OpenAPI 3.1, generated from the models the handlers use, and lists every
/api/v1 route the server has."""

from __future__ import annotations

from openapi_spec_validator import validate

from streamer.config import build_config
from streamer.http.openapi import docs_page, openapi_document
from streamer.http.server import HttpServer
from streamer.inference import InferenceService
from streamer.metrics import build_registry
from streamer.registry import StreamRegistry
from streamer.streams import StreamManager
from streamer.taps.publisher import TapSockets


def test_the_document_is_valid_openapi_and_covers_every_api_route() -> None:
    document = openapi_document()
    validate(document)  # raises on any schema error
    config = build_config({"cameras": [{"name": "cam", "source": {"type": "demo"}}]}, environ={})
    registry = StreamRegistry()
    manager = StreamManager(config, registry, TapSockets())
    server = HttpServer(config.server.http, registry, build_registry(registry, None), manager=manager,
                        jobs=config.server.jobs, inference=InferenceService())
    routes = {(route.method.lower(), route.resource.canonical) for route in server.app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith("/api/v1/")
              and route.method != "HEAD"}
    documented = {(method, path) for path, methods in document["paths"].items() for method in methods}
    assert routes - {("get", "/api/v1/openapi.json"), ("get", "/api/v1/docs")} == documented
    assert document["components"]["schemas"]["CameraConfig"]["additionalProperties"] is False
    assert "/api/v1/jobs/{job}/result" in docs_page(document)
