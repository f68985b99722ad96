"""One camera's graph: source -> temporal window + engine -> encoder -> hub (-> viewers and sinks)."""

from __future__ import annotations

import asyncio
import logging
import time

from engines import Engine, EngineError, create_engine
from streamer.config import CameraConfig
from streamer.encoder import EncodeStage, H264Encoder
from streamer.graph.channel import Channel, DropPolicy
from streamer.graph.frames import Frame
from streamer.hub import StreamHub
from streamer.restorer import RestoreStage
from streamer.sinks import Sink, create_sink
from streamer.sources import Source, create_source
from streamer.window import TemporalWindow

log = logging.getLogger(__name__)


def activate_engine(config: CameraConfig) -> Engine:
    """Build and activate the configured engine; ``auto`` falls back from TensorRT to the CPU."""
    settings = config.engine
    engine = create_engine(
        settings.type, settings.model, settings.threads, settings.fp16, settings.cache_dir, settings.int8
    )
    try:
        engine.activate()
    except EngineError as error:
        if settings.type != "auto" or engine.backend == "cpu":
            raise
        log.warning("camera %s: %s; falling back to the CPU engine", config.name, error)
        engine = create_engine("cpu", settings.model, settings.threads, int8=settings.int8)
        engine.activate()
    return engine


def make_window(config: CameraConfig, engine: Engine) -> TemporalWindow:
    info = engine.info
    size = config.window.size or max(info.window, 1)
    lookahead = config.window.lookahead if config.window.lookahead is not None else min(info.lookahead, size - 1)
    if lookahead > size - 1:
        raise EngineError(f"cameras.{config.name}.window.lookahead={lookahead} must be < window size {size}")
    return TemporalWindow(info.window, info.reference_index, size, lookahead)


class CameraPipeline:
    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self.name = config.name
        self.hub = StreamHub(config.name)
        self.source: Source = create_source(config.source, config.name)
        self.sinks: list[Sink] = [create_sink(sink, self.hub) for sink in config.sinks]
        self.decoded: Channel[Frame] = Channel(f"{self.name}-decoded", config.queue_frames, DropPolicy.OLDEST)
        self.restored: Channel[Frame] = Channel(f"{self.name}-restored", config.queue_frames, DropPolicy.OLDEST)
        self.engine: Engine | None = None
        self.restorer: RestoreStage | None = None
        self.encoder = H264Encoder(config.encoder)
        self.encode_stage = EncodeStage(self.encoder, self.restored, self.hub.publish)
        self.started_at = time.time()
        self.running = False
        self._stopped = False

    async def prepare(self) -> None:
        """Load/build the engine (in a thread: a TensorRT build takes minutes)."""
        self.engine = await asyncio.to_thread(activate_engine, self.config)
        window = make_window(self.config, self.engine)
        self.restorer = RestoreStage(self.engine, window, self.decoded, self.restored)
        log.info(
            "camera %s: engine %s, window %d frames, lookahead %d",
            self.name,
            self.engine.describe(),
            window.size,
            window.lookahead,
        )

    async def run(self) -> None:
        if self.restorer is None:
            await self.prepare()
        if self.restorer is None:
            raise RuntimeError("pipeline not prepared")
        self.encoder.rate_hint = lambda: self.source.fps_hint  # read when the encoder opens (after connect)
        self.running = True
        tasks = [
            asyncio.create_task(self.source.run(self.decoded), name=f"{self.name}-source"),
            asyncio.create_task(self.restorer.run(), name=f"{self.name}-restore"),
            asyncio.create_task(self._encode_then_close(), name=f"{self.name}-encode"),
        ] + [asyncio.create_task(sink.run(), name=f"{self.name}-{sink.kind}") for sink in self.sinks]
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, results, strict=True):
                if isinstance(result, Exception):
                    log.error("camera %s: %s failed: %r", self.name, task.get_name(), result)
        finally:
            self.running = False
            for task in tasks:
                task.cancel()
            self.restorer.close()
            if self.engine is not None:
                self.engine.deactivate()

    async def _encode_then_close(self) -> None:
        try:
            await self.encode_stage.run()
        finally:
            self.hub.close()
            for sink in self.sinks:
                sink.stop()

    def stop(self) -> None:
        """Idempotent: the source stops, everything behind it drains and closes in order."""
        if self._stopped:
            return
        self._stopped = True
        self.source.stop()
