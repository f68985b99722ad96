"""An HttpServer on a real socket in the test's own event loop, and a raw HTTP/1.1 client for it."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
from prometheus_client import CollectorRegistry

from streamer.config import HttpServerConfig
from streamer.http.server import HttpServer

TOKEN = "kilo7-lima7.mike7_november7"


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], Any]]:
    """The in-process tests run on both loops: uvloop is what `streamer run` uses (its transports differ from
    asyncio's in ways that matter here), asyncio what the rest of the suite uses."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@asynccontextmanager
async def http_server(route: tuple[str, Any] | None = None, **fields: Any) -> AsyncIterator[HttpServer]:
    """An HttpServer (no cameras) on 127.0.0.1, any free port, with ``fields`` of HttpServerConfig and an
    extra GET ``route`` (path, handler)."""
    server = HttpServer(HttpServerConfig(**{"host": "127.0.0.1", "port": 0, **fields}), [], CollectorRegistry())
    if route is not None:
        server.app.router.add_get(*route)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def read_response(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout)
    return status, headers, body


async def request(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
                  source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (Connection: close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return await read_response(reader)
    finally:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server closes the connection (EOF or reset) within ``timeout`` (data is read and dropped)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    """A blocking GET (for servers in other processes): status and body, 4xx/5xx included."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
