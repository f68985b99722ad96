"""The GPU check's environment section: the GPU, driver and CUDA, and which backends import here."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from tools.gpu_report import Section


def _probe(rows: list[dict[str, Any]], name: str, fn: Callable[[], str]) -> None:
    try:
        rows.append({"module": name, "available": True, "detail": fn()})
    except Exception as error:
        rows.append({"module": name, "available": False, "detail": f"{type(error).__name__}: {error}"[:200]})


def _torch_detail() -> str:
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return f"{torch.__version__} (CUDA build {torch.version.cuda}, cuDNN {cudnn}, cuda available {torch.cuda.is_available()})"


def _cuda_python_detail() -> str:
    from engines.tensorrt_backend import _cudart

    cudart = _cudart()
    error, count = cudart.cudaGetDeviceCount()
    _, driver = cudart.cudaDriverGetVersion()
    _, runtime = cudart.cudaRuntimeGetVersion()
    return f"devices {count} ({error}), driver API {driver}, runtime {runtime}"


def _cupy_detail() -> str:
    import cupy

    return f"{cupy.__version__}, devices {cupy.cuda.runtime.getDeviceCount()}"


def _onnxruntime_detail() -> str:
    import onnxruntime

    return f"{onnxruntime.__version__}, providers {onnxruntime.get_available_providers()}"


def _version(module: str) -> Callable[[], str]:
    return lambda: str(__import__(module).__version__)


def environment() -> Section:
    imports: list[dict[str, Any]] = []
    _probe(imports, "tensorrt", _version("tensorrt"))
    _probe(imports, "torch", _torch_detail)
    _probe(imports, "cuda-python", _cuda_python_detail)
    _probe(imports, "cupy", _cupy_detail)
    _probe(imports, "onnxruntime", _onnxruntime_detail)
    for module in ("onnx", "av", "pydantic", "aiohttp", "uvloop"):
        _probe(imports, module, _version(module))
    section: Section = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "imports": imports,
    }
    try:
        query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        section["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as error:
        section["nvidia_smi"] = f"not available: {error}"
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            section["gpu"] = {
                "name": props.name,
                "compute_capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count,
                "tf32_convolutions": torch.backends.cudnn.allow_tf32,
            }
    except Exception as error:
        section["gpu"] = {"error": str(error)}
    return section
