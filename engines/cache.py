"""TensorRT engine cache: a built engine is reused only where everything that shaped it is the same.

The key (after vs-mlrt) is the ONNX file's hash + the shape profile + precision + TensorRT version + GPU
name and compute capability. Builds take a file lock (two processes never build the same engine) and share
TensorRT's timing cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from engines.base import EngineError

T = TypeVar("T")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class EngineCacheKey:
    onnx_sha256: str
    profile: str  # min|opt|max input shapes, e.g. "1x15x8x8|1x15x720x1280|1x15x2160x3840"
    precision: str
    tensorrt_version: str
    gpu: str

    def filename(self) -> str:
        text = "|".join([self.onnx_sha256, self.profile, self.precision, self.tensorrt_version, self.gpu])
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        return f"{self.onnx_sha256[:12]}-{self.precision}-trt{self.tensorrt_version}-{digest}.engine"


def cached_engine_path(cache_dir: Path, key: EngineCacheKey) -> Path:
    return cache_dir / key.filename()


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Exclusive across processes (``flock`` on ``PATH.lock``): two processes never build the same engine;
    the second waits for the first (a build takes minutes) and then finds the engine in the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_or_build(path: Path, load: Callable[[bytes], T | None], build: Callable[[], bytes]) -> tuple[T, bool]:
    """The engine cached at ``path``, else ``build()`` (under ``build_lock``, after looking in the cache
    again once the lock is held) saved atomically; ``(engine, built)``. A cached file that ``load`` refuses
    (None: damaged, or from another TensorRT) is rebuilt."""
    if path.exists():
        engine = load(path.read_bytes())
        if engine is not None:
            return engine, False
    with build_lock(path):
        if path.exists():  # built by another process while this one waited for the lock
            engine = load(path.read_bytes())
            if engine is not None:
                return engine, False
        plan = build()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(plan)
        tmp.replace(path)
    engine = load(plan)
    if engine is None:
        raise EngineError(f"the engine just built could not be loaded ({path.name})")
    return engine, True


def timing_cache_path(cache_dir: Path, tensorrt_version: str, gpu: str) -> Path:
    """TensorRT's tactic timings, shared by every build on this GPU and TensorRT version (builds after the
    first skip most of the timing: minutes to seconds for a new profile or model)."""
    safe = "".join(char if char.isalnum() or char in "-._" else "_" for char in gpu)
    return cache_dir / f"timing-trt{tensorrt_version}-{safe}.cache"
