"""The ladder a camera gets from its configuration (``streamer.pipeline.make_levels``), with real engines."""

from __future__ import annotations

from typing import Any

import pytest

from engines import EngineError, activate_engine
from streamer.config import build_config
from streamer.ladder import ReducedResolutionLevel
from streamer.pipeline import make_levels


def camera(**ladder: Any) -> Any:
    entry = {"name": "gate", "source": {"type": "demo"}, "engine": {"type": "cpu", "ladder": ladder}}
    return build_config({"cameras": [entry]}, environ={}).cameras[0]


def test_an_engine_on_a_gpu_gets_a_cpu_level_above_the_classical_filter() -> None:
    config = camera()
    full = activate_engine("cpu", "lite")
    full.device = "cuda"  # stands for the TensorRT / PyTorch CUDA engine of a GPU machine
    levels, extra = make_levels(config, full)
    try:
        assert [level.name for level in levels] == ["full", "half", "cpu", "temporal"]
        cpu = levels[2]
        assert isinstance(cpu, ReducedResolutionLevel) and cpu.factor == 2
        assert cpu.engine.device == "cpu" and cpu.engine.backend == "cpu"
        assert cpu.engine.info.precision == "int8" and extra == [cpu.engine]
    finally:
        for engine in (*extra, full):
            engine.deactivate()


def test_the_cpu_level_is_left_out_on_the_cpu_and_when_switched_off() -> None:
    full = activate_engine("cpu", "lite")
    try:
        levels, extra = make_levels(camera(), full)
        assert [level.name for level in levels] == ["full", "half", "temporal"] and extra == []
        full.device = "cuda"
        levels, extra = make_levels(camera(cpu=False), full)
        assert "cpu" not in [level.name for level in levels] and extra == []
        levels, extra = make_levels(camera(cpu_factor=1, half=False), full)
        assert [level.name for level in levels] == ["full", "cpu", "temporal"]
        for engine in extra:
            engine.deactivate()
    finally:
        full.deactivate()


@pytest.mark.parametrize(("model", "fast_model"), [
    ("lite-recurrent", "lite"), ("lite-recurrent-wide", "lite"), ("lite-detail-recurrent", "lite"),
    ("lite-fine", "lite-fast"),  # lite (0.85x lite-fine's time) would hardly relieve an engine that falls behind
    ("lite-fine-wide", "lite"),
])
def test_a_model_steps_down_to_its_cheaper_window_model_before_the_half_resolution_level(
    model: str, fast_model: str
) -> None:
    entry = {"name": "yard", "source": {"type": "demo"}, "engine": {"type": "cpu", "model": model}}
    config = build_config({"cameras": [entry]}, environ={}).cameras[0]
    full = activate_engine("cpu", model)
    levels, extra = make_levels(config, full)
    try:
        assert [level.name for level in levels] == ["full", "fast", "half", "temporal"]
        assert [engine.info.name for engine in extra] == [fast_model] and not extra[0].info.recurrent
    finally:
        for engine in (*extra, full):
            engine.deactivate()


def test_the_upscaler_steps_down_to_lite_and_a_larger_fast_model_is_refused() -> None:
    entry = {"name": "sub", "source": {"type": "demo"}, "engine": {"type": "cpu", "model": "lite-sr2"}}
    config = build_config({"cameras": [entry]}, environ={}).cameras[0]
    full = activate_engine("cpu", "lite-sr2")
    levels, extra = make_levels(config, full)
    try:
        assert [level.name for level in levels] == ["full", "fast", "half", "temporal"]
        assert [engine.info.name for engine in extra] == ["lite"] and extra[0].info.scale == 1
    finally:
        for engine in (*extra, full):
            engine.deactivate()
    full = activate_engine("cpu", "lite")
    try:
        with pytest.raises(EngineError, match="fast_model=lite-sr2 upscales x2"):
            make_levels(camera(fast_model="lite-sr2"), full)
    finally:
        full.deactivate()
