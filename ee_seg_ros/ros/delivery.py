"""How an image reached the node: the message and the time its delivery took.

rclpy hands a subscription callback with two parameters the middleware's message info: the
publisher's write time (``source_timestamp``) and the time the middleware received the sample
(``received_timestamp``), both on the system clock of this machine (``ros2 bag play`` runs on
the same one). Their difference is the transport; from reception to the callback is the
executor's dispatch. Neither counts towards the deadline, which runs from the callback, but the
live-loop measurement (``bench/live_loop.py``) reports both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Delivered:
    """A received image message with its transport and dispatch times (ms; 0 when the
    middleware gave no timestamps)."""

    msg: Any
    transport_ms: float
    dispatch_ms: float

    @classmethod
    def of(cls, msg: Any, info: dict, now_ns: int) -> 'Delivered':
        source = info.get('source_timestamp') or 0
        received = info.get('received_timestamp') or 0
        if not (source and received):
            return cls(msg, 0.0, 0.0)
        return cls(msg, max(received - source, 0) * 1e-6, max(now_ns - received, 0) * 1e-6)
