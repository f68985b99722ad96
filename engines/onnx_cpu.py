"""ONNX Runtime on the CPU."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import INPUT_NAME, NEXT_STATE_NAME, OUTPUT_NAME, STATE_NAME, Engine, EngineError, ModelInfo
from engines.processing import PerStream, WindowPacker, recurrent_totals, unpack_output

log = logging.getLogger(__name__)


def read_model_info(path: Path) -> ModelInfo:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise EngineError(f"model file not found: {path}") from None
    except Exception as error:  # onnx raises several kinds for a damaged file
        raise EngineError(f"cannot read model {path}: {error}") from None
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    return ModelInfo.from_metadata(metadata, default_name=path.stem)


class OnnxCpuEngine(Engine):
    backend = "cpu"

    def __init__(self, model_path: Path, threads: int = 0, optimize: bool = True) -> None:
        """``optimize``: run an int8 graph in the faster form ``engines.int8_graph`` makes of it (same output)."""
        super().__init__()
        self.model_path = model_path
        self.threads = threads or (os.cpu_count() or 1)
        self.info = read_model_info(model_path)
        self.optimize = optimize
        self.uint8_input = False  # the graph reads the frames' bytes (set at activation)
        self._session: Any = None
        # by stream: each keeps its window's converted frames (and a recurrent model's state)
        self._packers = PerStream(
            lambda: WindowPacker(self.info.pad_multiple, np.uint8 if self.uint8_input else np.float32))
        # ONNX Runtime runs concurrent calls on one session (sharing its intra-op threads): a scheduler may
        # run up to one call per thread, which keeps the cores busy where one call alone leaves gaps
        self.concurrent_calls = self.threads

    def _activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle pool threads must sleep, not spin: decode, encode and the event loop share these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        graph = self._graph()
        try:
            self._session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:
            if isinstance(graph, str):
                raise EngineError(f"ONNX Runtime cannot load {self.model_path}: {error}") from None
            # e.g. an older ONNX Runtime without a uint8 kernel the faster form uses: the file's graph runs
            log.warning("ONNX Runtime refused the faster int8 graph of %s (%s); running the file's graph",
                        self.model_path, str(error).splitlines()[0] if str(error) else type(error).__name__)
            self.uint8_input = False
            try:
                self._session = ort.InferenceSession(str(self.model_path), sess_options=options,
                                                     providers=["CPUExecutionProvider"])
            except Exception as error:
                raise EngineError(f"ONNX Runtime cannot load {self.model_path}: {error}") from None
        names = [item.name for item in self._session.get_inputs()]
        expected = [INPUT_NAME, STATE_NAME] if self.info.recurrent else [INPUT_NAME]
        if names != expected:
            raise EngineError(f"model inputs are {names}, expected {expected}")

    def _graph(self) -> str | bytes:
        """The model for ONNX Runtime: its file's path, or an int8 graph rewritten (engines.int8_graph). Sets
        ``uint8_input``, which the per-stream packers (made on a stream's first call, cleared at deactivation) read."""
        self.uint8_input = False
        if not self.optimize or self.info.precision != "int8":
            return str(self.model_path)
        import onnx

        from engines.int8_graph import optimize_for_cpu

        try:
            model, self.uint8_input = optimize_for_cpu(onnx.load(str(self.model_path)))
        except FileNotFoundError:
            raise EngineError(f"model file not found: {self.model_path}") from None
        except Exception as error:  # a damaged file: ONNX Runtime says more about it below
            log.warning("int8 graph of %s left as it is (%s: %s)", self.model_path, type(error).__name__, error)
            return str(self.model_path)
        return bytes(model.SerializeToString())

    def _infer(self, window: list[np.ndarray]) -> np.ndarray:
        return self._infer_batch([window], [""])[0]

    def _infer_batch(self, windows: list[list[np.ndarray]], streams: list[str]) -> list[np.ndarray]:
        """Each stream's windows are packed by its own ``WindowPacker`` (a sliding window converts one new
        frame per call, however many cameras share the engine); a batch goes to ONNX Runtime in one run."""
        height, width = windows[0][0].shape[:2]
        if any(window[0].shape[:2] != (height, width) for window in windows):
            raise EngineError("every window of a batch must have the same frame size")
        packers = [self._packers.get(stream) for stream in streams]
        tensor = packers[0].pack(windows[0])  # the packer's own buffer: copied below if batched
        if len(windows) > 1:
            tensor = np.concatenate([tensor, *(np.empty_like(tensor) for _ in windows[1:])])
            for index in range(1, len(windows)):
                tensor[index] = packers[index].pack(windows[index])[0]
        if self.info.recurrent:
            reference = self.info.reference_index
            states = [
                packer.recurrent.feed(window, reference, tensor[index : index + 1])
                for index, (packer, window) in enumerate(zip(packers, windows, strict=True))
            ]
            feeds = {INPUT_NAME: tensor, STATE_NAME: states[0] if len(states) == 1 else np.concatenate(states)}
            output, next_states = self._session.run([OUTPUT_NAME, NEXT_STATE_NAME], feeds)
            for index, (packer, window) in enumerate(zip(packers, windows, strict=True)):
                packer.recurrent.keep(window, reference, next_states[index : index + 1])
        else:
            (output,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: tensor})
        scale = self.info.scale
        return [unpack_output(output[index : index + 1], height * scale, width * scale) for index in range(len(windows))]

    def recurrent_counts(self, stream: str | None = None) -> tuple[int, int] | None:
        if not self.info.recurrent:
            return None
        return recurrent_totals([packer.recurrent for packer in self._packers.select(stream)])

    def forget(self, stream: str) -> None:
        self._packers.forget(stream)

    def _deactivate(self) -> None:
        self._session = None
        self._packers.clear()
