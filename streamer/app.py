"""The running service: camera pipelines, the RTSP and HTTP servers, signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engines import EngineError
from streamer.config import AppConfig
from streamer.http.server import HttpServer
from streamer.inference import InferenceService
from streamer.metrics import build_registry
from streamer.pipeline import CameraPipeline
from streamer.registry import StreamRegistry
from streamer.rtsp.server import RtspServer
from streamer.sources.preflight import SourceError
from streamer.streams import StreamManager
from streamer.taps.publisher import TapError, TapSockets

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 4.0


class StartupError(RuntimeError):
    """No camera could start; the message names each camera's bad field."""


class StreamerApp:
    def __init__(self, config: AppConfig, entries: list[dict[str, Any]] | None = None,
                 writeback: Path | None = None) -> None:
        """``entries``: the cameras as written in the config file (kept as given when changes are written
        back to ``writeback``)."""
        self.config = config
        self.tap_sockets = TapSockets()  # ZeroMQ frame taps, one socket per endpoint
        self.streams = StreamRegistry()  # the one list of streams every server reads per request
        self.inference = InferenceService(config.server.inference)  # the engines every camera shares
        try:
            for index, camera in enumerate(config.cameras):
                self.streams.add(CameraPipeline(camera, f"cameras.{index}", self.tap_sockets, self.inference))
        except TapError as error:
            self.tap_sockets.stop()
            raise ListenError(str(error)) from None
        self.manager = StreamManager(config, self.streams, self.tap_sockets, entries, writeback, self.inference)
        self.rtsp = RtspServer(config.server.rtsp, self.streams.hubs) if config.server.rtsp.enabled else None
        if self.rtsp is not None:
            self.streams.on_remove(self.rtsp.end_stream)
        self.registry = build_registry(self.streams, self.rtsp, self.inference)
        self.http = (HttpServer(config.server.http, self.streams, self.registry, config.server.webrtc,
                                manager=self.manager, jobs=config.server.jobs, inference=self.inference)
                     if config.server.http.enabled else None)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def pipelines(self) -> list[CameraPipeline]:
        return list(self.streams)

    def stop(self) -> None:
        self._stop.set()

    async def prepare(self) -> None:
        """Check every camera's source and build its engine. A camera that cannot work as configured is
        marked failed (visible in /readyz and the API) and the others run; when none can, ``StartupError``."""
        for pipeline in self.streams:
            try:
                await pipeline.prepare()
            except (SourceError, EngineError) as error:
                pipeline.fail(str(error))
        if len(self.streams) and all(pipeline.failure for pipeline in self.streams):
            raise StartupError("\n".join(pipeline.failure for pipeline in self.streams))

    async def run(self, on_ready: Callable[[StreamerApp], None] | None = None) -> None:
        raise_open_files_limit()
        try:
            await self._start()
        except BaseException:  # no camera could start, or a port is taken: the engines built go too
            await asyncio.to_thread(self.inference.close)
            raise
        for pipeline in self.streams:
            if not pipeline.failure:
                self.manager.start(pipeline)
        self.ready.set()
        if on_ready is not None:
            on_ready(self)
        try:
            await self._serve()
        finally:
            for pipeline in self.streams:
                pipeline.stop()
            tasks = list(self.manager.tasks.values())
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S) if tasks else (set(), set())
            for task in pending:
                task.cancel()
            await asyncio.to_thread(self.inference.close)
            if self.rtsp is not None:
                await self.rtsp.stop()
            if self.http is not None:
                await self.http.stop()
            self.tap_sockets.stop()

    async def _start(self) -> None:
        await self.prepare()
        servers = self.config.server
        try:
            if self.rtsp is not None:
                await _listen(self.rtsp.start, "server.rtsp", servers.rtsp.host, servers.rtsp.port)
            if self.http is not None:
                await _listen(self.http.start, "server.http", servers.http.host, servers.http.port)
        except ListenError:
            if self.rtsp is not None:
                await self.rtsp.stop()
            raise

    async def _serve(self) -> None:
        """Until stopped, or until every camera's source has ended (files played to their end). A service
        whose cameras were all removed over the API keeps serving (cameras can be added again)."""
        while not self._stop.is_set():
            tasks = [task for task in self.manager.tasks.values() if not task.done()]
            if not tasks and self.manager.tasks and len(self.streams):
                return
            stop_wait = asyncio.create_task(self._stop.wait())
            try:
                await asyncio.wait([stop_wait, *tasks], timeout=None if tasks else 1.0,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()

    def rtsp_url(self, name: str, host: str = "127.0.0.1") -> str:
        port = self.rtsp.port if self.rtsp else self.config.server.rtsp.port
        return f"rtsp://{host}:{port}/{name}"


def install_signal_handlers(app: StreamerApp) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, app.stop)


def raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard one: every viewer, camera and HTTP client holds one
    (the servers cap their connections well below it)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            target = 65536 if hard == resource.RLIM_INFINITY else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    except (ImportError, ValueError, OSError) as error:
        log.debug("open files limit unchanged: %s", error)


class ListenError(RuntimeError):
    """A server could not open its port; the message names the config fields."""


async def _listen(start: Callable[[], Awaitable[None]], field: str, host: str, port: int) -> None:
    try:
        await start()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ListenError(f"{field}.host={host} {field}.port={port}: cannot listen: {reason}") from None


def run_app(config: AppConfig, entries: list[dict[str, Any]] | None = None, writeback: Path | None = None) -> None:
    async def main() -> None:
        app = StreamerApp(config, entries, writeback)
        install_signal_handlers(app)

        def announce(app: StreamerApp) -> None:
            for pipeline in app.pipelines:
                if app.rtsp is not None and not pipeline.failure:
                    log.info("serving %s at %s", pipeline.name, app.rtsp_url(pipeline.name, _display_host(config)))
            if app.http is not None:
                log.info("health and metrics at http://%s:%d/healthz", _display_host(config), app.http.port)

        await app.run(announce)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def _display_host(config: AppConfig) -> str:
    host = config.server.rtsp.host
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
