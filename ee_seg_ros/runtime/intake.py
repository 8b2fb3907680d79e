"""A camera message to the network's input, and the network's output back to the camera's
size: the same code for the node and for replay, so both see the same pixels.

Message-agnostic (rclpy and rosbags messages alike): an ``Image`` is decoded honouring its
encoding, ``step`` and byte order, a ``CompressedImage`` (it has a ``format`` field) with
OpenCV; then the frame is resized to ``model.input_width`` when that is set. Every malformed
frame raises ``ImageDecodeError`` naming the problem, for the caller to count as rejected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from ..image_codec import ImageDecodeError, compressed_to_rgb8, to_rgb8
from .segmenter import SegmentationResult

__all__ = ['Decoded', 'FrameIntake', 'ImageDecodeError', 'Outputs', 'at_input_size',
           'is_compressed']


def is_compressed(msg) -> bool:
    """CompressedImage has ``format`` and no ``encoding``."""
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


@dataclass(frozen=True)
class Decoded:
    rgb: np.ndarray                 # what the network gets: RGB uint8, resized
    input_size: tuple[int, int]     # (height, width) of the camera frame
    decode_ms: float


class FrameIntake:
    """Decode and resize. ``input_width`` 0 keeps the camera resolution."""

    def __init__(self, input_width: int = 0) -> None:
        if input_width < 0:
            raise ValueError(f'input width must be >= 0, got {input_width}')
        self.input_width = int(input_width)

    def decode(self, msg) -> Decoded:
        t0 = time.perf_counter()
        rgb = compressed_to_rgb8(msg.data) if is_compressed(msg) else to_rgb8(msg)
        h, w = rgb.shape[:2]
        if self.input_width and w != self.input_width:
            scale = self.input_width / w
            rgb = cv2.resize(rgb, (self.input_width, max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
        return Decoded(rgb, (h, w), (time.perf_counter() - t0) * 1e3)


@dataclass(frozen=True)
class Outputs:
    labels: np.ndarray
    confidence: np.ndarray
    exit_map: np.ndarray | None
    rgb: np.ndarray


def at_input_size(seg: SegmentationResult, rgb: np.ndarray,
                  input_size: tuple[int, int]) -> Outputs:
    """The masks (and the image, for overlays) at the camera's resolution: class ids and
    exits by nearest neighbour, confidence and image bilinear."""
    labels, conf, exits = seg.labels, seg.confidence, seg.exit_map
    if labels.shape[:2] == tuple(input_size):
        return Outputs(labels, conf, exits, rgb)
    size = (input_size[1], input_size[0])
    labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    conf = cv2.resize(conf, size, interpolation=cv2.INTER_LINEAR)
    if exits is not None:
        exits = cv2.resize(exits, size, interpolation=cv2.INTER_NEAREST)
    return Outputs(labels, conf, exits, cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR))
