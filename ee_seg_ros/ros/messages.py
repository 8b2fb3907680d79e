"""Building the node's outgoing messages from numpy arrays."""

from __future__ import annotations

import array

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image


def image_msg(header, pixels: np.ndarray, encoding: str) -> Image:
    """An Image sharing ``header``; the data goes in as array.array, which rclpy accepts
    without a per-element check (assigning bytes costs hundreds of ms on a large frame)."""
    pixels = np.ascontiguousarray(pixels)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
    data = array.array('B')
    data.frombytes(pixels.data if pixels.dtype == np.uint8 else pixels.view(np.uint8).data)
    msg.data = data
    return msg


def key_values(values: dict) -> list[KeyValue]:
    return [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]


def status(name: str, hardware_id: str, level: bytes, message: str,
           values: dict) -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=key_values(values))
