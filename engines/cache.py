"""TensorRT engine cache: a built engine is reused only where everything that shaped it is the same.

The key (after vs-mlrt) is the ONNX file's hash + the shape profile + precision + TensorRT version + GPU
name and compute capability.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


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
