"""A MultiThreadedExecutor that hands each callback to its thread before looking for more work.

rclpy's MultiThreadedExecutor (Humble to Jazzy, ros2/rclpy#1452) can yield a callback that was
submitted to its thread pool but has not started yet over and over; its spin thread then loops
holding the GIL and the pool threads barely run (bench/executor_round_trip.py measures it;
figures in the README). Waiting in ``submit`` until the pool thread has picked the callback up
keeps the executor's shape (callbacks in their groups, on several threads) without the busy
loop.

``shutdown`` also waits for the callbacks already running, as rclpy's later releases do
(ros2/rclpy#1309): the Jazzy wheels' base class returns without waiting for them, so a node
destroyed right after could be torn down under a running callback.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from rclpy.executors import MultiThreadedExecutor

from .threads import name_this_thread


class _StartingPool(ThreadPoolExecutor):
    """Returns from ``submit`` only once a pool thread runs the callable."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        started = threading.Event()

        def run():
            started.set()
            return fn(*args, **kwargs)

        future = super().submit(run)
        started.wait()
        return future


class PromptMultiThreadedExecutor(MultiThreadedExecutor):
    def __init__(self, num_threads: int, **kwargs) -> None:
        super().__init__(num_threads, **kwargs)
        pool = getattr(self, '_executor', None)
        if isinstance(pool, ThreadPoolExecutor):
            pool.shutdown(wait=False)
            self._executor = _StartingPool(num_threads, initializer=name_this_thread,
                                           initargs=('ee.callbacks',))

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Stop taking work, then wait for the pool's running callbacks to return."""
        done = super().shutdown(timeout_sec=timeout_sec)
        self._executor.shutdown(wait=True)
        return done
