"""Entry point of the ``segmenter`` executable (``ros2 run ee_seg_ros segmenter``)."""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading


def main(args: list[str] | None = None) -> int:
    # a crash inside a C extension (rclpy, torch) prints every thread's Python stack to the
    # log instead of a bare exit code
    faulthandler.enable()
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException

    from ..bundle import BundleError
    from .executor import PromptMultiThreadedExecutor
    from .node import SegmenterNode

    rclpy.init(args=args)
    try:
        node = SegmenterNode()
    except (BundleError, ParameterException, ValueError, OSError) as err:
        print(f'[ee_segmenter] cannot start: {err}', file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    executor = PromptMultiThreadedExecutor(num_threads=3)
    executor.add_node(node)

    stopping = threading.Event()

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass  # Ctrl-C or `ros2 launch` stopping us: a clean stop
        except Exception:
            if rclpy.ok() and not stopping.is_set():
                raise
            # the context or the node went away under a callback while stopping: still clean

    # callbacks (camera intake, telemetry, parameters) on the executor's threads; inference
    # here, on the thread that loaded and warmed up the network (see SegmenterNode.serve_frames)
    spinner = threading.Thread(target=spin, name='executor', daemon=True)
    spinner.start()
    try:
        node.serve_frames(lambda: spinner.is_alive() and rclpy.ok())
    except KeyboardInterrupt:
        pass
    finally:
        # a second Ctrl-C while cleaning up must not turn a clean stop into a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stopping.set()
        executor.shutdown(timeout_sec=5.0)
        # the executor thread is a daemon: left running, the interpreter would stop it in the
        # middle of a callback as the process exits (seen once in a test run as half a
        # traceback at shutdown)
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
