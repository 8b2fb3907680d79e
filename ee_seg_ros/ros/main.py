"""Entry point of the ``segmenter`` executable (``ros2 run ee_seg_ros segmenter``).

The process stops in one fixed order, on the main thread: SIGINT and SIGTERM (Ctrl-C,
``ros2 launch`` stopping us) only ask the inference loop to end, instead of rclpy's own
handlers, which shut the context down from a thread of their own while frames are still being
published and callbacks run. Then the executor stops, its threads are joined, the node is
destroyed and rclpy is shut down. Signals that keep coming meanwhile change nothing, and once
the stop is done they are ignored, through the interpreter's teardown.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from types import FrameType


def main(args: list[str] | None = None) -> int:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # before the imports and the warm-up, which take seconds: a stop asked for then is kept
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    # a crash inside a C extension (rclpy, torch) prints every thread's Python stack to the
    # log instead of a bare exit code
    faulthandler.enable()
    # before torch and the middleware allocate: freed frames' memory stays for the next
    # frame instead of being faulted in again, page by page (runtime/memory.py)
    from ..runtime.memory import keep_freed_memory
    keep_freed_memory()
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    from ..bundle import BundleError
    from .executor import PromptMultiThreadedExecutor
    from .node import SegmenterNode

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = SegmenterNode()
    except (BundleError, ParameterException, ValueError, OSError) as err:
        print(f'[ee_segmenter] cannot start: {err}', file=sys.stderr)
        rclpy.try_shutdown()
        _ignore_stop_signals()
        return 1
    executor = PromptMultiThreadedExecutor(num_threads=3)
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass  # the context was shut down from outside
        except Exception:
            if not stop.is_set():
                raise
            # an entity went away under the wait while stopping: still a clean stop

    # callbacks (camera intake, telemetry, parameters) on the executor's threads; inference
    # here, on the thread that loaded and warmed up the network (see SegmenterNode.serve_frames)
    spinner = threading.Thread(target=spin, name='executor', daemon=True)
    spinner.start()
    try:
        node.serve_frames(lambda: not stop.is_set() and spinner.is_alive() and rclpy.ok())
    finally:
        stop.set()
        executor.shutdown(timeout_sec=5.0)    # wakes the spin thread and joins the callbacks
        spinner.join(timeout=10.0)
        if spinner.is_alive():
            print('[ee_segmenter] the executor thread did not stop within 10 s', file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        _ignore_stop_signals()
    return 0


def _ignore_stop_signals() -> None:
    """Only the interpreter's teardown is left, and it puts the default handlers back: a
    second Ctrl-C or ros2 launch's SIGTERM landing then would turn an exit into a death by
    signal."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


if __name__ == '__main__':
    sys.exit(main())
