"""What a backend of the Segmenter is: the interface both backends (PyTorch, ONNX Runtime)
implement and the record they return.

A module of its own so the Segmenter and the backends all import it and none imports another:
the Segmenter picks a backend by name, a backend knows nothing of the Segmenter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..model import ExitPolicy


@dataclass
class BackendOutput:
    """One frame as a backend returns it: outputs cropped to the frame's own resolution."""

    labels: np.ndarray            # (H, W) integer class ids
    confidence: np.ndarray        # (H, W) uint8: winning class probability x 255
    exit_ids: np.ndarray          # (H/16, W/16) exit where each token stopped; final = E
    exit_taken: int               # exit the frame left at; E = final decoder
    stopped_fraction: list[float]
    macs: int                     # multiply-adds executed
    guard_stop: bool


class Backend(Protocol):
    """A network ready to run frames: both backends prepare the frame with the model's own
    normalisation and padding, run model.adaptive's loop over their stage computations, and
    post-process the logits to class ids and confidence."""

    name: str
    threads: int                  # inference threads it was configured with

    def prepare_threads(self, threads: int) -> None:
        """Build what running on ``threads`` threads needs, without switching to it."""

    def set_threads(self, threads: int) -> None:
        """Run the next frames on ``threads`` threads."""

    def preprocess(self, image: np.ndarray) -> Any:
        """(H, W, 3) RGB uint8 -> the network input (1, 3, H', W'), H' and W' padded to the
        patch size, as the backend's own array type."""

    def infer(self, image: np.ndarray, policy: ExitPolicy, thresholds: np.ndarray | None,
              guard: Callable[[int], bool] | None) -> BackendOutput:
        """One RGB uint8 frame under ``policy`` (per-class ``thresholds`` for 'global' and
        'cbt'; ``guard(exit_index)`` may end the frame at an exit)."""
