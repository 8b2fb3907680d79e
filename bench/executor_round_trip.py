"""Round trip through an echo node spun by rclpy's stock MultiThreadedExecutor, by the node's
PromptMultiThreadedExecutor (ee_seg_ros/ros/executor.py), and by a SingleThreadedExecutor.

Each echo node runs as its own process (real rclpy and Fast DDS, loopback profile) and
republishes every Image it receives; this process publishes one small image at a time and
waits for the echo. Shows the busy loop of ros2/rclpy#1452 and that the node's executor avoids
it.

    python bench/executor_round_trip.py --messages 40 --json executor_round_trip.json
"""

from __future__ import annotations

import argparse
import array
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KINDS = ('stock', 'prompt', 'single')


def echo(kind: str) -> None:
    """The echo node (run in a child process)."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from ee_seg_ros.ros.executor import PromptMultiThreadedExecutor
    rclpy.init()
    node = rclpy.create_node('echo')
    pub = node.create_publisher(Image, 'echo_out', 10)
    node.create_subscription(Image, 'echo_in', pub.publish, 10)
    executor = {'stock': lambda: MultiThreadedExecutor(num_threads=3),
                'prompt': lambda: PromptMultiThreadedExecutor(num_threads=3),
                'single': SingleThreadedExecutor}[kind]()
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass


def measure(kind: str, messages: int) -> list[float]:
    import rclpy
    from sensor_msgs.msg import Image
    child = subprocess.Popen([sys.executable, __file__, '--echo', kind])
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('echo_probe', context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    got: list[float] = []
    node.create_subscription(Image, 'echo_out', lambda m: got.append(time.monotonic()), 10)
    pub = node.create_publisher(Image, 'echo_in', 10)
    try:
        end = time.monotonic() + 60
        while (pub.get_subscription_count() == 0 or node.count_publishers('echo_out') == 0) \
                and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
        end = time.monotonic() + 2.0                  # let discovery settle on both sides
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        msg = Image(height=16, width=16, encoding='rgb8', step=48)
        msg.data = array.array('B', bytes(16 * 48))
        trips = []
        for _ in range(messages):
            n, sent = len(got), time.monotonic()
            pub.publish(msg)
            while len(got) == n and time.monotonic() - sent < 10:
                executor.spin_once(timeout_sec=0.01)
            trips.append((got[-1] - sent) * 1e3 if len(got) > n else float('inf'))
        return trips
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(timeout=20)
        node.destroy_node()
        rclpy.shutdown(context=context)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--messages', type=int, default=40)
    parser.add_argument('--json', default='executor_round_trip.json')
    parser.add_argument('--echo', choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE',
                          str(ROOT / 'config' / 'fastdds_loopback.xml'))
    os.environ.setdefault('ROS_DOMAIN_ID', '78')
    os.environ.pop('ROS_AUTOMATIC_DISCOVERY_RANGE', None)   # see test/test_node.py
    if args.echo:
        echo(args.echo)
        return 0
    rows = []
    for kind in KINDS:
        trips = np.asarray(measure(kind, args.messages))
        rows.append({'executor': kind, 'messages': int(trips.size),
                     'round_trip_ms_p50': round(float(np.median(trips)), 2),
                     'round_trip_ms_p95': round(float(np.percentile(trips, 95)), 2),
                     'round_trip_ms_max': round(float(trips.max()), 2)})
    print('| echo node executor | p50 ms | p95 ms | max ms |')
    print('|---|---|---|---|')
    for r in rows:
        print(f"| {r['executor']} | {r['round_trip_ms_p50']} | {r['round_trip_ms_p95']} | "
              f"{r['round_trip_ms_max']} |")
    Path(args.json).write_text(json.dumps({'rows': rows}, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
