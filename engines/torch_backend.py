"""PyTorch backend: the float ONNX model interpreted by PyTorch, on CUDA (fp16) or on the CPU (float32).

Why: TensorRT is the production GPU engine, but where it is not installed (the GPU machines this project can
borrow have PyTorch and CUDA, no TensorRT) this backend is how the GPU path gets run and measured. It builds
its network from the same ``NAME.onnx`` file as the CPU engine (``engines.onnx_torch``), with the same pre/post
semantics as ``engines.processing``: frames scaled to [0, 1], edge-padded to the model's ``pad_multiple``,
output cropped back and rounded half up to uint8.

On CUDA: fp16 weights and activations, channels-last, one dedicated stream, pinned host buffers, uint8 frames
uploaded as they are and converted on the GPU (and the result quantised there: uint8 comes back), and one
CUDA graph per input shape (batch, height, width), captured the first time a shape is seen or ahead of time
with ``warm`` / ``activate(shapes=...)``. Frames shared by consecutive windows (a sliding window) are uploaded
once: the device copy is kept while the frame is in the last call's windows (by identity, like
``processing.WindowPacker``). ``infer_batch`` runs B windows of one size in a single call (for a scheduler
that batches across cameras). On the CPU the same code runs in float32 without streams or graphs, which is
how the tests exercise it where there is no GPU.

A recurrent model (``streamer.recurrent=1``) gets each stream's state back as the CPU engine feeds it
(``processing.RecurrentState``: only to the window right after, otherwise the reference frame), but the state
never leaves the device: each stream's ``next_state`` is kept there, copied into the plan's state input, and
the choice between it and the reference frame is made inside the captured graph.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import Engine, EngineError
from engines.onnx_cpu import read_model_info
from engines.processing import PerStream, RecurrentState, padded_size, recurrent_totals

log = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_SIDE = 8192


def torch_cuda_available() -> bool:
    """True when PyTorch imports and sees a CUDA device."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


@dataclass
class _Plan:
    """Buffers (and the CUDA graph) for one input shape; reused by every call of that shape."""

    device_in: Any  # uint8 [B, N, H, W, 3] on the device: the graph's input
    host_stage: Any  # uint8 [B*N, H, W, 3], pinned on CUDA: new frames pass through here
    host_out: Any  # uint8 [B, Ho, Wo, 3], pinned on CUDA
    stage_view: np.ndarray
    out_view: np.ndarray
    device_out: Any = None  # the graph's output (None until captured)
    graph: Any = None
    device_state: Any = None  # recurrent models: [B, 3, Hp, Wp] each window's previous state, in the model's dtype
    device_carry: Any = None  # [B, 1, 1, 1] bool: the window takes device_state (else its reference frame)
    device_next_state: Any = None  # the graph's second output


class TorchEngine(Engine):
    backend = "cuda"

    def __init__(
        self,
        model_path: Path,
        device: str = "cuda",
        fp16: bool = True,
        cuda_graphs: bool = True,
        max_shapes: int = 8,
    ) -> None:
        super().__init__()
        self.model_path = model_path
        self.device_name = device
        self.cuda = device.startswith("cuda")
        self.backend = "cuda" if self.cuda else "torch-cpu"
        self.device = device
        self.max_batch = MAX_BATCH
        self.preferred_batch = 8 if self.cuda else 1  # a GPU restores 8 windows of 360p in about the time of one
        self.fp16 = fp16 and self.cuda  # float32 on the CPU
        self.cuda_graphs = cuda_graphs and self.cuda
        self.max_shapes = max(1, max_shapes)
        self.info = read_model_info(model_path)
        self._states = PerStream(RecurrentState)  # by stream, recurrent models only
        self._torch: Any = None
        self._device: Any = None
        self._dtype: Any = None
        self._module: Any = None
        self._stream: Any = None
        self._plans: OrderedDict[tuple[int, int, int], _Plan] = OrderedDict()
        self._frames: dict[int, tuple[np.ndarray, Any]] = {}  # id(frame) -> (frame, its device copy)
        self.uploads = 0  # frames sent to the device (a sliding window sends one per call)

    # -- lifecycle -------------------------------------------------------------------------------------
    def activate(self, shapes: Sequence[tuple[int, int, int]] = ()) -> None:
        """Load the model; ``shapes`` = (batch, height, width) to prepare (capture) before the first frame."""
        super().activate()
        for batch, height, width in shapes:
            self.warm(batch, height, width)

    def _activate(self) -> None:
        try:
            import onnx
            import torch

            from engines.onnx_torch import build_module
        except ImportError as error:
            raise EngineError(f"the PyTorch backend needs torch and onnx: {error}") from None
        if self.cuda and not torch.cuda.is_available():
            raise EngineError("PyTorch sees no CUDA device (CPU-only build, no driver, or no GPU)")
        try:
            model = onnx.load(str(self.model_path))
        except Exception as error:
            raise EngineError(f"cannot read model {self.model_path}: {error}") from None
        module: Any = build_module(model)
        try:
            self._device = torch.device(self.device_name)
            self._dtype = torch.float16 if self.fp16 else torch.float32
            module = module.eval().to(device=self._device, dtype=self._dtype)
            if self.cuda:
                torch.backends.cudnn.benchmark = True  # shapes are fixed per plan: let cuDNN pick its kernels
                module = module.to(memory_format=torch.channels_last)
                self._stream = torch.cuda.Stream(self._device)
        except (RuntimeError, ValueError) as error:
            raise EngineError(f"PyTorch cannot place the model on {self.device_name}: {error}") from None
        self._torch = torch
        self._module = module

    def _deactivate(self) -> None:
        self._plans.clear()
        self._frames = {}
        self._states.clear()
        self._module = None
        self._stream = None
        if self.cuda and self._torch is not None:
            self._torch.cuda.empty_cache()

    def describe(self) -> str:
        precision = "fp16" if self.fp16 else "fp32"
        graphs = ", CUDA graphs" if self.cuda_graphs else ""
        return f"{super().describe()} [{self.device_name} {precision}{graphs}]"

    # -- inference -------------------------------------------------------------------------------------
    def _infer(self, window: list[np.ndarray]) -> np.ndarray:
        return self._run([window], [""])[0]

    def _infer_batch(self, windows: list[list[np.ndarray]], streams: list[str]) -> list[np.ndarray]:
        """B windows of the same frame size in one call (the frames go up once, the model runs once)."""
        return self._run(windows, streams)

    def warm(self, batch: int, height: int, width: int) -> None:
        """Prepare buffers (and capture the CUDA graph) for this shape now rather than at its first call."""
        with self.calling():
            self._check_shape(batch, height, width)
            with self._context():
                self._plan(batch, height, width)

    def time_compute(self, batch: int, height: int, width: int, repeats: int = 20) -> float:
        """Milliseconds per call of the device part alone (conversion, model, quantisation; no transfers),
        timed with CUDA events on the engine's stream (wall clock on the CPU)."""
        self.warm(batch, height, width)
        torch = self._torch
        with self._context():
            plan = self._plan(batch, height, width)
            if not self.cuda:
                started = time.perf_counter()
                for _ in range(repeats):
                    self._forward(plan)
                return (time.perf_counter() - started) * 1000 / repeats
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self._stream)
            for _ in range(repeats):
                if plan.graph is not None:
                    plan.graph.replay()
                else:
                    self._forward(plan)
            end.record(self._stream)
            end.synchronize()
            return float(start.elapsed_time(end)) / repeats

    def _check_shape(self, batch: int, height: int, width: int) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise EngineError(f"batch of {batch} windows: must be 1..{MAX_BATCH}")
        if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
            raise EngineError(f"frame size {width}x{height}: each side must be 1..{MAX_SIDE}")

    def _run(self, windows: list[list[np.ndarray]], streams: list[str]) -> list[np.ndarray]:
        if not windows:
            raise EngineError("infer_batch needs at least one window")
        height, width = self._validate(windows)
        with self._context():
            plan = self._plan(len(windows), height, width)
            self._upload(plan, windows)
            states = self._feed_states(plan, windows, streams)
            if plan.graph is not None:
                plan.graph.replay()
                output, next_state = plan.device_out, plan.device_next_state
            else:
                output, next_state = self._forward(plan)
            plan.host_out.copy_(output, non_blocking=True)
            for slot, (state, window) in enumerate(zip(states, windows, strict=False)):  # recurrent models only
                # a copy on the engine's stream: the next call's graph overwrites its output buffer
                state.keep(window, self.info.reference_index, next_state[slot : slot + 1].clone(), copy=False)
            if self._stream is not None:
                self._stream.synchronize()
            return [plan.out_view[index].copy() for index in range(len(windows))]

    def _feed_states(self, plan: _Plan, windows: list[list[np.ndarray]], streams: list[str]) -> list[RecurrentState]:
        """A recurrent model's state input for each window of the batch: its stream's kept state, copied into
        the plan (device to device), where the window follows it; the carry flags say which windows use it."""
        if not self.info.recurrent:
            return []
        states = [self._states.get(stream) for stream in streams]
        height, width = windows[0][0].shape[:2]
        size = padded_size(height, width, self.info.pad_multiple)
        carry = []
        for slot, (state, window) in enumerate(zip(states, windows, strict=True)):
            kept = state.carried(window, self.info.reference_index, size)
            if kept is not None:
                plan.device_state[slot : slot + 1].copy_(kept)
            carry.append(kept is not None)
        plan.device_carry.copy_(self._torch.tensor(carry).view(-1, 1, 1, 1))
        return states

    def forget(self, stream: str) -> None:
        self._states.forget(stream)

    def recurrent_counts(self, stream: str | None = None) -> tuple[int, int] | None:
        return recurrent_totals(self._states.select(stream)) if self.info.recurrent else None

    def _validate(self, windows: list[list[np.ndarray]]) -> tuple[int, int]:
        first = windows[0][0] if windows[0] else None
        if first is None or first.ndim != 3:
            raise EngineError("frames must be RGB uint8 arrays (H x W x 3)")
        height, width = first.shape[:2]
        self._check_shape(len(windows), height, width)
        for window in windows:
            if len(window) != self.info.window:
                raise EngineError(f"engine wants {self.info.window} frames, got {len(window)}")
            for frame in window:
                if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                    raise EngineError(
                        f"every frame of a batch must be {height}x{width}x3 uint8, got {frame.shape} {frame.dtype}"
                    )
        return height, width

    def _context(self) -> Any:
        """Runs the block without autograd, on the engine's own stream (CUDA)."""
        stack = contextlib.ExitStack()
        stack.enter_context(self._torch.no_grad())
        if self._stream is not None:
            stack.enter_context(self._torch.cuda.stream(self._stream))
        return stack

    def _upload(self, plan: _Plan, windows: list[list[np.ndarray]]) -> None:
        """Copy each window's frames into the plan's input; a frame already on the device is not sent again."""
        torch = self._torch
        kept: dict[int, tuple[np.ndarray, Any]] = {}
        staged = 0
        for slot, window in enumerate(windows):
            for index, frame in enumerate(window):
                key = id(frame)
                entry = kept.get(key) or self._frames.get(key)
                if entry is None:
                    np.copyto(plan.stage_view[staged], frame)
                    on_device = torch.empty(frame.shape, dtype=torch.uint8, device=self._device)
                    on_device.copy_(plan.host_stage[staged], non_blocking=True)
                    staged += 1
                    self.uploads += 1
                    entry = (frame, on_device)  # holding the frame keeps its id from being reused
                kept[key] = entry
                plan.device_in[slot, index].copy_(entry[1], non_blocking=True)
        self._frames = kept

    def _forward(self, plan: _Plan) -> tuple[Any, Any]:
        """The plan's uint8 [B, N, H, W, 3] -> (uint8 [B, H*s, W*s, 3], a recurrent model's next state or None),
        all on the device (what the CUDA graph captures)."""
        torch = self._torch
        frames = plan.device_in
        batch, count, height, width, _ = frames.shape
        multiple, scale = self.info.pad_multiple, self.info.scale
        padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
        # [B, N, H, W, 3] -> [B, H, W, N*3] is the one real transpose; seen as [B, N*3, H, W] it is channels-last.
        interleaved = frames.permute(0, 2, 3, 1, 4).reshape(batch, height, width, count * 3)
        tensor = interleaved.to(self._dtype).mul_(1.0 / 255.0).permute(0, 3, 1, 2)
        if (padded_h, padded_w) != (height, width):
            tensor = torch.nn.functional.pad(tensor, (0, padded_w - width, 0, padded_h - height), mode="replicate")
        memory_format = torch.channels_last if self.cuda else torch.contiguous_format
        tensor = tensor.contiguous(memory_format=memory_format)
        next_state = None
        if self.info.recurrent:
            start = 3 * self.info.reference_index
            state = torch.where(plan.device_carry, plan.device_state, tensor[:, start : start + 3])
            restored, next_state = self._module(tensor, state)
        else:
            restored = self._module(tensor)
        restored = restored[:, :, : height * scale, : width * scale]
        # out of place first: a model that feeds its restored frame back (next_state is restored) keeps it
        quantised = (restored.float() * 255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)
        return quantised.permute(0, 2, 3, 1).contiguous(), next_state

    def _plan(self, batch: int, height: int, width: int) -> _Plan:
        key = (batch, height, width)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        while len(self._plans) >= self.max_shapes:
            self._plans.popitem(last=False)  # least recently used shape: its graph and buffers go
        try:
            plan = self._new_plan(batch, height, width)
        except RuntimeError as error:  # torch.cuda.OutOfMemoryError is one
            self._plans.clear()
            if self.cuda:
                self._torch.cuda.empty_cache()
            raise EngineError(f"cannot prepare {batch} x {width}x{height} on {self.device_name}: {error}") from None
        self._plans[key] = plan
        return plan

    def _new_plan(self, batch: int, height: int, width: int) -> _Plan:
        torch = self._torch
        scale, count = self.info.scale, self.info.window
        device_in = torch.zeros((batch, count, height, width, 3), dtype=torch.uint8, device=self._device)
        host_stage = torch.empty((batch * count, height, width, 3), dtype=torch.uint8, pin_memory=self.cuda)
        host_out = torch.empty((batch, height * scale, width * scale, 3), dtype=torch.uint8, pin_memory=self.cuda)
        plan = _Plan(device_in, host_stage, host_out, host_stage.numpy(), host_out.numpy())
        if self.info.recurrent:
            padded_h, padded_w = padded_size(height, width, self.info.pad_multiple)
            plan.device_state = torch.zeros((batch, 3, padded_h, padded_w), dtype=self._dtype, device=self._device)
            plan.device_carry = torch.zeros((batch, 1, 1, 1), dtype=torch.bool, device=self._device)
        if self.cuda_graphs:
            for _ in range(3):  # warm-up off the graph: cuDNN autotuning and allocations happen here
                self._forward(plan)
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                    plan.device_out, plan.device_next_state = self._forward(plan)
            except RuntimeError as error:  # a graph is an optimisation: run eagerly rather than not at all
                if isinstance(error, torch.cuda.OutOfMemoryError):
                    raise
                log.warning("CUDA graph capture failed, %s runs without graphs from now on: %s", self.model_path.name, error)
                self.cuda_graphs = False
                self._stream.synchronize()
                plan.device_out = None
                return plan
            plan.graph = graph
        return plan

