"""The TensorRT engine cache's build lock and atomic save, with real processes racing to build (no TensorRT
needed: the build is a function that takes a while and records that it ran)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from engines.base import EngineError
from engines.cache import load_or_build, timing_cache_path


def build_slowly(path: str, log: str) -> tuple[bytes, bool]:
    def build() -> bytes:
        with open(log, "a") as handle:
            handle.write("built\n")
        time.sleep(0.5)  # long enough that the other process asks while this one builds
        return b"plan"

    return load_or_build(Path(path), lambda data: data if data == b"plan" else None, build)


def test_two_processes_build_an_engine_once_and_both_load_it(tmp_path: Path) -> None:
    path, log = tmp_path / "engines" / "model.engine", tmp_path / "builds.log"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(build_slowly, [(str(path), str(log))] * 2)
    assert sorted(results) == [(b"plan", False), (b"plan", True)]
    assert log.read_text() == "built\n"
    assert path.read_bytes() == b"plan" and not list(path.parent.glob("*.tmp"))


def test_a_cached_file_that_does_not_load_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "model.engine"
    path.write_bytes(b"from another TensorRT")
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        return b"plan"

    engine, built = load_or_build(path, lambda data: data if data == b"plan" else None, build)
    assert (engine, built, len(builds)) == (b"plan", True, 1)
    assert load_or_build(path, lambda data: data, build) == (b"plan", False) and len(builds) == 1
    with pytest.raises(EngineError, match="could not be loaded"):
        load_or_build(tmp_path / "other.engine", lambda data: None, build)


def test_timing_cache_is_per_tensorrt_version_and_gpu(tmp_path: Path) -> None:
    one = timing_cache_path(tmp_path, "10.7.0", "NVIDIA H200-sm90")
    assert one.parent == tmp_path and one.name == "timing-trt10.7.0-NVIDIA_H200-sm90.cache"
    assert timing_cache_path(tmp_path, "10.7.0", "Orin-sm87") != one
    assert timing_cache_path(tmp_path, "10.8.0", "NVIDIA H200-sm90") != one
