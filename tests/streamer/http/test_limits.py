"""Size limits, the connection caps, the idle timeout and internal errors, on real sockets."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp import web

from tests.streamer.http.conftest import closed_by_server, http_server, read_response, request

SMALL = {"max_url_bytes": 512, "max_header_bytes": 512, "max_headers": 16, "max_body_bytes": 1000}


def http_server_small(**fields: object) -> object:
    return http_server(**{**SMALL, **fields})  # type: ignore[arg-type]


async def test_oversized_requests_get_a_4xx_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with http_server_small() as server:
        assert (await request(server.port, "/" + "a" * 1000))[0] == 400  # max_url_bytes=512
        assert (await request(server.port, "/metrics", {"X-Big": "b" * 1000}))[0] == 400  # max_header_bytes=512
        many = {f"X-{index}": "1" for index in range(20)}  # max_headers=16
        assert (await request(server.port, "/metrics", many))[0] == 400
        status, headers, _ = await request(server.port, "/api/streams", {"Content-Length": "2000"}, method="POST")
        assert status == 413 and headers.get("connection") == "close"  # max_body_bytes=1000, never read
        assert (await request(server.port, "/" + "a" * 400))[0] == 404  # under every limit: routed
        assert (await request(server.port, "/metrics", {"X-Big": "b" * 400}))[0] == 200
        assert server.stats.bad_requests == 4 and server.stats.internal_errors == 0
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.WARNING]


async def test_idle_silent_and_half_sent_connections_are_closed() -> None:
    async with http_server_small(idle_timeout_s=1.0) as server:
        silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(10)]
        kept_alive = []
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            kept_alive.append((reader, writer))
        half_sent = []
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            half_sent.append((reader, writer))

        async def trickle() -> None:  # slowloris: one header byte every 0.2 s, never the end of the headers
            while True:
                await asyncio.sleep(0.2)
                for _, writer in half_sent:
                    if not writer.is_closing():
                        writer.write(b"X")

        trickling = asyncio.create_task(trickle())
        started = time.monotonic()
        assert server.stats.connections_open == 30
        closed = await asyncio.gather(*(closed_by_server(reader, 4.0) for reader, _ in silent + kept_alive + half_sent))
        trickling.cancel()
        assert all(closed), f"{closed.count(False)} of 30 connections still open after 4 s"
        assert time.monotonic() - started < 3.0
        for _, writer in silent + kept_alive + half_sent:
            writer.close()
        assert (await request(server.port, "/healthz"))[0] == 200
        await wait_for(lambda: server.stats.connections_open == 0)


async def test_connection_caps_refuse_with_503_and_recover() -> None:
    async with http_server_small(max_connections=12, max_connections_per_address=5) as server:
        flood = [await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0)) for _ in range(5)]
        status, headers, _ = await request(server.port, "/healthz", source="127.0.0.2")
        assert status == 503 and headers["retry-after"] == "1"  # sixth from one address
        assert (await request(server.port, "/healthz"))[0] == 200  # another address still gets in
        for source in ("127.0.0.3", "127.0.0.4"):
            flood += [await asyncio.open_connection("127.0.0.1", server.port, local_addr=(source, 0))
                      for _ in range(5 if source == "127.0.0.3" else 2)]
        await wait_for(lambda: server.stats.connections_open == 12)
        assert (await request(server.port, "/healthz"))[0] == 503  # the total is full
        for _, writer in flood:
            writer.close()
        await wait_for(lambda: server.stats.connections_open == 0)
        assert (await request(server.port, "/healthz", source="127.0.0.2"))[0] == 200
        assert server.stats.connections_refused == 2


async def raises(request: web.Request) -> web.Response:
    raise RuntimeError("broken handler")


async def returns_nothing(request: web.Request) -> web.Response:
    return None  # type: ignore[return-value]


@pytest.mark.parametrize(("handler", "cause"), [(raises, "RuntimeError: broken handler"),
                                                (returns_nothing, "Missing return statement")])
async def test_a_failing_handler_is_a_500_counted_and_logged_once(
    handler: object, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with http_server_small(route=("/broken", handler)) as server:
        for _ in range(3):
            status, _, _ = await request(server.port, "/broken")
            assert status == 500
        assert server.stats.internal_errors == 3
        assert (await request(server.port, "/healthz"))[0] == 200
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and cause in errors[0].getMessage(), [record.getMessage() for record in errors]


async def wait_for(condition: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
