from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.media import add_noise, clean_frames, write_lossless
from tests.peers.processes import SYSTEM_PYTHON, GstCamera

WIDTH, HEIGHT, FPS = 320, 176, 25


def _have_gst_rtsp() -> bool:
    import subprocess

    if not Path(SYSTEM_PYTHON).exists() or not shutil.which("gst-launch-1.0"):
        return False
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import tensorrt  # noqa: F401

        has_gpu = True
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU with TensorRT")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def real_peers() -> None:
    """The real RTSP peers must be installed (.ci/run installs them); fail loudly, never skip."""
    missing = [tool for tool in ("ffmpeg", "ffprobe", "gst-launch-1.0") if not shutil.which(tool)]
    if missing or not _have_gst_rtsp():
        pytest.fail(f"real peers missing (run .ci/run or install the README's packages): {missing or 'gst-rtsp-server'}")


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | list]:
    """A clean clip and its noisy version (σ=20), 4 s at 320x176, lossless."""
    folder = tmp_path_factory.mktemp("clips")
    clean = clean_frames(WIDTH, HEIGHT, 100)
    noisy = add_noise(clean, 20.0)
    return {
        "clean_frames": clean,
        "noisy_frames": noisy,
        "clean": write_lossless(folder / "clean.mkv", clean, FPS),
        "noisy": write_lossless(folder / "noisy.mkv", noisy, FPS),
    }


@pytest.fixture
def camera(real_peers: None, clips: dict) -> Iterator[GstCamera]:
    cam = GstCamera(clips["clean"], WIDTH, HEIGHT, FPS).start()
    yield cam
    cam.kill()


@pytest.fixture
def noisy_camera(real_peers: None, clips: dict) -> Iterator[GstCamera]:
    cam = GstCamera(clips["noisy"], WIDTH, HEIGHT, FPS).start()
    yield cam
    cam.kill()
