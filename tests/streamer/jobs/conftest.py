"""A real HttpServer with the jobs service on 127.0.0.1, small clips made here, and an aiohttp client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from streamer.config import HttpServerConfig, JobsConfig
from streamer.http.server import HttpServer
from tests.media import add_noise, clean_frames, write_lossless

TOKEN = "jobs-token-0123456789abcdef"
PREFIX = "/api/v1/jobs"


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """24 frames of 160x96 with noise σ=20 (lossless, so the noise is exactly what the job gets), and the clean."""
    folder = tmp_path_factory.mktemp("job-clips")
    clean = clean_frames(160, 96, 24)
    noisy = add_noise(clean, 20.0)
    return {"clean": clean, "noisy": noisy, "path": write_lossless(folder / "noisy.mkv", noisy)}


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip that keeps a job busy for a few seconds (320x176, 150 frames, noisy)."""
    folder = tmp_path_factory.mktemp("job-long")
    return write_lossless(folder / "long.mkv", add_noise(clean_frames(320, 176, 150), 20.0))


@asynccontextmanager
async def jobs_server(http: dict[str, Any] | None = None, **jobs: Any) -> AsyncIterator[HttpServer]:
    """An HttpServer (no cameras) with ``jobs`` fields of JobsConfig and ``http`` fields of HttpServerConfig."""
    config = HttpServerConfig(**{"host": "127.0.0.1", "port": 0, "max_body_bytes": 1024, **(http or {})})
    server = HttpServer(config, [], CollectorRegistry(), jobs=JobsConfig(**{"engine": "cpu", **jobs}))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Client:
    """JSON calls and uploads against one server."""

    def __init__(self, session: aiohttp.ClientSession, port: int, token: str | None = None) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, headers: dict[str, str] | None = None,
                   **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.headers, **(headers or {})}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as response:
            body = await response.read()
            kind = response.content_type
            return response.status, (await response.json() if kind == "application/json" else body)

    async def upload(self, data: bytes | Path, name: str = "clip.mkv") -> tuple[int, Any]:
        form = aiohttp.FormData()
        content = await asyncio.to_thread(data.read_bytes) if isinstance(data, Path) else data
        form.add_field("file", content, filename=name)
        return await self.call("POST", PREFIX, data=form)

    async def wait(self, job_id: str, states: tuple[str, ...] = ("done", "failed"), timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status, job = await self.call("GET", f"{PREFIX}/{job_id}")
            assert status == 200, job
            if job["state"] in states:
                return job
            assert time.monotonic() < deadline, f"job still {job['state']} after {timeout} s: {job}"
            await asyncio.sleep(0.1)


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def client(port: int, token: str | None = None) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, port, token)


def job_folders(server: HttpServer) -> list[Path]:
    root = server.jobs._root if server.jobs is not None else None
    return sorted(root.iterdir()) if root is not None and root.exists() else []


def worker_processes(job_id: str) -> list[int]:
    """Processes whose command line names the job (its worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"streamer.jobs.worker" in command and job_id.encode() in command:
                found.append(int(entry.name))
    return found
