"""Colour masks and overlays (numpy, shared by the node and replay reports)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def palette_array(palette: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """A (256, 3) uint8 lookup table; ids beyond the palette are black."""
    lut = np.zeros((max(256, num_classes), 3), dtype=np.uint8)
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:num_classes]
    lut[:len(colours)] = colours
    return lut


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Class ids (H, W) to RGB (H, W, 3) through a lookup table."""
    return lut[labels]


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """Blend class colours over the frame: alpha 0 is the frame, 1 the colours."""
    if alpha <= 0:
        return image
    if alpha >= 1:
        return colours
    import cv2
    return cv2.addWeighted(colours, float(alpha), image, 1.0 - float(alpha), 0.0)
