"""Handing accepted parameter changes from the executor's threads to the inference thread.

Parameter callbacks run on an executor thread while the main thread may be in the middle of a
frame; swapping the controller settings, the palette or thread-pool sessions under it would
mix two settings in one frame. The callback validates at once (so ``ros2 param set`` hears a
refusal and its reason) and leaves the new settings here; the inference thread takes them
before its next frame. Each offer is a complete set, so only the newest one matters.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar('T')


class Pending(Generic[T]):
    """A one-place mailbox: ``offer`` replaces what is waiting, ``take`` empties it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: T | None = None

    def offer(self, value: T) -> None:
        with self._lock:
            self._value = value

    def take(self) -> T | None:
        with self._lock:
            value, self._value = self._value, None
        return value
