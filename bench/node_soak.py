"""Node overhead and soak benchmark through the real rclpy and DDS (loopback only).

Starts the ``segmenter`` executable, feeds it frames one at a time (the next frame goes out when
the previous frame's exit statistics arrive, so none is dropped), and reports:
- overhead: (decode + encode/publish) over inference time, per frame, at the frame size given;
- round trip: from publishing a frame to receiving its statistics, against inference time;
- soak: resident memory of the node after warm-up and at the end, and frame accounting.

    python bench/node_soak.py --frames 10000 --json soak.json
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


def rss_mb(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--frames', type=int, default=10000)
    parser.add_argument('--warmup', type=int, default=500)
    parser.add_argument('--size', default='360x480', help='HxW of the frames')
    parser.add_argument('--model', default='', help='bundle (default: the bundled model)')
    parser.add_argument('--budget-ms', type=float, default=60.0)
    parser.add_argument('--policy-mode', default='adaptive')
    parser.add_argument('--json', default='node_soak.json')
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split('x'))

    os.environ.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE',
                          str(ROOT / 'config' / 'fastdds_loopback.xml'))
    os.environ.setdefault('ROS_DOMAIN_ID', '77')
    os.environ.pop('ROS_AUTOMATIC_DISCOVERY_RANGE', None)   # see test/test_node.py
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    params = ['-p', f'latency_budget_ms:={args.budget_ms}', '-p', 'input.reliable:=true',
              '-p', f'policy.mode:={args.policy_mode}', '-p', 'cpu_load.source:=none']
    if args.model:
        params += ['-p', f'model.path:={args.model}']
    node_proc = subprocess.Popen([sys.executable, '-m', 'ee_seg_ros.ros.main', '--ros-args',
                                  *params, '-r', '__ns:=/soak'], stderr=subprocess.PIPE,
                                 text=True)
    rclpy.init()
    probe = Node('soak_probe')
    stats: list[dict] = []
    probe.create_subscription(DiagnosticArray, '/soak/ee_segmenter/exit_stats',
                              lambda m: stats.append({kv.key: kv.value
                                                      for kv in m.status[0].values}), 10)
    pub = probe.create_publisher(Image, '/soak/image', 10)
    frames = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
              for i in range(8)]
    deadline = time.monotonic() + 120
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(probe, timeout_sec=0.1)
    rss = []
    round_trip = []
    t_start = time.monotonic()
    try:
        for i in range(args.frames):
            msg = Image()
            msg.header.stamp.sec = i
            msg.height, msg.width, msg.encoding, msg.step = h, w, 'rgb8', w * 3
            data = array.array('B')
            data.frombytes(frames[i % len(frames)].data)
            msg.data = data
            want = len(stats) + 1
            sent = time.monotonic()
            pub.publish(msg)
            end = time.monotonic() + 30
            while len(stats) < want and time.monotonic() < end:
                rclpy.spin_once(probe, timeout_sec=0.05)
            if len(stats) < want:
                print(f'frame {i}: no statistics within 30 s', file=sys.stderr)
                break
            round_trip.append((time.monotonic() - sent) * 1e3)
            if i % 100 == 0:
                print(f'{i} frames in {time.monotonic() - t_start:.0f} s, round trip p50 of the '
                      f'last 100: {np.median(round_trip[-100:]):.1f} ms', flush=True)
            if i == args.warmup or (i > args.warmup and i % 500 == 0) or i == args.frames - 1:
                rss.append((i, rss_mb(node_proc.pid)))
                print(f'{i} frames, node RSS {rss[-1][1]:.1f} MB', flush=True)
    finally:
        node_proc.send_signal(signal.SIGINT)
        rc = node_proc.wait(timeout=30)
        probe.destroy_node()
        rclpy.shutdown()
    wall = time.monotonic() - t_start
    s = stats[args.warmup:] if len(stats) > args.warmup else stats
    decode = np.array([float(x['decode_ms']) for x in s])
    publish = np.array([float(x['publish_ms_previous']) for x in s[1:]])
    infer = np.array([float(x['latency_ms']) for x in s])
    last = stats[-1]
    report = {
        'frames_sent': args.frames, 'frame_size': [h, w], 'policy_mode': args.policy_mode,
        'wall_s': round(wall, 1), 'node_exit_code': rc,
        'frames_received': int(last['frames_received']),
        'frames_processed': int(last['frames_processed']),
        'frames_dropped': int(last['frames_dropped']),
        'frames_rejected': int(last['frames_rejected']),
        'inference_ms_mean': round(float(infer.mean()), 3),
        'decode_ms_mean': round(float(decode.mean()), 3),
        'publish_ms_mean': round(float(publish.mean()), 3),
        'overhead_fraction': round(float((decode.mean() + publish.mean()) / infer.mean()), 4),
        # publish of the frame to arrival of its statistics, as seen by a subscriber
        'round_trip_ms_p50': round(float(np.percentile(round_trip[args.warmup:], 50)), 2),
        'round_trip_ms_p95': round(float(np.percentile(round_trip[args.warmup:], 95)), 2),
        'round_trip_ms_max': round(float(np.max(round_trip[args.warmup:])), 2),
        'rss_mb': [[i, round(v, 1)] for i, v in rss],
        'rss_growth_after_warmup': round(rss[-1][1] / rss[0][1] - 1.0, 4) if rss else None,
        # samples swing by tens of MB (allocator); halves compare a trend, not two samples
        'rss_median_growth_second_half': round(
            float(np.median([v for _, v in rss[len(rss) // 2:]])
                  / np.median([v for _, v in rss[:len(rss) // 2]]) - 1.0), 4) if rss else None,
    }
    report['all_frames_accounted'] = (report['frames_received'] == report['frames_processed']
                                      + report['frames_dropped'] + report['frames_rejected']
                                      == args.frames)
    print(json.dumps(report, indent=1))
    Path(args.json).write_text(json.dumps(report, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
