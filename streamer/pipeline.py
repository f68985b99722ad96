"""One camera's graph: source -> temporal window + engine -> encoder -> hub (-> viewers and sinks).

Every stage runs under its own supervisor (``streamer.supervisor``): a stage that raises is restarted
with backoff while the channels around it, the hub and the viewers stay as they are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engines import Engine, EngineError, activate_engine
from engines.tiling import maybe_tiled
from streamer.config import CameraConfig
from streamer.config.camera import FAST_MODELS
from streamer.encoder import EncodeStage, H264Encoder
from streamer.exposure import ExposureCorrector
from streamer.graph.channel import Channel, DropPolicy
from streamer.graph.frames import Frame
from streamer.hub import KeyframeGate, StreamHub, Subscription
from streamer.inference import InferenceService
from streamer.ladder import LadderController, Level, ModelLevel, ReducedResolutionLevel, TemporalLevel
from streamer.restorer import RestoreStage
from streamer.sinks import Sink, create_sink
from streamer.sources import Source, create_source
from streamer.sources.preflight import check_source
from streamer.supervisor import StageHealth, Supervisor
from streamer.taps.publisher import FrameTap, TapSockets
from streamer.upscale import OutputScaler
from streamer.webrtc.views import CameraViews
from streamer.window import TemporalWindow

log = logging.getLogger(__name__)


def make_engine(config: CameraConfig, inference: InferenceService | None = None, model: str | None = None,
                kind: str | None = None) -> Engine:
    """The camera's engine for ``model`` (default: the configured one) on ``kind`` (default: the configured
    type), active: its share of the process's engine from ``inference``, or (without a service) an engine of
    its own; ``auto`` falls back from TensorRT to the CPU."""
    settings = config.engine if kind is None else config.engine.model_copy(update={"type": kind})
    if inference is not None:
        return tiled(config, inference.acquire(settings, config.name, model))
    return tiled(config, activate_engine(settings.type, model if model is not None else settings.model,
                                         settings.threads, settings.fp16, settings.cache_dir, settings.int8,
                                         tensorrt_int8=settings.tensorrt_int8))


def tiled(config: CameraConfig, engine: Engine) -> Engine:
    """The engine restoring frames above ``engine.tile_above_pixels`` in tiles (whole below)."""
    settings = config.engine
    return maybe_tiled(engine, settings.tile_size, settings.tile_overlap, above_pixels=settings.tile_above_pixels)




def make_levels(config: CameraConfig, full: Engine,
                inference: InferenceService | None = None) -> tuple[list[Level], list[Engine]]:
    """The camera's degradation ladder, best level first, and the extra engines it activated (its cheaper
    model; on a GPU, the CPU fallback's), which the caller deactivates. One level (the configured model) when the ladder is off."""
    ladder = config.engine.ladder
    levels: list[Level] = [ModelLevel("full", full)]
    if not ladder.enabled or full.passes_through:
        return levels, []
    extra: list[Engine] = []
    fast_name = ladder.fast_model or FAST_MODELS.get(config.engine.model or "lite")
    cheapest, cheapest_model = full, config.engine.model
    if fast_name is not None and fast_name != (config.engine.model or "lite"):
        fast = make_engine(config, inference, fast_name)
        if fast.info.window != full.info.window or fast.info.reference_index != full.info.reference_index:
            fast.deactivate()
            raise EngineError(f"engine.ladder.fast_model={fast_name}: its window ({fast.info.window} frames, "
                              f"reference {fast.info.reference_index}) must be the full model's")
        if fast.info.scale > full.info.scale:  # the output size is the full model's: a fast level cannot exceed it
            fast.deactivate()
            raise EngineError(f"engine.ladder.fast_model={fast_name} upscales x{fast.info.scale}; the camera's "
                              f"model ({full.info.name}) x{full.info.scale}: a cheaper level cannot make larger frames")
        extra.append(fast)
        levels.append(ModelLevel("fast", fast))
        cheapest, cheapest_model = fast, fast_name
    if ladder.half:
        levels.append(ReducedResolutionLevel(cheapest, 2))
    if ladder.quarter:
        levels.append(ReducedResolutionLevel(cheapest, 4))
    if ladder.cpu and full.device != "cpu":  # a GPU's frames still restored by a model when the GPU fails
        try:
            cpu = make_engine(config, inference, cheapest_model, kind="cpu")
        except EngineError as error:  # a fallback that cannot be had is no reason to refuse the camera
            log.warning("camera %s: no 'cpu' ladder level (%s)", config.name, error)
        else:
            extra.append(cpu)
            levels.append(ReducedResolutionLevel(cpu, ladder.cpu_factor, name="cpu"))
    if ladder.temporal:
        levels.append(TemporalLevel())
    return levels, extra


def make_window(config: CameraConfig, engine: Engine, field: str = "cameras.0") -> TemporalWindow:
    info = engine.info
    size = config.window.size or max(info.window, 1)
    lookahead = config.window.lookahead if config.window.lookahead is not None else min(info.lookahead, size - 1)
    if lookahead > size - 1:
        raise EngineError(f"{field}.window.lookahead={lookahead} must be < window size {size}")
    return TemporalWindow(info.window, info.reference_index, size, lookahead)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether a camera is producing output now, and if not, why (for /readyz and the API)."""

    ready: bool
    state: str  # starting | running | stalled | failed | finished | stopped
    reason: str


class CameraPipeline:
    def __init__(self, config: CameraConfig, field: str = "cameras.0", tap_sockets: TapSockets | None = None,
                 inference: InferenceService | None = None) -> None:
        """``inference``: the process's shared engines (None: the camera activates engines of its own)."""
        self.config = config
        self.inference = inference
        self.name = config.name
        self.field = field  # where the camera sits in the configuration, for error messages
        self.hub = StreamHub(config.name)
        self.source: Source = create_source(config.source, config.name)
        self.sinks: list[Sink] = [create_sink(sink, self.hub) for sink in config.sinks]
        self.decoded: Channel[Frame] = Channel(f"{self.name}-decoded", config.queue_frames, DropPolicy.OLDEST)
        self.restored: Channel[Frame] = Channel(f"{self.name}-restored", config.queue_frames, DropPolicy.OLDEST)
        self.engine: Engine | None = None
        self.extra_engines: list[Engine] = []  # the ladder's cheaper model, when it has one
        self.restorer: RestoreStage | None = None
        self.encoder = H264Encoder(config.encoder)
        self.encode_stage = EncodeStage(self.encoder, self.restored, self.hub.publish)
        self.exposure: ExposureCorrector | None = None  # brightens dark scenes after restoration (off by default)
        if config.exposure.enabled:
            self.exposure = ExposureCorrector(config.exposure)
            self.encode_stage.corrections.append(self.exposure.correct)
        self.output_scaler: OutputScaler | None = None  # where the model upscales: one output size (prepare)
        self.hub.keyframes = KeyframeGate(self.encoder.request_keyframe, config.encoder.keyframe_request_interval_s)
        self.views = CameraViews(self.name, config.encoder)  # raw and raw|restored, encoded only while watched
        self.encode_stage.taps.append(self.views.offer)
        self.taps: dict[str, FrameTap] = {}  # ZeroMQ frame taps by point (raw, restored)
        if tap_sockets is not None:
            self.taps = tap_sockets.taps_for(self.name, config.taps, self._model_name)
            if "raw" in self.taps:
                self.decoded.observers.append(self.taps["raw"].offer)
            if "restored" in self.taps:
                self.encode_stage.taps.append(self.taps["restored"].offer)
        self.supervisors: list[Supervisor] = []
        self.started_at = time.time()
        self.running = False
        self.finished = False
        self.failure = ""  # why the camera could not start; it does not run
        self._stopped = False

    async def prepare(self) -> None:
        """Check the source, load/build the engine (in a thread: a TensorRT build takes minutes). Raises
        ``SourceError`` or ``EngineError`` naming the field when the camera cannot work as configured."""
        await asyncio.to_thread(check_source, self.config.source, f"{self.field}.source")
        self.engine = await asyncio.to_thread(make_engine, self.config, self.inference)
        try:
            window = make_window(self.config, self.engine, self.field)
            levels, self.extra_engines = await asyncio.to_thread(make_levels, self.config, self.engine, self.inference)
        except EngineError:
            await asyncio.to_thread(self.engine.deactivate)
            raise
        if self.engine.info.scale > 1 and self.output_scaler is None:
            self.output_scaler = OutputScaler(self.engine.info.scale)
            self.encode_stage.corrections.append(self.output_scaler)  # after the exposure curve: on the smaller frame
        controller = LadderController([level.name for level in levels], self.config.engine.ladder.probe_after_s)
        self.restorer = RestoreStage(self.engine, window, self.decoded, self.restored, levels=levels,
                                     controller=controller, name=self.name)
        log.info(
            "camera %s: engine %s, window %d frames (%d past, %d ahead: %s)",
            self.name,
            self.engine.describe(),
            window.size,
            window.past,
            window.lookahead,
            "causal" if window.lookahead == 0 else f"+{window.lookahead} frame(s) of latency",
        )
        if self.output_scaler is not None:
            log.info("camera %s: output %dx the camera's size (the model upscales; frames it did not restore are "
                     "scaled bicubic)", self.name, self.output_scaler.factor)
        if self.exposure is not None:
            settings = self.config.exposure
            log.info("camera %s: exposure correction on (target key %.2f, gain up to %.0f, adapting over %.1f s)",
                     self.name, settings.target_key, settings.max_gain, settings.adapt_s)
        if len(levels) > 1:
            log.info("camera %s: degradation ladder %s", self.name,
                     " > ".join(f"{level.name} ({level.model})" if level.model else level.name for level in levels))

    def _model_name(self, level: str | None = None) -> str | None:
        """What restored a frame at ``level`` (the ladder's), for the taps' headers."""
        restorer = self.restorer
        if restorer is not None and level is not None:
            return next((candidate.describe() for candidate in restorer.levels if candidate.name == level), None)
        return self.engine.describe() if self.engine is not None else None

    def fail(self, reason: str) -> None:
        """Mark the camera as unable to start (a bad source or engine); the others run on."""
        self.failure = reason
        log.error("camera %s cannot start: %s", self.name, reason)

    async def run(self) -> None:
        if self.restorer is None:
            await self.prepare()
        if self.restorer is None:
            raise RuntimeError("pipeline not prepared")
        restorer = self.restorer
        self.encoder.rate_hint = lambda: self.source.fps_hint  # read when the encoder opens (after connect)

        def supervise(stage_name: str, stage: Callable[[], Awaitable[None]],
                      on_restart: Callable[[], None] | None = None) -> Supervisor:
            supervisor = Supervisor(self.name, stage_name, stage, lambda: self._stopped, on_restart)
            self.supervisors.append(supervisor)
            return supervisor

        source = supervise("source", lambda: self.source.run(self.decoded))
        restore = supervise("restore", restorer.run, restorer.reset)
        encode = supervise("encode", self.encode_stage.run, self.encode_stage.reset)
        sinks = [(supervise(f"sink-{sink.kind}", sink.run, sink.resync), sink) for sink in self.sinks]
        # Each stage's output is closed once the stage has finished for good, so the graph drains in order.
        tasks = [
            asyncio.create_task(_then(source.run(), self.decoded.close), name=f"{self.name}-source"),
            asyncio.create_task(_then(restore.run(), self.restored.close), name=f"{self.name}-restore"),
            asyncio.create_task(_then(encode.run(), self._close_outputs), name=f"{self.name}-encode"),
        ] + [asyncio.create_task(_then(supervisor.run(), sink.close), name=f"{self.name}-{sink.kind}")
             for supervisor, sink in sinks]
        self.running = True
        try:
            await asyncio.gather(*tasks)
        finally:
            self.running = False
            self.finished = True
            for task in tasks:
                task.cancel()
            await restorer.close()
            self.encode_stage.close()
            for engine in [self.engine, *self.extra_engines]:
                if engine is not None:
                    await asyncio.to_thread(engine.deactivate)

    def _close_outputs(self) -> None:
        self.hub.close()
        self.views.close()
        for sink in self.sinks:
            sink.stop()

    def close(self) -> None:
        """After ``run`` returned (or when it never ran): release the outputs and the view encoders. Idempotent."""
        self.stop()
        self._close_outputs()

    def stop(self) -> None:
        """Idempotent: the source stops, everything behind it drains and closes in order."""
        if self._stopped:
            return
        self._stopped = True
        self.source.stop()

    def readers(self) -> list[Subscription]:
        """Everyone watching this camera: the restored stream's readers and the raw / compare views'."""
        return [*self.hub.subscriptions, *(sub for hub in self.views.hubs().values() for sub in hub.subscriptions)]

    # -- health ----------------------------------------------------------------------------------------
    def stage_health(self) -> dict[str, StageHealth]:
        return {supervisor.stage_name: supervisor.health for supervisor in self.supervisors}

    def readiness(self, now: float | None = None) -> Readiness:
        """Ready only while output frames keep coming: never for a camera that has produced nothing."""
        now = time.monotonic() if now is None else now
        if self.failure:
            return Readiness(False, "failed", self.failure)
        if self._stopped:
            return Readiness(False, "stopped", "stopped")
        if self.finished:
            return Readiness(False, "finished", "the source ended")
        source = self.source.stats
        last_error = self._last_error()
        last = self.hub.last_published_at
        if last is None:
            if not source.connected and source.connects == 0:
                reason = "never connected" + (f": {last_error}" if last_error else "")
            else:
                reason = "no output frame yet" + (f" ({last_error})" if last_error else "")
            return Readiness(False, "starting", reason)
        idle = now - last
        if idle > self.config.stall_timeout_s:
            reason = f"stalled: no output frame for {idle:.1f} s" + (f" (last error: {last_error})" if last_error else "")
            return Readiness(False, "stalled", reason)
        return Readiness(True, "running", "ok")

    def _last_error(self) -> str:
        """What most likely explains missing output: the source's error while it is disconnected, else the
        newest error of a stage."""
        source = self.source.stats
        if source.last_error and not source.connected:
            return source.last_error
        errors = [(health.last_error_at or 0.0, f"{stage}: {health.last_error}")
                  for stage, health in self.stage_health().items() if health.last_error]
        return max(errors)[1] if errors else source.last_error


async def _then(stage: Awaitable[None], after: Callable[[], None]) -> None:
    try:
        await stage
    finally:
        after()
