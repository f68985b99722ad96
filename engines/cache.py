"""TensorRT engine cache: a built engine is reused only where everything that shaped it is the same.

The key (after vs-mlrt) is the ONNX file's hash + input shape + precision + TensorRT version + GPU name
and compute capability.
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
    input_shape: tuple[int, ...]
    precision: str
    tensorrt_version: str
    gpu: str

    def filename(self) -> str:
        text = "|".join(
            [self.onnx_sha256, "x".join(map(str, self.input_shape)), self.precision, self.tensorrt_version, self.gpu]
        )
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        shape = "x".join(map(str, self.input_shape[-2:]))
        return f"{self.onnx_sha256[:12]}-{shape}-{self.precision}-trt{self.tensorrt_version}-{digest}.engine"


def cached_engine_path(cache_dir: Path, key: EngineCacheKey) -> Path:
    return cache_dir / key.filename()
