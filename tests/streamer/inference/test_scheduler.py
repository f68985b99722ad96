"""The device scheduler: cameras served in turn, windows of one engine and size batched across cameras,
late windows dropped unrun, a failing backend failing only its batch. Driven with a real engine of the
interface whose first call can be held (so what queues behind it is known, not timed)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engines.base import Engine, EngineError, ModelInfo
from streamer.inference.scheduler import DeadlineExpired, DeviceScheduler, deadline


class RecordingEngine(Engine):
    """Returns each window's reference frame + 1; records the batches it ran (by each window's tag, the
    value of its frames). ``hold`` makes the next call wait for ``release``; ``fail`` makes calls raise."""

    backend = "recording"

    def __init__(self, preferred_batch: int = 1) -> None:
        super().__init__()
        self.info = ModelInfo(name="recording", window=1, reference_index=0)
        self.preferred_batch = preferred_batch
        self.batches: list[list[int]] = []
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.fail = False

    def _activate(self) -> None:
        return None

    def _infer(self, window: list[np.ndarray]) -> np.ndarray:
        raise AssertionError("the scheduler calls infer_batch")

    def _infer_batch(self, windows: list[list[np.ndarray]], streams: list[str]) -> list[np.ndarray]:
        if self.hold.is_set():
            self.hold.clear()
            self.holding.set()
            self.release.wait(10)
        self.batches.append([int(window[0][0, 0, 0]) for window in windows])
        if self.fail:
            raise RuntimeError("device lost")
        return [window[0] + 1 for window in windows]


def tagged(value: int, size: int = 4) -> list[np.ndarray]:
    return [np.full((size, size, 3), value, np.uint8)]


def held_scheduler(engine: RecordingEngine, max_batch: int = 0) -> DeviceScheduler:
    """A scheduler whose worker is busy with a first window (tag 0, client 'z') until ``engine.release``."""
    scheduler = DeviceScheduler("test", max_batch)
    engine.activate()
    engine.hold.set()
    scheduler.submit(engine, "z", "z", [tagged(0)])
    assert engine.holding.wait(5)
    return scheduler


def test_cameras_are_served_in_turn_whatever_each_has_queued() -> None:
    engine = RecordingEngine()
    scheduler = held_scheduler(engine)
    try:
        a = scheduler.submit(engine, "a", "a", [tagged(11), tagged(12), tagged(13)])
        b = scheduler.submit(engine, "b", "b", [tagged(21)])
        c = scheduler.submit(engine, "c", "c", [tagged(31)])
        engine.release.set()
        results = [future.result(5) for future in [*a, *b, *c]]
        assert [int(result[0, 0, 0]) for result in results] == [12, 13, 14, 22, 32]
        assert engine.batches == [[0], [11], [21], [31], [12], [13]]  # a's backlog waits for b and c
        stats = scheduler.snapshot()
        assert stats.windows == 6 and stats.camera_windows == {"z": 1, "a": 3, "b": 1, "c": 1}
    finally:
        scheduler.close()


def test_windows_of_one_engine_and_size_are_batched_across_cameras() -> None:
    engine = RecordingEngine(preferred_batch=8)
    other = RecordingEngine(preferred_batch=8)
    other.activate()
    scheduler = held_scheduler(engine)
    try:
        futures = [
            *scheduler.submit(engine, "a", "a", [tagged(1)]),
            *scheduler.submit(engine, "b", "b", [tagged(2, size=8)]),  # another frame size
            *scheduler.submit(other, "c", "c", [tagged(3)]),  # another engine
            *scheduler.submit(engine, "d", "d", [tagged(4)]),
            *scheduler.submit(engine, "e", "e", [tagged(5)]),
        ]
        engine.release.set()
        for future in futures:
            future.result(5)
        assert engine.batches == [[0], [1, 4, 5], [2]]
        assert other.batches == [[3]]
        assert scheduler.snapshot().batch_sizes == {1: 3, 3: 1}
    finally:
        scheduler.close()


def test_max_batch_caps_the_backend_preference() -> None:
    engine = RecordingEngine(preferred_batch=8)
    scheduler = held_scheduler(engine, max_batch=2)
    try:
        futures = [future for name in "abcde" for future in scheduler.submit(engine, name, name, [tagged(1)])]
        engine.release.set()
        for future in futures:
            future.result(5)
        assert [len(batch) for batch in engine.batches] == [1, 2, 2, 1]
    finally:
        scheduler.close()


def test_a_window_still_queued_at_its_deadline_is_dropped_unrun() -> None:
    engine = RecordingEngine()
    scheduler = held_scheduler(engine)
    try:
        with deadline(time.monotonic() + 0.05):
            (late,) = scheduler.submit(engine, "a", "a", [tagged(7)])
        (on_time,) = scheduler.submit(engine, "b", "b", [tagged(8)])
        time.sleep(0.1)  # past the first window's deadline (the worker is held: nothing can run it)
        engine.release.set()
        with pytest.raises(DeadlineExpired):
            late.result(5)
        assert int(on_time.result(5)[0, 0, 0]) == 9
        assert engine.batches == [[0], [8]]
        assert scheduler.snapshot().expired == 1
    finally:
        scheduler.close()


def test_a_failing_backend_fails_its_batch_and_the_next_one_runs() -> None:
    engine = RecordingEngine(preferred_batch=4)
    scheduler = held_scheduler(engine)
    try:
        engine.fail = True
        broken = [*scheduler.submit(engine, "a", "a", [tagged(1)]), *scheduler.submit(engine, "b", "b", [tagged(2)])]
        engine.release.set()
        for future in broken:
            with pytest.raises(EngineError, match="RuntimeError: device lost"):
                future.result(5)
        engine.fail = False  # the backend recovers
        (again,) = scheduler.submit(engine, "a", "a", [tagged(3)])
        assert int(again.result(5)[0, 0, 0]) == 4
        stats = scheduler.snapshot()
        assert stats.failed == 3 and stats.windows == 1  # the held window failed with its batch too
    finally:
        scheduler.close()


def test_a_full_queue_refuses_at_once_and_close_fails_what_is_queued() -> None:
    engine = RecordingEngine()
    scheduler = held_scheduler(engine)
    scheduler.queue_per_client = 2
    queued = scheduler.submit(engine, "a", "a", [tagged(1), tagged(2)])
    with pytest.raises(EngineError, match="already queued"):
        scheduler.submit(engine, "a", "a", [tagged(3)])
    assert scheduler.snapshot().rejected == 1
    scheduler.submit(engine, "b", "b", [tagged(4)])  # another camera's queue has room
    engine.release.set()
    closer = threading.Thread(target=scheduler.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive()
    for future in queued:
        assert future.done()
    with pytest.raises(EngineError, match="closed"):
        scheduler.submit(engine, "a", "a", [tagged(5)])


class ConcurrentEngine(RecordingEngine):
    """Takes two calls at once; the first two calls wait for each other (so they must run at the same time)."""

    concurrent_calls = 2

    def __init__(self) -> None:
        super().__init__()
        self.meet = threading.Barrier(2, timeout=5)
        self.first_two = 0
        self.lock = threading.Lock()

    def _infer_batch(self, windows: list[list[np.ndarray]], streams: list[str]) -> list[np.ndarray]:
        with self.lock:
            self.first_two += 1
            meet = self.first_two <= 2
        if meet:
            self.meet.wait()  # raises BrokenBarrierError if the other call never comes
        return super()._infer_batch(windows, streams)


def test_an_engine_taking_concurrent_calls_gets_them_but_a_camera_is_in_one_call_at_a_time() -> None:
    engine = ConcurrentEngine()
    engine.activate()
    scheduler = DeviceScheduler("test")
    scheduler.add_workers(engine.concurrent_calls)
    try:
        a = scheduler.submit(engine, "a", "a", [tagged(1), tagged(2), tagged(3)])
        b = scheduler.submit(engine, "b", "b", [tagged(4)])
        assert [int(future.result(10)[0, 0, 0]) for future in [*a, *b]] == [2, 3, 4, 5]
        assert scheduler.workers == 2
        order = [tag for batch in engine.batches for tag in batch]
        assert sorted(order[:2]) == [1, 4] and order[2:] == [2, 3]  # a and b met; a's windows in order
    finally:
        scheduler.close()
