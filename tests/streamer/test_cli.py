"""The command line as a user types it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from streamer.timecode import read_timecode
from tests.media import add_noise, clean_frames, psnr, read_video, write_h264
from tests.peers.processes import StreamerProcess, start_viewer

ROOT = Path(__file__).resolve().parents[2]


def streamer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_lists_every_command_and_option() -> None:
    result = streamer("--help")
    assert result.returncode == 0 and all(word in result.stdout for word in ("run", "restore", "models", "validate-config"))
    run_help = streamer("run", "--help").stdout
    for option in ("--name", "--rtsp-port", "--http-port", "--engine", "--window", "--lookahead", "--config", "--record", "--publish",
                   "--exposure"):
        assert option in run_help


def test_models_lists_the_shipped_models_with_their_latency() -> None:
    result = streamer("models")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["lite"][1:3] == ["5", "2"]  # centred 5-frame window: waits for 2 future frames
    assert "yes" in rows["lite"]  # int8 twin shipped
    assert rows["lite-recurrent-wide"][-3] == "recurrent" and rows["lite"][-3] == "-"
    assert rows["lite-sr2"][-2] == "x2" and rows["lite"][-2] == "same"  # the upscaler's output is twice the size
    header = result.stdout.splitlines()[0]
    assert all(line.index("/") == header.index("file") for line in result.stdout.splitlines()[1:])  # aligned
    unknown = streamer("run", "demo", "--model", "lite-turbo")
    assert unknown.returncode == 2
    assert "engine.model" in unknown.stderr and "no shipped model named 'lite-turbo'" in unknown.stderr


def test_validate_config_good_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("cameras:\n  - name: cam1\n    source: {type: demo}\n")
    result = streamer("validate-config", str(good))
    assert result.returncode == 0 and "cam1" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  - name: cam1\n    source: {type: rtsp, url: rtsp://x/y, transport: sctp}\n")
    result = streamer("validate-config", str(bad))
    assert result.returncode == 2
    assert "cameras.0.source.transport" in result.stderr


def test_shipped_configs_are_valid() -> None:
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        result = streamer("validate-config", str(path))
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_run_without_source_is_a_clear_error() -> None:
    result = streamer("run")
    assert result.returncode == 2 and "nothing to run" in result.stderr


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = streamer("run", "demo", "--rtsp-port", str(port), "--http-port", "0")
    assert result.returncode == 2, result.stderr
    assert f"server.rtsp.port={port}: cannot listen" in result.stderr
    assert "Traceback" not in result.stderr


def test_restore_file_every_frame_lossless(tmp_path: Path) -> None:
    clean = clean_frames(160, 96, 12)
    source = write_h264(tmp_path / "noisy.mp4", add_noise(clean, 20), crf=10)
    output = tmp_path / "restored.mkv"
    result = streamer("restore", str(source), str(output), "--lossless", "--engine", "cpu")
    assert result.returncode == 0, result.stderr
    restored = read_video(output)
    noisy = read_video(source)
    assert len(restored) == 12 and restored[0].shape == (96, 160, 3)
    gain = sum(psnr(r, c) - psnr(n, c) for r, n, c in zip(restored, noisy, clean, strict=True)) / 12
    assert gain > 2.0, f"restoration gained only {gain:.2f} dB"


def test_restore_with_exposure_brightens_a_dark_file(tmp_path: Path) -> None:
    dark = [(frame.astype(np.float32) * 0.15).astype(np.uint8) for frame in clean_frames(160, 96, 6)]
    source = write_h264(tmp_path / "dark.mp4", dark, crf=10)
    brightened, plain = tmp_path / "bright.mkv", tmp_path / "plain.mkv"
    for output, extra in ((brightened, ["--exposure"]), (plain, [])):
        result = streamer("restore", str(source), str(output), "--lossless", "--engine", "passthrough", *extra)
        assert result.returncode == 0, result.stderr
    assert np.mean(read_video(plain)) < 40 and np.mean(read_video(brightened)) > 2 * np.mean(read_video(plain))


def test_restore_with_the_upscaler_doubles_a_file_and_beats_bicubic(tmp_path: Path) -> None:
    clean = clean_frames(320, 192, 8)
    small = [av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(160, 96, interpolation="AREA").to_ndarray()
             for frame in clean]
    source = write_h264(tmp_path / "substream.mp4", small, crf=10)
    output = tmp_path / "upscaled.mkv"
    result = streamer("restore", str(source), str(output), "--lossless", "--engine", "cpu", "--model", "lite-sr2")
    assert result.returncode == 0, result.stderr
    upscaled, decoded = read_video(output), read_video(source)
    assert len(upscaled) == 8 and upscaled[0].shape == (192, 320, 3)
    bicubic = [av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(320, 192, interpolation="BICUBIC")
               .to_ndarray() for frame in decoded]
    gain = sum(psnr(u, c) - psnr(b, c) for u, b, c in zip(upscaled, bicubic, clean, strict=True)) / 8
    assert gain > 0.5, f"the upscaler gained only {gain:.2f} dB over bicubic"


def test_restore_refuses_lossless_mp4(tmp_path: Path) -> None:
    source = write_h264(tmp_path / "in.mp4", clean_frames(64, 64, 3))
    result = streamer("restore", str(source), str(tmp_path / "out.mp4"), "--lossless", "--engine", "passthrough")
    assert result.returncode == 2 and ".mkv" in result.stderr


@pytest.mark.slow
def test_demo_runs_with_no_camera_and_carries_a_timecode() -> None:
    process = StreamerProcess("demo").start()
    viewer = start_viewer("ffmpeg", process.url(), 640, 360, "tcp")
    try:
        assert viewer.first_frame.wait(60), "no frame from the demo"
        deadline = time.monotonic() + 20
        while len(viewer.frames) < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        codes = [read_timecode(frame) for frame in viewer.frames[-10:]]
        assert sum(code is not None for code in codes) >= 8, "the demo's timecode should survive the pipeline"
        latencies = [time.time() * 1000 - code[0] for code in codes if code is not None]
        assert all(0 <= latency < 5000 for latency in latencies)
    finally:
        viewer.stop()
        process.kill()


@pytest.mark.slow
def test_config_with_several_cameras_serves_each_path(tmp_path: Path) -> None:
    clip = write_h264(tmp_path / "clip.mp4", clean_frames(256, 144, 50))
    config = tmp_path / "two.yaml"
    config.write_text(
        "cameras:\n"
        "  - name: yard\n    source: {type: demo, width: 320, height: 180}\n    engine: {type: passthrough}\n"
        f"  - name: gate\n    source: {{type: file, path: '{clip}'}}\n    engine: {{type: cpu}}\n"
    )
    process = StreamerProcess("--config", str(config)).start()
    try:
        for name, size in (("yard", "320,180"), ("gate", "256,144")):
            result = subprocess.run(
                ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height",
                 "-of", "csv=p=0", process.url(name)],
                capture_output=True, text=True, timeout=30,
            )
            assert result.stdout.strip() == f"h264,{size}", result.stderr
    finally:
        process.kill()


def run_args(*argv: str) -> Any:
    from streamer.cli import build_parser

    return build_parser().parse_args(["run", *argv])


def test_environment_overrides_apply_to_a_source_on_the_command_line_and_options_win() -> None:
    from streamer.cli import config_from_args

    environ = {"STREAMER__CAMERAS__0__ENGINE__TYPE": "passthrough", "STREAMER__SERVER__HTTP__PORT": "9100",
               "STREAMER__SERVER__RTSP__PORT": "9554"}
    config = config_from_args(run_args("demo", "--http-port", "9200", "--host", "127.0.0.2"), environ)
    assert config.cameras[0].engine.type == "passthrough"  # from the environment
    assert config.server.rtsp.port == 9554  # from the environment
    assert config.server.http.port == 9200  # the command line wins over the environment
    assert config.server.rtsp.host == config.server.http.host == "127.0.0.2"
    assert not config.cameras[0].exposure.enabled
    assert config_from_args(run_args("demo", "--exposure"), {}).cameras[0].exposure.enabled


def test_host_option_binds_both_servers_there() -> None:
    process = StreamerProcess("demo", "--engine", "passthrough", "--host", "127.0.0.2").start()
    try:
        assert any(f"rtsp://127.0.0.2:{process.rtsp_port}/restored" in line for line in process.log)
        with urllib.request.urlopen(f"http://127.0.0.2:{process.http_port}/healthz", timeout=5) as response:
            assert response.status == 200
        for port in (process.rtsp_port, process.http_port):
            with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
                probe.connect(("127.0.0.1", port))
    finally:
        process.kill()


def test_papercuts_get_one_clear_line(tmp_path: Path) -> None:
    source = write_h264(tmp_path / "in.mp4", clean_frames(64, 64, 3))
    missing_folder = streamer("restore", str(source), str(tmp_path / "no" / "such" / "out.mp4"), "--engine", "passthrough")
    assert missing_folder.returncode == 2 and "output folder does not exist" in missing_folder.stderr
    even = streamer("run", "demo", "--window", "4")
    assert even.returncode == 2 and "--window: must be an odd number of frames" in even.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  - name: -x\n    source: {url: 'rtsp://cam/1'}\n")
    result = streamer("validate-config", str(bad))
    assert result.returncode == 2
    assert "cameras.0.name: must be 1 to 64 characters: letters, digits" in result.stderr
    assert "cameras.0.source: missing 'type': say which kind this is, 'rtsp' or 'demo' or 'file'" in result.stderr
    for jargon in ("discriminator", "String should match pattern", "^[A-Za-z"):
        assert jargon not in result.stderr
    for output in (missing_folder, even, result):
        assert "Traceback" not in output.stderr


def test_the_log_says_which_window_is_used() -> None:
    process = StreamerProcess("demo", "--engine", "cpu", "--window", "3", "--lookahead", "0").start()
    try:
        line = next(line for line in process.log if "camera restored: engine" in line)
        assert "window 3 frames (2 past, 0 ahead: causal)" in line, line
    finally:
        process.kill()
