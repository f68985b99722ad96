"""The engine that restores nothing: the reference frame comes out as it went in."""

from __future__ import annotations

import numpy as np

from engines.base import Engine, ModelInfo


class PassthroughEngine(Engine):
    backend = "passthrough"
    passes_through = True

    def __init__(self) -> None:
        super().__init__()
        self.info = ModelInfo(name="passthrough", window=1, reference_index=0)

    def _activate(self) -> None:
        return None

    def _infer(self, window: list[np.ndarray]) -> np.ndarray:
        return window[self.info.reference_index]
