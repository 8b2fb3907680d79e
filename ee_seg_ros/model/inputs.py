"""The network's input: pixels normalised with the bundle's own statistics and zero-padded to
a multiple of the patch size.

Written once, without PyTorch, so the ONNX Runtime backend's numpy path and the PyTorch network
(``MultiExitSegmenter.prepare``, used by the torch backend, training and calibration) run the
same float32 operations in the same order and feed the network identical numbers.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from .config import ModelConfig

Array = TypeVar('Array')


def pixel_stats(cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 mean and reciprocal standard deviation, shape (3,)."""
    return np.asarray(cfg.mean, np.float32), 1.0 / np.asarray(cfg.std, np.float32)


def normalise(x: Array, mean: Array, inv_std: Array) -> Array:
    """(pixel - mean) / std, as a multiply by 1/std; numpy arrays and torch tensors alike."""
    return (x - mean) * inv_std  # type: ignore[operator]


def prepare_frame(image: np.ndarray, cfg: ModelConfig,
                  stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> (1, 3, H', W') float32 network input, H' x W' = padded_size.

    ``stats`` is ``pixel_stats(cfg)``, passed by callers that run many frames.
    """
    mean, inv_std = stats if stats is not None else pixel_stats(cfg)
    h, w = image.shape[:2]
    x = np.zeros((1, 3, *cfg.padded_size(h, w)), dtype=np.float32)
    x[0, :, :h, :w] = normalise(image, mean, inv_std).transpose(2, 0, 1)
    return x
