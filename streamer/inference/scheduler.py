"""One worker thread per device runs the windows of every camera on the engines of that device.

Each camera (a client, see ``streamer.inference.service``) has its own short queue. The worker takes the
cameras in turn (round robin: the camera served last goes to the back), and batches the head windows of
the cameras that want the same engine at the same frame size, up to the batch size (the backend's choice,
or ``server.inference.max_batch``). A window still queued after its deadline (the restorer has given up on
it and sent its frame on unrestored) is dropped unrun and counted, so a backlog never costs compute for
frames that are gone. Because one thread per device runs inference, the CPU threads of the process's
models are one budget (an ONNX Runtime session's intra-op threads), however many cameras there are.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from engines import Engine, EngineError
from streamer.histogram import ENGINE_BUCKETS_S, LatencyHistogram

log = logging.getLogger(__name__)

QUEUE_PER_CLIENT = 32  # windows: a camera has one restoration in flight; a tiled 4K frame queues a row of tiles
# When the window in hand must be restored by (time.monotonic()); set by the restorer around a restoration.
DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("inference_deadline", default=math.inf)


class DeadlineExpired(EngineError):
    """The window was still queued at its deadline and was dropped unrun (its frame went out without it)."""


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Windows submitted inside this block are dropped unrun if still queued at ``at`` (monotonic)."""
    token = DEADLINE.set(at)
    try:
        yield
    finally:
        DEADLINE.reset(token)


@dataclass(eq=False, slots=True)
class Request:
    engine: Engine
    client: str  # the client's unique id (its queue)
    camera: str  # for the per-camera figures
    window: list[np.ndarray]
    future: concurrent.futures.Future[np.ndarray]
    submitted: float
    expires: float

    @property
    def key(self) -> tuple[int, tuple[int, ...]]:
        return id(self.engine), self.window[0].shape


@dataclass
class SchedulerStats:
    """What a device's worker did; updated under the scheduler's lock, copied out by ``snapshot``."""

    batches: int = 0
    windows: int = 0
    busy_s: float = 0.0
    expired: int = 0  # dropped unrun: still queued at the restorer's deadline
    rejected: int = 0  # refused: the client's queue was full
    failed: int = 0  # windows whose batch raised
    batch_sizes: dict[int, int] = field(default_factory=dict)
    camera_s: dict[str, float] = field(default_factory=dict)  # compute seconds by camera (its fair share)
    camera_windows: dict[str, int] = field(default_factory=dict)
    queue_wait: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(ENGINE_BUCKETS_S))


class DeviceScheduler:
    """The workers for one device (``cpu``, ``cuda``...); ``submit`` from any thread, ``close`` to stop.

    As many workers run as the device's engines take calls at once (``Engine.concurrent_calls``: one per
    thread of the CPU budget, since ONNX Runtime runs concurrent calls on one session and one call alone
    leaves the cores idle part of the time: lite int8 at 640x360 on 2 cores, 61 windows/s from one caller,
    96 from two). A camera is in one batch at a time, so its windows keep their order."""

    def __init__(self, device: str, max_batch: int = 0, queue_per_client: int = QUEUE_PER_CLIENT) -> None:
        self.device = device
        self.max_batch = max_batch  # 0: each engine's preferred batch
        self.queue_per_client = queue_per_client
        self.stats = SchedulerStats()
        self._queues: OrderedDict[str, deque[Request]] = OrderedDict()  # rotation order: next served first
        self._busy: set[str] = set()  # clients with a batch running
        self._running: dict[int, int] = {}  # id(engine) -> its calls running
        self._cond = threading.Condition()
        self._closed = False
        self._workers: list[threading.Thread] = []
        self.add_workers(1)

    def add_workers(self, count: int) -> None:
        """Run at least ``count`` workers (an engine that takes ``count`` calls at once joined the device)."""
        with self._cond:
            while len(self._workers) < count and not self._closed:
                worker = threading.Thread(target=self._run, name=f"inference-{self.device}-{len(self._workers)}",
                                          daemon=True)
                self._workers.append(worker)
                worker.start()

    @property
    def workers(self) -> int:
        return len(self._workers)

    def submit(self, engine: Engine, client: str, camera: str,
               windows: list[list[np.ndarray]]) -> list[concurrent.futures.Future[np.ndarray]]:
        """Queue ``windows`` (one frame size) for ``engine``; each future gets a restored frame or an
        ``EngineError``. Raises ``EngineError`` at once when the client's queue has no room for them."""
        now = time.monotonic()
        expires = DEADLINE.get()
        with self._cond:
            if self._closed:
                raise EngineError(f"the {self.device} inference scheduler is closed")
            queue = self._queues.setdefault(client, deque())
            if len(queue) + len(windows) > self.queue_per_client:
                self.stats.rejected += len(windows)
                raise EngineError(f"camera {camera}: {len(queue)} windows already queued for inference")
            futures: list[concurrent.futures.Future[np.ndarray]] = []
            for window in windows:
                future: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
                queue.append(Request(engine, client, camera, window, future, now, expires))
                futures.append(future)
            self._cond.notify()
        return futures

    def forget(self, client: str) -> None:
        """The client is gone: fail what it still has queued and drop its queue."""
        with self._cond:
            queue = self._queues.pop(client, deque())
        for request in queue:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(EngineError("the camera released its engine"))

    def close(self) -> None:
        """Stop the worker after the batch in hand; windows still queued fail. Idempotent."""
        with self._cond:
            self._closed = True
            queues = list(self._queues.values())
            self._queues.clear()
            self._cond.notify_all()
        for queue in queues:
            for request in queue:
                if request.future.set_running_or_notify_cancel():
                    request.future.set_exception(EngineError(f"the {self.device} inference scheduler is closed"))
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout=10)

    def snapshot(self) -> SchedulerStats:
        with self._cond:
            stats = self.stats
            return SchedulerStats(stats.batches, stats.windows, stats.busy_s, stats.expired, stats.rejected,
                                  stats.failed, dict(stats.batch_sizes), dict(stats.camera_s),
                                  dict(stats.camera_windows), stats.queue_wait.copy())

    def queued(self) -> int:
        with self._cond:
            return sum(len(queue) for queue in self._queues.values())

    # -- the worker ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                batch: list[Request] = []
                while not self._closed:
                    batch = self._take(time.monotonic())
                    if batch:
                        break
                    self._cond.wait()  # woken by a submit or by a batch that finished
                if self._closed:
                    return
                engine = batch[0].engine
                self._running[id(engine)] = self._running.get(id(engine), 0) + 1
                self._busy.update(request.client for request in batch)
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    self._running[id(engine)] -= 1
                    self._busy.difference_update(request.client for request in batch)
                    self._cond.notify_all()

    def _take(self, now: float) -> list[Request]:
        """The next batch (lock held; empty when nothing can run now): the first camera in rotation that is
        not in a running batch, with a live window for an engine that takes another call, sets the engine
        and frame size; the cameras after it add their head windows of the same engine and size. Served
        cameras go to the back of the rotation."""
        batch: list[Request] = []
        key: tuple[int, tuple[int, ...]] | None = None
        limit = 1
        served: list[str] = []
        for client, queue in self._queues.items():
            while queue and queue[0].expires <= now:
                self._expire(queue.popleft())
            if client in self._busy or not queue:
                continue
            engine = queue[0].engine
            if key is None and self._running.get(id(engine), 0) >= engine.concurrent_calls:
                continue  # that engine takes no more calls now; another camera's engine may
            took = False
            while queue and len(batch) < limit and (key is None or queue[0].key == key):
                request = queue.popleft()
                if not request.future.set_running_or_notify_cancel():
                    continue
                if key is None:
                    key = request.key
                    preferred = self.max_batch or request.engine.preferred_batch
                    limit = max(1, min(preferred, request.engine.max_batch))
                batch.append(request)
                took = True
            if took:
                served.append(client)
            if len(batch) >= limit:
                break
        for client in served:
            self._queues.move_to_end(client)
        return batch

    def _expire(self, request: Request) -> None:
        self.stats.expired += 1
        if request.future.set_running_or_notify_cancel():
            request.future.set_exception(DeadlineExpired("dropped unrun: still queued at its deadline"))

    def _execute(self, batch: list[Request]) -> None:
        engine = batch[0].engine
        started = time.monotonic()
        try:
            results = engine.infer_batch([request.window for request in batch],
                                         [request.client for request in batch])
        except Exception as error:  # the backend failed: every window of the batch fails with its cause
            failure = error if isinstance(error, EngineError) else EngineError(f"{type(error).__name__}: {error}")
            for request in batch:
                request.future.set_exception(failure)
            with self._cond:
                self.stats.failed += len(batch)
            return
        seconds = time.monotonic() - started
        for request, result in zip(batch, results, strict=True):
            request.future.set_result(result)
        with self._cond:
            stats = self.stats
            stats.batches += 1
            stats.windows += len(batch)
            stats.busy_s += seconds
            stats.batch_sizes[len(batch)] = stats.batch_sizes.get(len(batch), 0) + 1
            for request in batch:
                stats.camera_s[request.camera] = stats.camera_s.get(request.camera, 0.0) + seconds / len(batch)
                stats.camera_windows[request.camera] = stats.camera_windows.get(request.camera, 0) + 1
                stats.queue_wait.observe(started - request.submitted)
