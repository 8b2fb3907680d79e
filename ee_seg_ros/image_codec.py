"""sensor_msgs/Image and CompressedImage to and from numpy, without cv_bridge.

Message-agnostic: works on rclpy messages and on rosbags messages alike, so the node and
replay decode frames with the same code. Every malformed frame raises ``ImageDecodeError``
naming the problem, for the caller to count and report as a rejected frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_PIXELS = 7680 * 4320  # 8K UHD


class ImageDecodeError(ValueError):
    """A frame that cannot be turned into pixels; the message says why."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: str
    order: str  # how to get RGB: 'rgb', 'bgr', 'rgba', 'bgra', 'gray'


ENCODINGS = {
    'rgb8': _Layout(3, 'u1', 'rgb'), 'bgr8': _Layout(3, 'u1', 'bgr'),
    'rgba8': _Layout(4, 'u1', 'rgba'), 'bgra8': _Layout(4, 'u1', 'bgra'),
    'mono8': _Layout(1, 'u1', 'gray'), '8UC1': _Layout(1, 'u1', 'gray'),
    'mono16': _Layout(1, 'u2', 'gray'), '8UC3': _Layout(3, 'u1', 'bgr'),
}


def image_array(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The message's pixels in their own encoding: (H, W) or (H, W, C), honouring ``step``
    (row padding) and ``is_bigendian``. Zero-copy where the layout allows."""
    enc = msg.encoding
    layout = ENCODINGS.get(enc)
    if layout is None:
        raise ImageDecodeError(f'unsupported image encoding {enc!r}; supported: '
                               f'{", ".join(ENCODINGS)}')
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f'zero-size image ({w}x{h})')
    if h * w > max_pixels:
        raise ImageDecodeError(f'image {w}x{h} is larger than the 8K limit '
                               f'({max_pixels} pixels)')
    itemsize = np.dtype(layout.dtype).itemsize
    row = w * layout.channels * itemsize
    if step < row:
        raise ImageDecodeError(f'step {step} is smaller than width x channels x bytes = {row} '
                               f'for {enc} {w}x{h}')
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * h:
        raise ImageDecodeError(f'image data has {buf.size} bytes, fewer than step x height '
                               f'= {step * h}')
    rows = buf[:step * h].reshape(h, step)[:, :row]
    dtype = np.dtype(layout.dtype).newbyteorder('>' if msg.is_bigendian else '<')
    pixels = rows.view(dtype)  # padded rows stay a strided view, no copy
    shape = (h, w) if layout.channels == 1 else (h, w, layout.channels)
    return pixels.reshape(shape)


def to_rgb8(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any supported Image as an RGB uint8 (H, W, 3) frame for the network."""
    pixels = image_array(msg, max_pixels)
    order = ENCODINGS[msg.encoding].order
    if pixels.dtype.itemsize == 2:
        pixels = (pixels.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if order == 'rgb':
        return np.ascontiguousarray(pixels)
    if order == 'bgr':
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGR2RGB)
    if order == 'rgba':
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGBA2RGB)
    if order == 'bgra':
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_GRAY2RGB)


def compressed_to_rgb8(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A CompressedImage payload (JPEG or PNG) as RGB uint8."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageDecodeError('compressed image is empty')
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f'compressed image ({buf.size} bytes) could not be decoded: '
                               'corrupt or not JPEG/PNG')
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageDecodeError(f'image {image.shape[1]}x{image.shape[0]} is larger than the '
                               '8K limit')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_fields(array: np.ndarray, encoding: str) -> tuple[int, int, str, int, bytes]:
    """(height, width, encoding, step, bytes) for an outgoing Image; little-endian."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == '>':
        array = array.astype(array.dtype.newbyteorder('<'))
    h, w = array.shape[:2]
    return h, w, encoding, array.strides[0], array.tobytes()
