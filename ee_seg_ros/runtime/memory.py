"""Keep the memory a frame frees for the next frame, instead of handing it back to the system.

glibc's malloc serves large blocks (PyTorch's activations, a camera frame's buffers) with
fresh mappings and returns freed memory at the top of its heaps, so every frame faults its
working set in again, page by page, zero-filled by the kernel: in the live replay loop on a
2-core AMD EPYC the node took 1,100-1,700 minor page faults per frame with glibc's defaults and
60-140 with this (bench/live_loop.py prints them). Raising the mmap and trim thresholds at
start-up keeps the pages; the process holds its high-water mark instead (a frame's working
set, tens of MB). ``EE_SEG_KEEP_FREED_MEMORY=0`` leaves
glibc's defaults (to hand memory back, or to measure the difference: bench/live_loop.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1      # mallopt(3) parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # glibc's ceiling for this setting on 64-bit systems
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Set glibc malloc so freed blocks stay in the process for reuse. Returns whether it
    took effect (False off glibc, e.g. macOS or musl, where nothing changes)."""
    if not sys.platform.startswith('linux') or os.environ.get(
            'EE_SEG_KEEP_FREED_MEMORY', '1') == '0':
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
