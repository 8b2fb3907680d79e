"""Three cameras: one node serving all three against three one-camera nodes, same budget.

CamVid val is split into three streams (frame i goes to camera i % 3) played at their own
rates (default 10, 7 and 5 Hz) into real ``segmenter`` processes over rclpy and Fast DDS on
loopback, while this process records what comes out:

- ``one_node``: one node with ``cameras: [front, rear, left]`` (one network, one scheduler);
- ``three_nodes``: three one-camera nodes running at once, one per stream.

Per camera and in total: frames sent / processed / dropped (sent but never segmented: replaced
in the node, or lost before it) / rejected, deadline hit rate (the nodes' own ``deadline_met``:
arrival to masks published, over processed frames, and over frames sent), mIoU of the masks
against the CamVid labels (one confusion matrix), arrival-to-masks latency p50/p95/p99, and
the nodes' peak resident memory.

    python bench/multi_camera.py --root ../shared/data/camvid --split val --budget-ms 150 \\
        --json bench-out/multi_camera.json
"""

from __future__ import annotations

import argparse
import array
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ('front', 'rear', 'left')


def rss_mb(pid: int) -> float:
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float('nan')


class Nodes:
    """segmenter processes, each with a parameter file and a log."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, ns: str, params: dict) -> None:
        lines = ['/**:', '  ros__parameters:']
        lines += [f'    {k}: {json.dumps(v)}' for k, v in params.items()]
        path = self.tmp / f'{ns}.yaml'
        path.write_text('\n'.join(lines) + '\n')
        log = self.tmp / f'{ns}.log'
        proc = subprocess.Popen([sys.executable, '-m', 'ee_seg_ros.ros.main', '--ros-args',
                                 '--params-file', str(path), '-r', f'__ns:=/{ns}'],
                                stdout=open(log, 'w'), stderr=subprocess.STDOUT)
        self.procs.append((ns, proc, log))

    def wait_ready(self, timeout: float = 180.0) -> None:
        end = time.monotonic() + timeout
        for ns, proc, log in self.procs:
            while 'ee_segmenter ready' not in log.read_text():
                if proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f'node {ns} did not start:\n{log.read_text()}')
                time.sleep(0.2)

    def rss(self) -> dict[str, float]:
        return {ns: rss_mb(p.pid) for ns, p, _ in self.procs}

    def stop(self) -> dict[str, int]:
        for _, p, _ in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        codes = {}
        for ns, p, _ in self.procs:
            try:
                codes[ns] = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[ns] = -9
        return codes


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str):
    from sensor_msgs.msg import Image
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding, msg.step = 'rgb8', rgb.shape[1] * 3
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(rgb).tobytes())
    msg.data = data
    return msg


def run_mode(mode: str, streams: dict, rates: dict, args, probe, spin) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from ee_seg_ros.metrics import ConfusionMatrix

    common = {'latency_budget_ms': float(args.budget_ms), 'input.reliable': True,
              'cpu_load.source': 'none', 'model.threads': args.threads}
    if args.model:
        common['model.path'] = args.model
    # node logs and params files; removed when this run is done (or at exit)
    workdir = tempfile.TemporaryDirectory(prefix=f'multi_camera_{mode}_')
    tmp = Path(workdir.name)
    nodes = Nodes(tmp)
    if mode == 'one_node':
        nodes.start('mc', {**common, 'cameras': list(CAMERAS)})
        image_topic = {c: f'/mc/{c}/image' for c in CAMERAS}
        out_prefix = {c: f'/mc/ee_segmenter/{c}' for c in CAMERAS}
    else:
        for c in CAMERAS:
            nodes.start(f'mc_{c}', common)
        image_topic = {c: f'/mc_{c}/image' for c in CAMERAS}
        out_prefix = {c: f'/mc_{c}/ee_segmenter' for c in CAMERAS}
    masks = {c: {} for c in CAMERAS}
    stats = {c: [] for c in CAMERAS}
    subs = []
    for c in CAMERAS:
        subs.append(probe.create_subscription(
            Image, f'{out_prefix[c]}/mask',
            lambda m, c=c: masks[c].__setitem__(
                m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec,
                np.frombuffer(m.data, np.uint8).reshape(m.height, m.width).copy()), 100))
        subs.append(probe.create_subscription(
            DiagnosticArray, f'{out_prefix[c]}/exit_stats',
            lambda m, c=c: stats[c].append({kv.key: kv.value for kv in m.status[0].values}),
            100))
    pubs = {c: probe.create_publisher(Image, image_topic[c], 10) for c in CAMERAS}
    peak = {}
    before: dict[str, dict[str, int]] = {}      # the nodes' counts after the warm-up
    try:
        nodes.wait_ready()
        end = time.monotonic() + 60
        while not all(p.get_subscription_count() for p in pubs.values()):
            spin(0.05)
            if time.monotonic() > end:
                raise RuntimeError('the nodes never subscribed')
        spin(1.5)     # let discovery settle both ways
        # warm-up: a few frames per camera, each waited for, so first-use costs (DDS
        # shared-memory segments, lazy initialisation) stay out of the figures
        warm = {c: 0 for c in CAMERAS}
        before.update({c: {'received': 0, 'rejected': 0} for c in CAMERAS})
        for k in range(args.warmup):
            for c in CAMERAS:
                rgb, _, stamp = streams[c][k % len(streams[c])]
                want = len(stats[c]) + 1
                pubs[c].publish(image_msg(rgb, stamp - 10_000_000_000, c))
                end = time.monotonic() + 30
                while len(stats[c]) < want and time.monotonic() < end:
                    spin(0.02)
                warm[c] = len(stats[c])
        for c in CAMERAS:
            if stats[c]:
                before[c] = {k: int(stats[c][warm[c] - 1][f'frames_{k}'])
                             for k in ('received', 'rejected')}
            del stats[c][:warm[c]]
            masks[c].clear()
        spin(1.0)
        schedule = sorted((k / rates[c], c, k) for c in CAMERAS for k in range(len(streams[c])))
        t0 = time.monotonic()
        for t, c, k in schedule:
            while time.monotonic() - t0 < t:
                spin(min(0.002, max(t - (time.monotonic() - t0), 0.0)))
            rgb, _, stamp = streams[c][k]
            pubs[c].publish(image_msg(rgb, stamp, c))
            for ns, v in nodes.rss().items():
                peak[ns] = max(peak.get(ns, 0.0), v)
        drain = time.monotonic() + args.drain_s
        while time.monotonic() < drain:
            spin(0.05)
        for ns, v in nodes.rss().items():
            peak[ns] = max(peak.get(ns, 0.0), v)
    finally:
        codes = nodes.stop()
        for s in subs:
            probe.destroy_subscription(s)
        for p in pubs.values():
            probe.destroy_publisher(p)
    per_camera, everything = {}, []
    total_cm = None
    for c in CAMERAS:
        labels = {stamp: lbl for _, lbl, stamp in streams[c]}
        cm = ConfusionMatrix(args.num_classes)
        for stamp, mask in masks[c].items():
            if stamp in labels and labels[stamp].shape == mask.shape:
                cm.update(mask, labels[stamp])
        total_cm = cm.mat.copy() if total_cm is None else total_cm + cm.mat
        rows = stats[c]
        everything += rows
        sent = len(streams[c])
        last = rows[-1] if rows else {}
        processed = len(rows)
        hits = sum(r['deadline_met'] == 'True' for r in rows)
        total = np.array([float(r['total_ms']) for r in rows]) if rows else np.zeros(0)
        per_camera[c] = {
            'rate_hz': rates[c], 'frames_sent': sent,
            'frames_received': int(last.get('frames_received', 0)) - before[c]['received'],
            'frames_processed': processed, 'frames_dropped': sent - processed
            - (int(last.get('frames_rejected', 0)) - before[c]['rejected'] if last else 0),
            'frames_rejected': int(last.get('frames_rejected', 0)) - before[c]['rejected']
            if last else 0,
            'deadline_hit_rate_processed': round(hits / processed, 4) if processed else None,
            'deadline_hit_rate_sent': round(hits / sent, 4),
            'miou': round(cm.miou() * 100, 2) if cm.mat.sum() else None,
            **{f'total_ms_p{q}': round(float(np.percentile(total, q)), 1) if total.size
               else None for q in (50, 95, 99)},
            'points_used': {p: sum(r['operating_point'] == p for r in rows)
                            for p in dict.fromkeys(r['operating_point'] for r in rows)},
        }
    merged = ConfusionMatrix(args.num_classes)
    merged.mat = total_cm
    sent = sum(v['frames_sent'] for v in per_camera.values())
    processed = sum(v['frames_processed'] for v in per_camera.values())
    hits = sum(r['deadline_met'] == 'True' for r in everything)
    total = np.array([float(r['total_ms']) for r in everything]) if everything else np.zeros(0)
    return {
        'mode': mode, 'node_exit_codes': codes, 'peak_rss_mb': {k: round(v, 1)
                                                                for k, v in peak.items()},
        'peak_rss_mb_total': round(sum(peak.values()), 1),
        'cameras': per_camera,
        'total': {'frames_sent': sent, 'frames_processed': processed,
                  'frames_dropped': sum(v['frames_dropped'] for v in per_camera.values()),
                  'frames_rejected': sum(v['frames_rejected'] for v in per_camera.values()),
                  'deadline_hit_rate_processed': round(hits / processed, 4)
                  if processed else None,
                  'deadline_hit_rate_sent': round(hits / sent, 4),
                  'miou': round(merged.miou() * 100, 2) if merged.mat.sum() else None,
                  **{f'total_ms_p{q}': round(float(np.percentile(total, q)), 1)
                     if total.size else None for q in (50, 95, 99)}},
    }


def table(results: list[dict]) -> str:
    lines = ['| setting | camera | Hz | sent / processed / dropped / rejected | deadline hits '
             '(of processed) | of sent | mIoU | arrival to masks p50 / p95 / p99 ms '
             '| peak RSS MB |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in results:
        rows = [(c, v) for c, v in r['cameras'].items()] + [('total', r['total'])]
        for c, v in rows:
            rss = (r['peak_rss_mb_total'] if c == 'total' else
                   (r['peak_rss_mb'].get(f'mc_{c}', '') if r['mode'] == 'three_nodes' else ''))
            hit = v['deadline_hit_rate_processed']
            lines.append(
                f"| {r['mode']} | {c} | {v.get('rate_hz', '')} | {v['frames_sent']} / "
                f"{v['frames_processed']} / {v['frames_dropped']} / {v['frames_rejected']} | "
                f"{'' if hit is None else f'{hit * 100:.1f}%'} | "
                f"{v['deadline_hit_rate_sent'] * 100:.1f}% | {v['miou']} | "
                f"{v['total_ms_p50']} / {v['total_ms_p95']} / {v['total_ms_p99']} | {rss} |")
    return '\n'.join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', required=True, help='CamVid layout (DIR/val, DIR/valannot)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--rates', default='10,7,5', help='Hz of the three streams')
    parser.add_argument('--budget-ms', type=float, default=150.0)
    parser.add_argument('--threads', type=int, default=2, help='model.threads of every node')
    parser.add_argument('--model', default='', help='bundle (default: the bundled model)')
    parser.add_argument('--limit', type=int, default=0, help='use only the first N frames')
    parser.add_argument('--drain-s', type=float, default=4.0)
    parser.add_argument('--warmup', type=int, default=3, help='frames per camera, not counted')
    parser.add_argument('--modes', default='one_node,three_nodes')
    parser.add_argument('--json', default='multi_camera.json')
    args = parser.parse_args()

    os.environ.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE',
                          str(ROOT / 'config' / 'fastdds_loopback.xml'))
    os.environ.setdefault('ROS_DOMAIN_ID', '78')
    os.environ.pop('ROS_AUTOMATIC_DISCOVERY_RANGE', None)   # see test/test_node.py
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from ee_seg_ros.bundle import load_bundle
    from ee_seg_ros.data.datasets import load_split
    from ee_seg_ros.points import machine_description
    split = load_split('camvid', args.root, args.split)
    bundle = load_bundle(args.model or None)
    args.num_classes = bundle.labels.num_classes
    n = len(split) if not args.limit else min(args.limit, len(split))
    rates = dict(zip(CAMERAS, (float(v) for v in args.rates.split(','))))
    streams = {c: [] for c in CAMERAS}
    start = 1_700_000_000 * 1_000_000_000
    for i in range(n):
        rgb, label = split[i]
        c = CAMERAS[i % 3]
        streams[c].append((rgb, label, start + i * 1_000_000))   # label: class ids, void

    rclpy.init()
    probe = Node('multi_camera_bench')
    executor = SingleThreadedExecutor()
    executor.add_node(probe)

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            executor.spin_once(timeout_sec=max(min(end - time.monotonic(), 0.05), 0.0))
            if time.monotonic() >= end:
                return

    results = []
    try:
        for mode in args.modes.split(','):
            print(f'{mode}: {n} frames in 3 streams at {args.rates} Hz, budget '
                  f'{args.budget_ms} ms', flush=True)
            results.append(run_mode(mode, streams, rates, args, probe, spin))
            print(table(results[-1:]), flush=True)
    finally:
        probe.destroy_node()
        rclpy.shutdown()
    report = {'frames': n, 'rates_hz': rates, 'budget_ms': args.budget_ms,
              'threads_per_node': args.threads, 'results': results,
              'machine': machine_description(args.threads)}
    by_mode = {r['mode']: r for r in results}
    if {'one_node', 'three_nodes'} <= set(by_mode):
        one, three = by_mode['one_node'], by_mode['three_nodes']
        single = [v for k, v in three['peak_rss_mb'].items()]
        report['memory_ratio_to_one_camera_node'] = round(
            one['peak_rss_mb_total'] / (sum(single) / len(single)), 3)
        report['three_nodes_memory_ratio_to_one_camera_node'] = round(
            three['peak_rss_mb_total'] / (sum(single) / len(single)), 3)
    print(table(results))
    print(json.dumps({k: v for k, v in report.items() if k != 'results'}, indent=1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
