"""Operating-system names for the node's own threads.

``top -H``, ``ps -L`` and ``bench/live_loop.py`` then tell the executor and its callbacks
(``ee.executor``, ``ee.callbacks``) from inference (the main thread and PyTorch's workers)
and from the middleware (Fast DDS names its threads ``dds.*``). Python 3.11 leaves every thread
with the process's name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_PR_SET_NAME = 15      # prctl(2): name the calling thread (Linux keeps 15 bytes)


def name_this_thread(name: str) -> None:
    """Give the calling thread ``name`` (up to 15 bytes) where the system allows it."""
    if not sys.platform.startswith('linux'):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass     # naming is for people reading process listings; never fail over it
