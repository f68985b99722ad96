"""The shared inference service with the real CPU backend (ONNX Runtime, the shipped lite model): one
engine per model for every camera, the same pictures as an engine of the camera's own, freed with its
last camera; and a running app whose cameras share it (API and metrics)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from engines import EngineError, create_engine
from streamer.app import ListenError, StreamerApp
from streamer.config import EngineConfig, InferenceConfig
from streamer.inference import EngineClient, InferenceService
from tests.streamer.app_harness import app_config, get, http_port, running_app, wait_until

SETTINGS = EngineConfig(type="cpu", model="lite")


def sliding_windows(seed: int, count: int, size: tuple[int, int] = (48, 64)) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count + 4)]
    return [frames[start : start + 5] for start in range(count)]


def test_cameras_asking_for_one_model_share_one_engine_freed_with_the_last() -> None:
    service = InferenceService(InferenceConfig(threads=1))
    try:
        first = service.acquire(SETTINGS, "cam1")
        second = service.acquire(SETTINGS, "cam2")
        fast = service.acquire(SETTINGS, "cam2", model="lite-fast")
        assert isinstance(first, EngineClient) and isinstance(second, EngineClient)
        assert first.shared.engine is second.shared.engine and fast.shared.engine is not first.shared.engine
        engine = first.shared.engine
        assert engine.active and len(service.engines()) == 2 and len(service.schedulers()) == 1  # one CPU worker
        assert {entry["model"]: entry["cameras"] for entry in service.describe()["engines"]} == {  # type: ignore[index]
            "lite": ["cam1", "cam2"], "lite-fast": ["cam2"]}
        first.deactivate()
        assert engine.active  # cam2 still uses it
        second.deactivate()
        assert not engine.active and len(service.engines()) == 1
        fast.deactivate()
        assert service.engines() == []
    finally:
        service.close()


def test_shared_pictures_equal_a_private_engines_for_interleaved_sliding_windows() -> None:
    """Two cameras' sliding windows go through one engine in turn (each camera's converted frames kept
    apart): every picture equals what an engine of the camera's own gives."""
    service = InferenceService(InferenceConfig(threads=1))
    try:
        clients = [service.acquire(SETTINGS, f"cam{index}") for index in range(2)]
        streams = [sliding_windows(seed, 4) for seed in (1, 2)]
        shared: list[list[np.ndarray]] = [[], []]
        for step in range(4):
            for index, client in enumerate(clients):
                shared[index].append(client.infer(streams[index][step]))
        with create_engine("cpu", "lite", threads=1) as private:
            for index in range(2):
                alone = [private.infer(window) for window in streams[index]]
                assert all(np.array_equal(one, two) for one, two in zip(shared[index], alone, strict=True))
        batched = clients[0].shared.engine.infer_batch([streams[0][0], streams[1][0]], ["x", "y"])
        assert np.array_equal(batched[0], shared[0][0]) and np.array_equal(batched[1], shared[1][0])
    finally:
        service.close()


def test_concurrent_cameras_all_get_their_own_pictures() -> None:
    service = InferenceService(InferenceConfig(threads=1, max_batch=4))
    windows = {name: sliding_windows(seed, 6) for seed, name in enumerate(["a", "b", "c"])}
    results: dict[str, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def camera(name: str) -> None:
        try:
            client = service.acquire(SETTINGS, name)
            results[name] = [client.infer(window) for window in windows[name]]
            client.deactivate()
        except BaseException as error:  # reported below
            errors.append(error)

    try:
        threads = [threading.Thread(target=camera, args=(name,)) for name in windows]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        with create_engine("cpu", "lite", threads=1) as private:
            for name, outputs in results.items():
                expected = [private.infer(window) for window in windows[name]]
                # a batch may run other kernels than one window: equal within rounding
                assert all(np.abs(one.astype(int) - two).max() <= 1 for one, two in zip(outputs, expected, strict=True))
        assert service.engines() == []  # every camera released it
    finally:
        service.close()


def test_without_sharing_each_camera_has_an_engine_of_its_own() -> None:
    service = InferenceService(InferenceConfig(shared=False))
    first = service.acquire(SETTINGS, "cam1")
    second = service.acquire(SETTINGS, "cam2")
    try:
        assert not isinstance(first, EngineClient) and first is not second
        assert service.engines() == []
    finally:
        first.deactivate()
        second.deactivate()
        service.close()


def service_app_config(cameras: list[dict[str, Any]], **inference: Any) -> Any:
    """One inference thread, no WebRTC: the app-level tests here need only RTSP, HTTP and the shared engine."""
    return app_config(cameras, webrtc={"enabled": False}, inference={"threads": 1, **inference})


DEMO = {"type": "demo", "width": 128, "height": 96, "fps": 10}


@pytest.mark.slow
async def test_an_apps_cameras_share_one_engine_visible_in_the_api_and_metrics() -> None:
    cameras = [{"name": name, "source": DEMO, "engine": {"type": "cpu", "model": "lite"}} for name in ("one", "two")]
    app = StreamerApp(service_app_config(cameras))
    async with running_app(app, ready_timeout=60):
        port = http_port(app)

        async def both_restored() -> bool:
            body = (await get(port, "/api/v1/inference"))[1]
            return bool(body["devices"]) and all(body["devices"][0]["camera_seconds"].get(name, 0) > 0
                                                 for name in ("one", "two"))

        await wait_until(both_restored, 30, "both cameras' windows restored by the shared engine")
        status, body = await get(port, "/api/v1/inference")
        assert status == 200 and body["shared"] is True
        assert [(engine["model"], engine["cameras"]) for engine in body["engines"]] == [("lite", ["one", "two"])]
        metrics = (await get(port, "/metrics"))[1]
        assert 'streamer_inference_engine_cameras{backend="cpu",device="cpu",model="lite"} 2.0' in metrics
        assert 'streamer_inference_camera_seconds_total{camera="two",device="cpu"}' in metrics
        await app.manager.remove("two")
        body = (await get(port, "/api/v1/inference"))[1]
        assert [engine["cameras"] for engine in body["engines"]] == [["one"]]
    assert app.inference.engines() == []


async def test_an_app_that_cannot_start_closes_its_inference_service() -> None:
    good = {"name": "good", "source": DEMO, "engine": {"type": "cpu", "model": "lite"}}
    app = StreamerApp(service_app_config([good], threads=1))
    blocker = StreamerApp(service_app_config([{**good, "name": "other"}], threads=1))
    async with running_app(blocker, ready_timeout=60):
        assert blocker.rtsp is not None
        app.config.server.rtsp.port = blocker.rtsp.port  # taken: the app fails after its engine was built
        # the app's own error, not a time-out waiting for it to be ready
        with pytest.raises(ListenError, match="cannot listen"):
            async with running_app(app):
                pass
        assert app.inference.engines() == [] and app.inference.schedulers() == []
        with pytest.raises(EngineError, match="closed"):
            app.inference.acquire(SETTINGS, "late")
