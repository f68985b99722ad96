"""An upscaling model's camera keeps one output size: frames the model did not make are scaled bicubic (and
counted), the ladder's cheaper levels and the compare view fit, and viewers get twice the camera's size."""

from __future__ import annotations

import asyncio
import json
import subprocess

import av
import numpy as np

from engines import activate_engine
from streamer.app import StreamerApp
from streamer.graph.frames import Frame
from streamer.ladder import ReducedResolutionLevel
from streamer.upscale import OutputScaler
from streamer.webrtc.views import compose
from tests.media import clean_frames, psnr
from tests.streamer.app_harness import app_config, get, http_port, running_app, wait_until

WIDTH, HEIGHT = 160, 96


def camera_frame(image: np.ndarray, seq: int = 0) -> Frame:
    """A frame as the decoder hands it over: a YUV frame, RGB made only on request."""
    return Frame(None, seq / 25, 0.0, seq, video=av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p"))


def test_the_output_scaler_brings_every_frame_to_one_size() -> None:
    scaler = OutputScaler(2)
    image = clean_frames(WIDTH, HEIGHT, 1)[0]
    camera = camera_frame(image)
    unrestored = scaler(camera)  # went out without restoration: scaled as the decoder's YUV frame
    assert unrestored.size == (2 * WIDTH, 2 * HEIGHT) and unrestored.video.format.name == "yuv420p"
    assert unrestored.original is camera and not unrestored.restored
    by_model = Frame(np.zeros((2 * HEIGHT, 2 * WIDTH, 3), np.uint8), 0.0, 0.0, 1, restored=True, original=camera,
                     level="full")
    assert scaler(by_model) is by_model  # the model's own size: left alone
    fast = Frame(image, 0.0, 0.0, 2, restored=True, original=camera, level="fast")
    fast.level_switch = True
    upscaled = scaler(fast)
    assert upscaled.image.shape == (2 * HEIGHT, 2 * WIDTH, 3) and upscaled.level == "fast" and upscaled.restored
    assert upscaled.level_switch  # the encoder still starts a new GOP where the ladder moved
    assert scaler.upscaled == 2
    # bicubic, not a blocky or shifted copy: downscaled back, it is the camera's picture
    back = av.VideoFrame.from_ndarray(upscaled.image, format="rgb24").reformat(WIDTH, HEIGHT, interpolation="AREA")
    assert psnr(back.to_ndarray(), image) > 30


def test_the_compare_view_scales_the_camera_half_to_the_restored_size() -> None:
    image = clean_frames(WIDTH, HEIGHT, 1)[0]
    restored = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(2 * WIDTH, 2 * HEIGHT).to_ndarray()
    frame = Frame(restored, 0.0, 0.0, 0, restored=True, original=camera_frame(image), level="full")
    side_by_side = compose(frame).image
    assert side_by_side.shape == (2 * HEIGHT, 4 * WIDTH, 3)
    assert psnr(side_by_side[:, : 2 * WIDTH], restored) > 30  # the raw half is the same picture, scaled


def test_the_half_level_of_an_upscaling_model_gives_the_camera_size() -> None:
    frames = list(clean_frames(WIDTH, HEIGHT, 5))
    engine = activate_engine("cpu", "lite-sr2", threads=1)
    try:
        assert engine.info.scale == 2
        assert engine.infer(frames).shape == (2 * HEIGHT, 2 * WIDTH, 3)
        half = ReducedResolutionLevel(engine).restore(frames, 2)
    finally:
        engine.deactivate()
    assert half.shape == (HEIGHT, WIDTH, 3) and psnr(half, frames[2]) > 25


def ffprobe_size(url: str) -> tuple[int, int]:
    result = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0",
                             "-show_entries", "stream=width,height", "-of", "json", url],
                            capture_output=True, text=True, timeout=30, check=True)
    stream = json.loads(result.stdout)["streams"][0]
    return stream["width"], stream["height"]


async def test_an_upscaling_model_serves_twice_the_camera_size() -> None:
    source = {"type": "demo", "width": WIDTH, "height": HEIGHT, "fps": 25}
    # exposure on too: the encode stage runs the tone curve, then the output scaler
    config = app_config([{"name": "cam", "source": source, "engine": {"type": "cpu", "model": "lite-sr2"},
                          "exposure": {"enabled": True}}])
    async with running_app(StreamerApp(config)) as app:
        port = http_port(app)

        async def restored_enough() -> bool:
            stream = (await get(port, "/api/streams"))[1]["streams"][0]
            return bool(stream["frames_restored"] >= 25)

        await wait_until(restored_enough, 60, "25 restored frames")
        assert await asyncio.to_thread(ffprobe_size, app.rtsp_url("cam")) == (2 * WIDTH, 2 * HEIGHT)
        stream = (await get(port, "/api/v1/streams/cam"))[1]
        assert stream["output_scale"] == 2 and stream["frames_upscaled"] <= stream["frames_out"]
        assert stream["exposure_gain"] is not None
        status, exposition = await get(port, "/metrics")
        assert status == 200 and 'streamer_upscaled_frames_total{camera="cam"}' in exposition


def test_a_brightened_unrestored_frame_is_scaled_after_the_tone_curve() -> None:
    from streamer.config import ExposureConfig
    from streamer.exposure import ExposureCorrector

    dark = (clean_frames(WIDTH, HEIGHT, 1)[0] * 0.1).astype(np.uint8)
    corrected = ExposureCorrector(ExposureConfig(enabled=True)).correct(camera_frame(dark))
    scaled = OutputScaler(2)(corrected)  # what the pipeline's encode stage does, in this order
    assert scaled.size == (2 * WIDTH, 2 * HEIGHT) and not scaled.restored
    assert scaled.image.mean() > 3 * dark.mean()
