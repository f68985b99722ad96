"""The shared inference service: one engine per model and device for the whole process.

``InferenceService.acquire`` hands a camera an ``EngineClient`` (an ``Engine``): the first camera that asks
for a model activates it (a TensorRT build happens then, once); later cameras share it. A client's
``infer`` queues the window on its device's ``DeviceScheduler`` and waits for the result in the camera's
own worker thread, so the restorer, the ladder and the tiling work unchanged on top of it. ``deactivate``
releases the camera's share; the engine is freed when its last camera has gone.

With ``server.inference.shared: false`` every camera activates an engine of its own, as before (each with
``engine.threads``); the passthrough engine is never shared (it has nothing to share).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines import Engine, EngineError, activate_engine, resolve_model
from streamer.config import EngineConfig, InferenceConfig
from streamer.inference.scheduler import DeviceScheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineKey:
    """What makes two cameras' engines the same engine."""

    kind: str
    model: str
    fp16: bool
    int8: bool
    cache_dir: str
    tensorrt_int8: bool = False


@dataclass(eq=False)
class SharedEngine:
    key: EngineKey
    engine: Engine
    scheduler: DeviceScheduler
    users: dict[str, str] = field(default_factory=dict)  # client id -> camera


class InferenceService:
    """Owned by the app; every camera pipeline asks it for its engines. Thread-safe; ``acquire`` blocks
    (activation), so call it from a worker thread."""

    def __init__(self, config: InferenceConfig | None = None, activate: Callable[..., Engine] = activate_engine) -> None:
        """``activate(kind, model, threads, fp16, cache_dir, int8, tensorrt_int8=...)`` makes an active engine (a tool may
        hand in its own, e.g. one with CUDA graphs captured for its frame size)."""
        self.config = config or InferenceConfig()
        self._activate = activate
        self._engines: dict[EngineKey, SharedEngine] = {}
        self._schedulers: dict[str, DeviceScheduler] = {}
        self._activation_locks: dict[EngineKey, threading.Lock] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    def acquire(self, settings: EngineConfig, camera: str, model: str | None = None) -> Engine:
        """An active engine for ``camera``: ``model`` (default: ``settings.model``) on ``settings.type``.
        Raises ``EngineError`` when it cannot be activated."""
        model = model if model is not None else settings.model
        if not self.config.shared or settings.type == "passthrough":
            return self._activate(settings.type, model, settings.threads, settings.fp16, settings.cache_dir,
                                  settings.int8, tensorrt_int8=settings.tensorrt_int8)
        key = EngineKey(settings.type, str(resolve_model(model)), settings.fp16, settings.int8,
                        str(Path(settings.cache_dir).expanduser()), settings.tensorrt_int8)
        with self._lock:
            if self._closed:
                raise EngineError("the inference service is closed")
            activation = self._activation_locks.setdefault(key, threading.Lock())
        with activation:  # one activation per engine; other engines activate meanwhile
            with self._lock:
                shared = self._engines.get(key)
            if shared is None:
                engine = self._activate(settings.type, model, self.config.threads, settings.fp16,
                                        settings.cache_dir, settings.int8, tensorrt_int8=settings.tensorrt_int8)
                with self._lock:
                    scheduler = self._schedulers.get(engine.device)
                    if scheduler is None:
                        scheduler = self._schedulers[engine.device] = DeviceScheduler(engine.device,
                                                                                      self.config.max_batch)
                    scheduler.add_workers(engine.concurrent_calls)
                    shared = self._engines[key] = SharedEngine(key, engine, scheduler)
                log.info("inference: %s shared by the process (%s threads, %d call(s) at once, batches of up "
                         "to %d on %s)", engine.describe(), self.config.threads or "all cores'",
                         engine.concurrent_calls,
                         max(1, min(self.config.max_batch or engine.preferred_batch, engine.max_batch)),
                         engine.device)
            with self._lock:
                client = EngineClient(self, shared, f"{camera}#{next(self._ids)}", camera)
                shared.users[client.client_id] = camera
        return client

    def release(self, client: EngineClient) -> None:
        """The camera is done with the engine (blocking: frees the engine when it was the last user)."""
        shared = client.shared
        shared.scheduler.forget(client.client_id)
        shared.engine.forget(client.client_id)
        with self._lock:
            shared.users.pop(client.client_id, None)
            last = not shared.users and self._engines.get(shared.key) is shared
            if last:
                del self._engines[shared.key]
        if last:
            shared.engine.deactivate()
            log.info("inference: %s freed (no camera uses it)", shared.engine.describe())

    def engines(self) -> list[SharedEngine]:
        with self._lock:
            return list(self._engines.values())

    def cameras(self, shared: SharedEngine) -> list[str]:
        """The cameras sharing ``shared`` now (a copy taken under the lock)."""
        with self._lock:
            return sorted(set(shared.users.values()))

    def schedulers(self) -> list[DeviceScheduler]:
        with self._lock:
            return list(self._schedulers.values())

    def close(self) -> None:
        """Stop the schedulers and free every engine (after the cameras stopped). Idempotent, blocking."""
        with self._lock:
            self._closed = True
            engines, self._engines = list(self._engines.values()), {}
            schedulers, self._schedulers = list(self._schedulers.values()), {}
        for scheduler in schedulers:
            scheduler.close()
        for shared in engines:
            shared.engine.deactivate()

    def describe(self) -> dict[str, object]:
        """For the API: each shared engine, who uses it, and what each device's worker did."""
        engines = [{"engine": shared.engine.describe(), "backend": shared.engine.backend,
                    "model": shared.engine.info.name, "device": shared.engine.device,
                    "cameras": self.cameras(shared)} for shared in self.engines()]
        devices = []
        for scheduler in self.schedulers():
            stats = scheduler.snapshot()
            devices.append({
                "device": scheduler.device, "batches": stats.batches, "windows": stats.windows,
                "busy_seconds": round(stats.busy_s, 3), "queued": scheduler.queued(), "expired": stats.expired,
                "rejected": stats.rejected, "failed": stats.failed,
                "batch_sizes": {str(size): count for size, count in sorted(stats.batch_sizes.items())},
                "camera_seconds": {camera: round(seconds, 3) for camera, seconds in sorted(stats.camera_s.items())},
            })
        return {"shared": self.config.shared, "threads": self.config.threads, "max_batch": self.config.max_batch,
                "engines": engines, "devices": devices}


class EngineClient(Engine):
    """One camera's share of a shared engine: ``infer`` queues the window on the device's scheduler and
    waits; ``deactivate`` gives the share back. Same ``info``, backend and device as the engine."""

    def __init__(self, service: InferenceService, shared: SharedEngine, client_id: str, camera: str) -> None:
        super().__init__()
        self.service = service
        self.shared = shared
        self.client_id = client_id
        self.camera = camera
        engine = shared.engine
        self.info = engine.info
        self.backend = engine.backend
        self.device = engine.device
        self.passes_through = engine.passes_through
        self.max_batch = QUEUE_LIMIT_FOR_BATCH
        self.active = True  # the shared engine is active already

    def _activate(self) -> None:
        raise EngineError("a released engine share cannot be activated again; acquire a new one")

    def _deactivate(self) -> None:
        self.service.release(self)

    def _infer(self, window: list[np.ndarray]) -> np.ndarray:
        return self._infer_batch([window], [self.client_id])[0]

    def _infer_batch(self, windows: list[list[np.ndarray]], streams: list[str]) -> list[np.ndarray]:
        futures = self.shared.scheduler.submit(self.shared.engine, self.client_id, self.camera, windows)
        try:
            return [future.result() for future in futures]
        except concurrent.futures.CancelledError:
            raise EngineError("the inference was cancelled") from None

    def recurrent_counts(self, stream: str | None = None) -> tuple[int, int] | None:
        return self.shared.engine.recurrent_counts(self.client_id)

    def describe(self) -> str:
        return self.shared.engine.describe()


QUEUE_LIMIT_FOR_BATCH = 16  # windows one client call may submit at once (a row of 4K tiles is 8)
