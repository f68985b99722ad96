from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NoReturn

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


def _have_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a stub package that raises on import
        return False
    return True


def _have_torch_cuda() -> bool:
    """PyTorch sees a CUDA device (torch is imported only where an NVIDIA driver is visible at all)."""
    if not (shutil.which("nvidia-smi") or Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia").exists()):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], object]]:
    """Every asyncio test runs on uvloop, as ``streamer run`` does: its transports differ from the standard loop's
    (a write after a reset raises there, they are not ``asyncio.Transport`` subclasses), and a test on the other
    loop would not see what a user's process meets."""
    import uvloop

    class LoopWithoutSpawn(uvloop.Loop):  # type: ignore[misc]
        """uvloop, refusing its own spawn: it can hang the whole loop (streamer.child_process)."""

        async def subprocess_exec(self, *args: object, **kwargs: object) -> NoReturn:
            raise RuntimeError(
                "the event loop's spawn (asyncio.create_subprocess_exec) can hang uvloop for good: start the "
                "process with streamer.child_process.ChildProcess, or with subprocess in a thread"
            )

        subprocess_shell = subprocess_exec

    return {"uvloop": LoopWithoutSpawn}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests run where TensorRT imports or PyTorch sees a CUDA device; those whose name mentions
    tensorrt need TensorRT itself."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    has_tensorrt = _have_tensorrt()
    has_cuda = has_tensorrt or _have_torch_cuda()
    for item in gpu_items:
        if "tensorrt" in item.name and not has_tensorrt:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU with TensorRT"))
        elif not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU (TensorRT or PyTorch CUDA)"))


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
