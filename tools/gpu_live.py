"""The GPU check's live run: N synthetic cameras through the whole pipeline, in this process.

Each camera is a ``CameraPipeline`` (file source: decode in a thread -> temporal window -> engine in a thread
-> libx264 encode in a thread -> hub) playing the same pre-encoded synthetic H.264 clip in real time, looped.
No RTSP server (``streamer.rtsp`` needs aiortc): a reader subscribed to each camera's hub receives every
encoded access unit, so output fps and latency are read where the RTSP server would read them. Latency is
decode -> encoded unit published (``AccessUnit.wallclock`` is set when the source emitted the decoded frame;
it includes the window's look-ahead wait, 2 frames = 80 ms at 25 fps for a centred model). The cameras share
one engine through the inference service (``streamer.inference``), as ``streamer run`` does: its scheduler
batches the windows of the cameras that are ready together (up to ``server.inference.max_batch``, 0 = the
backend's 8) into one call on the GPU.

Needs PyAV and pydantic (the pipeline's decode/encode and config).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import Engine
from tools.gpu_scene import SceneFrames


def make_clip(path: Path, width: int, height: int, seconds: float, fps: int = 25, seed: int = 5) -> dict[str, Any]:
    """A noisy camera-like H.264 clip (the demo scene + sensor noise, x264 at a camera's quality)."""
    import av

    scene = SceneFrames(width, height, sigma=18.0, seed=seed)
    count = max(int(seconds * fps), 1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "26", "x264-params": f"keyint={2 * fps}:bframes=0"}
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(scene.pair(index)[1], format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return {"clip": f"{width}x{height} {count} frames at {fps} fps, {path.stat().st_size // 1024} KiB", "scene": scene.kind}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class _Reader:
    """Reads every access unit of one camera's hub; keeps (arrival, latency) for the measured window."""

    def __init__(self, pipeline: Any) -> None:
        self.subscription = pipeline.hub.subscribe(4096, name="gpu-check")
        self.arrivals: list[tuple[float, float]] = []

    async def run(self) -> None:
        while True:
            unit = await self.subscription.get()
            if unit is None:
                return
            now = time.time()
            self.arrivals.append((now, now - unit.wallclock))


def _snapshot(pipeline: Any) -> dict[str, Any]:
    stats = pipeline.restorer.stats
    return {
        "frames_in": pipeline.source.stats.frames,
        "frames_out": stats.frames_out,
        "restored": stats.restored,
        "degraded": dict(stats.degraded),
    }


async def _run_cameras(
    clip: Path, cameras: int, seconds: float, warmup_s: float, engine_factory: Callable[[], Engine], engine_type: str
) -> dict[str, Any]:
    from streamer.config import CameraConfig, EngineConfig, FileSourceConfig
    from streamer.inference import InferenceService
    from streamer.pipeline import CameraPipeline, make_window
    from streamer.restorer import RestoreStage

    pipelines: list[Any] = []
    started = time.monotonic()
    # one engine for every camera, made by the check's factory (its CUDA graph captured before the first frame)
    service = InferenceService(activate=lambda *settings, **options: engine_factory())
    for index in range(cameras):
        config = CameraConfig(
            name=f"cam{index}", source=FileSourceConfig(path=str(clip)), engine=EngineConfig(type=engine_type)
        )
        pipeline = CameraPipeline(config, inference=service)
        # What CameraPipeline.prepare does, without the ladder's other levels: the engine alone is measured.
        engine = await asyncio.to_thread(service.acquire, config.engine, config.name)
        pipeline.engine = engine
        pipeline.restorer = RestoreStage(engine, make_window(config, engine), pipeline.decoded, pipeline.restored)
        pipelines.append(pipeline)
    setup_s = time.monotonic() - started
    readers = [_Reader(pipeline) for pipeline in pipelines]
    tasks = [asyncio.create_task(pipeline.run()) for pipeline in pipelines]
    reader_tasks = [asyncio.create_task(reader.run()) for reader in readers]
    try:
        await asyncio.sleep(warmup_s)  # a measurement window, not a synchronisation: the loop keeps running
        before = [_snapshot(pipeline) for pipeline in pipelines]
        cpu_before, t0 = os.times(), time.time()
        await asyncio.sleep(seconds)
        after = [_snapshot(pipeline) for pipeline in pipelines]
        cpu_after, t1 = os.times(), time.time()
    finally:
        for pipeline in pipelines:
            pipeline.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, *reader_tasks, return_exceptions=True), 30)
        batches = service.describe()["devices"]
        await asyncio.to_thread(service.close)
    rows = []
    for index, (reader, first, last) in enumerate(zip(readers, before, after, strict=True)):
        window = [latency for arrival, latency in reader.arrivals if t0 <= arrival < t1]
        out = last["frames_out"] - first["frames_out"]
        engine_ms = [1000 * value for value in pipelines[index].restorer.stats.engine_seconds]
        rows.append({
            "camera": f"cam{index}",
            "in_fps": round((last["frames_in"] - first["frames_in"]) / (t1 - t0), 2),
            "out_fps": round(len(window) / (t1 - t0), 2),
            "restored_pct": round(100 * (last["restored"] - first["restored"]) / max(out, 1), 1),
            "degraded": {k: v - first["degraded"].get(k, 0) for k, v in last["degraded"].items() if v - first["degraded"].get(k, 0)},
            "latency_p50_ms": round(1000 * _percentile(window, 50), 1),
            "latency_p95_ms": round(1000 * _percentile(window, 95), 1),
            "engine_p50_ms": round(_percentile(engine_ms, 50), 2),
            "engine_p95_ms": round(_percentile(engine_ms, 95), 2),
        })
    latencies = [latency for reader in readers for arrival, latency in reader.arrivals if t0 <= arrival < t1]
    cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    summary = {
        "cameras": cameras,
        "engine": pipelines[0].engine.describe(),
        "setup_s": round(setup_s, 2),
        "measured_s": round(t1 - t0, 1),
        "total_out_fps": round(sum(row["out_fps"] for row in rows), 1),
        "min_camera_fps": min(row["out_fps"] for row in rows),
        "restored_pct_mean": round(float(np.mean([row["restored_pct"] for row in rows])), 1),
        "latency_p50_ms": round(1000 * _percentile(latencies, 50), 1),
        "latency_p95_ms": round(1000 * _percentile(latencies, 95), 1),
        "process_cpu_cores": round(cpu_s / (t1 - t0), 2),
        "inference": batches,  # batches by size, windows, busy seconds, compute seconds per camera
    }
    return {"summary": summary, "cameras": rows}


def live_section(
    workdir: Path,
    size: tuple[int, int],
    camera_counts: list[int],
    seconds: float,
    warmup_s: float,
    clip_seconds: float,
    engine_factory: Callable[[], Engine],
    engine_type: str,
    time_left: Callable[[], float],
    progress: Callable[[dict[str, Any]], None] | None = None,
    last_seconds: float | None = None,
) -> dict[str, Any]:
    """Make the clip, then run each number of cameras in turn while the global deadline allows; the last
    (largest) count runs ``last_seconds`` when given (the long run), the others ``seconds``."""
    width, height = size
    clip = workdir / f"live-{width}x{height}.mp4"
    started = time.monotonic()
    section: dict[str, Any] = make_clip(clip, width, height, clip_seconds)
    section["clip_s"] = round(time.monotonic() - started, 1)
    section["engines"] = "one engine shared by every camera (streamer.inference), windows batched across cameras"
    summaries, per_camera, notes = [], [], []
    for position, count in enumerate(camera_counts):
        measured = last_seconds if last_seconds and position == len(camera_counts) - 1 else seconds
        needed = measured + warmup_s + 5 + 0.5 * count
        if time_left() < needed:
            notes.append(f"{count} cameras skipped: {time_left():.0f} s left, needs ~{needed:.0f}")
            continue
        try:
            result = asyncio.run(_run_cameras(clip, count, measured, warmup_s, engine_factory, engine_type))
        except Exception as error:  # one camera count failing must not lose the others
            notes.append(f"{count} cameras failed: {type(error).__name__}: {error}")
            continue
        summaries.append(result["summary"])
        per_camera += [{"cameras": count, **row} for row in result["cameras"]]
        print(f"[gpu_check] live {count} cameras: {result['summary']}", flush=True)
        section.update(summary=summaries, per_camera=per_camera)
        if progress is not None:
            progress(section)
    section.update(summary=summaries, per_camera=per_camera)
    if notes:
        section["notes"] = notes
    return section
