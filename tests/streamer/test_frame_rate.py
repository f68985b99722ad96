"""Honest frame rates: measured from timestamps, written into the SPS, the SDP and recordings, and used for
the bit budget."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.config import EncoderConfig
from streamer.encoder import H264Encoder, split_annexb
from streamer.framerate import FrameRateMeter, nice_rate
from streamer.graph.frames import AccessUnit, Frame
from streamer.rtsp.sdp import build_sdp
from streamer.sps import sps_frame_rate, sps_timing
from tests.conftest import HEIGHT, WIDTH
from tests.media import add_noise, clean_frames, write_lossless
from tests.peers.processes import GstCamera, StreamerProcess, write_camera_config

FRAMES = add_noise(clean_frames(160, 96, 20), 12.0)


def encode(encoder: H264Encoder, timestamps: list[float], images: list[np.ndarray] = FRAMES) -> list[AccessUnit]:
    units = []
    for index, timestamp in enumerate(timestamps):
        units += encoder.encode(Frame(images[index % len(images)], timestamp, 0.0, index))
    return units


def declared_rates(units: list[AccessUnit]) -> list[Fraction | None]:
    return [sps_frame_rate(unit.parameter_sets[0]) for unit in units if unit.parameter_sets]


def test_nice_rate_snaps_to_common_rates_only_when_close() -> None:
    assert nice_rate(90000 / 3003) == Fraction(30000, 1001)
    assert nice_rate(30.0) == 30
    assert nice_rate(9.95) == 10
    assert nice_rate(17.3) == Fraction(1730, 100)


def test_meter_reads_through_jitter_drops_and_outages() -> None:
    rng = np.random.default_rng(0)
    meter = FrameRateMeter()
    timestamp = 0.0
    for index in range(60):
        meter.add(timestamp + rng.uniform(-0.006, 0.006), discontinuity=index == 30)
        timestamp += 0.08 if index % 10 == 3 else 0.04  # a dropped frame now and then
        if index == 29:
            timestamp += 5.0  # an outage, marked by the discontinuity of the next frame
    assert meter.rate() == 25
    assert FrameRateMeter().rate() is None


def test_sps_timing_of_streams_made_by_ffmpeg(tmp_path: Path) -> None:
    """The SPS reader against other encoders' streams: High (with scaling matrices) and Baseline."""
    for rate, options in (("30000/1001", ["-profile:v", "high444", "-pix_fmt", "yuv444p", "-x264-params", "cqm=jvt"]),
                          ("12", ["-profile:v", "baseline", "-pix_fmt", "yuv420p", "-vf", "setsar=40/33"])):
        target = tmp_path / "clip.h264"
        subprocess.run(["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=176x144:rate={rate}",
                        "-t", "0.2", "-c:v", "libx264", *options, "-f", "h264", str(target)], check=True)
        sps = next(nal for nal in split_annexb(target.read_bytes()) if nal[0] & 0x1F == 7)
        assert sps_frame_rate(sps) == Fraction(rate)


@pytest.mark.parametrize("fps", [10, 30])
def test_encoder_runs_at_the_measured_rate_and_meets_its_bitrate(fps: int) -> None:
    """No hint: the encoder opens on its default guess and re-opens as soon as it has measured the rate."""
    encoder = H264Encoder(EncoderConfig(bitrate_kbps=300))
    seconds = 10
    units = encode(encoder, [index / fps for index in range(seconds * fps)])
    rates = declared_rates(units)
    assert set(rates[1:]) == {fps}, rates
    last_sps = [unit.parameter_sets[0] for unit in units if unit.parameter_sets][-1]
    timing = sps_timing(last_sps)
    assert timing is not None and Fraction(timing.time_scale, 2 * timing.num_units_in_tick) == fps
    kbps = sum(unit.nbytes for unit in units[fps:]) * 8 / (seconds - 1) / 1000
    assert 0.7 * 300 <= kbps <= 1.3 * 300, f"{kbps:.0f} kbit/s for a 300 kbit/s target at {fps} fps"


def test_encoder_opens_at_the_declared_rate_without_reopening() -> None:
    encoder = H264Encoder(EncoderConfig())
    encoder.rate_hint = lambda: 10.0
    units = encode(encoder, [index / 10 for index in range(40)])
    assert set(declared_rates(units)) == {10}
    assert encoder.stats.reinits == 0


def test_encoder_follows_a_real_rate_change_at_a_keyframe_only() -> None:
    encoder = H264Encoder(EncoderConfig(gop_s=1.0))
    encoder.rate_hint = lambda: 25.0
    timestamps = [index / 25 for index in range(75)] + [3 + index / 10 for index in range(50)]
    units = encode(encoder, timestamps)
    rates = declared_rates(units)
    switch = rates.index(10) if 10 in rates else len(rates)
    assert switch >= 4 and set(rates[:switch]) == {25} and set(rates[switch:]) == {10} and rates[-1] == 10, rates
    assert [unit.keyframe for unit in units].count(True) == 8, "re-opening must not add keyframes"
    assert encoder.stats.reinits == 1


def test_encoder_keeps_its_rate_through_jitter_and_drops() -> None:
    rng = np.random.default_rng(3)
    encoder = H264Encoder(EncoderConfig())
    encoder.rate_hint = lambda: 25.0
    timestamps = np.cumsum(np.where(rng.random(150) < 0.1, 0.08, 0.04) + rng.uniform(-0.012, 0.012, 150))
    encode(encoder, list(timestamps))
    assert encoder.stats.reinits == 0 and encoder.rate == 25


def test_sdp_framerate_is_the_sps_rate() -> None:
    encoder = H264Encoder(EncoderConfig())
    encoder.rate_hint = lambda: 10.0
    (unit,) = encode(encoder, [0.0])
    assert unit.parameter_sets is not None
    assert "a=framerate:10\r\n" in build_sdp("cam", "127.0.0.1", unit.parameter_sets, 24.6)
    truncated = (unit.parameter_sets[0][:4], unit.parameter_sets[1])  # no readable timing: the measured rate
    assert "a=framerate:24.6\r\n" in build_sdp("cam", "127.0.0.1", truncated, 24.6)


def describe(url: str) -> str:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(":")[1] for line in head.decode().split("\r\n") if line.lower().startswith("content-length")))
        while len(body) < length:
            body += sock.recv(4096)
    return body.decode()


def ffprobe_rates(target: str, *options: str) -> tuple[str, str]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", *options, "-select_streams", "v:0", "-show_entries",
         "stream=r_frame_rate,avg_frame_rate", "-of", "json", target],
        capture_output=True, text=True, timeout=30, check=True,
    )
    stream = json.loads(result.stdout)["streams"][0]
    return stream["r_frame_rate"], stream["avg_frame_rate"]


@pytest.mark.slow
@pytest.mark.parametrize("fps", [10, 30])
def test_camera_rate_reaches_sps_sdp_viewers_and_recording(real_peers: None, tmp_path: Path, fps: int) -> None:
    clip = write_lossless(tmp_path / "noisy.mkv", add_noise(clean_frames(WIDTH, HEIGHT, 50), 12.0), fps)
    camera = GstCamera(clip, WIDTH, HEIGHT, fps).start()
    record = tmp_path / "restored.mkv"
    config = write_camera_config(tmp_path / "camera.yaml", camera.url, encoder={"bitrate_kbps": 300}, record=record)
    streamer = StreamerProcess("--config", str(config), "--engine", "passthrough").start()
    try:
        streamer.wait_metric('streamer_frames_out_total{camera="restored"}', 2 * fps, 30)
        sdp = describe(streamer.url())
        assert f"a=framerate:{fps}\r\n" in sdp
        sprop = sdp.split("sprop-parameter-sets=", 1)[1].split(",", 1)[0]
        assert sps_frame_rate(base64.b64decode(sprop)) == fps
        assert ffprobe_rates(streamer.url(), "-rtsp_transport", "tcp") == (f"{fps}/1", f"{fps}/1")
        streamer.wait_metric('streamer_frames_out_total{camera="restored"}', 10 * fps, 30)
        streamer.terminate(10)
    finally:
        streamer.kill()
        camera.kill()
    assert ffprobe_rates(str(record)) == (f"{fps}/1", f"{fps}/1")
    with av.open(str(record)) as container:
        stream = container.streams.video[0]
        extradata = stream.codec_context.extradata
        packets = [packet for packet in container.demux(stream) if packet.size]
    assert extradata[0] == 1, "Matroska stores the parameter sets as an avcC record"
    sps = extradata[8 : 8 + int.from_bytes(extradata[6:8], "big")]
    assert sps_frame_rate(sps) == fps
    times = [float(packet.pts * packet.time_base) for packet in packets]
    assert len(packets) / (times[-1] - times[0]) == pytest.approx(fps, rel=0.1)
    later = [packet for packet, time in zip(packets, times, strict=True) if time >= times[0] + 2]  # after rate control settled
    kbps = sum(packet.size for packet in later) * 8 / (times[-1] - times[0] - 2) / 1000
    assert 0.7 * 300 <= kbps <= 1.3 * 300, f"{kbps:.0f} kbit/s for a 300 kbit/s target at {fps} fps"
