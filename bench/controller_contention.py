"""The controller under real CPU contention: busy processes started and stopped by this script.

Every frame runs the adaptive pipeline and, interleaved on the same frame, each static point
of the profile alone, so all see the same contention. Reports deadline hit rate, latency
percentiles, operating-point switches per minute and mIoU (frames with labels) for each.

    python bench/controller_contention.py --root ../shared/data/camvid --split val \
        --budget-ms 90 --phase-s 20 --json contention.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np


def _burn() -> None:
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--root', help='CamVid-layout folder (default: synthetic scenes)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--model', default=None)
    parser.add_argument('--budget-ms', type=float, required=True)
    parser.add_argument('--phase-s', type=float, default=20.0)
    parser.add_argument('--phases', default='0,1,2,0,2,1,0', help='busy processes per phase')
    parser.add_argument('--static', default='', help='comma-separated static points to run '
                        'alongside (default: full, the recommended point and the cheapest)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', default='controller_contention.json')
    args = parser.parse_args()

    from ee_seg_ros.control import ControllerSettings, Signals
    from ee_seg_ros.data.folder import camvid_layout
    from ee_seg_ros.data.synthetic import SyntheticScenes
    from ee_seg_ros.metrics import ConfusionMatrix
    from ee_seg_ros.runtime import Frame, Pipeline, Segmenter

    seg = Segmenter(args.model, threads=args.threads)
    frames = (camvid_layout(args.root, args.split, seg.bundle.labels) if args.root
              else SyntheticScenes(60, seed=5))
    pipe = Pipeline(seg, ControllerSettings(latency_budget_ms=args.budget_ms))
    points = [p.policy for p in pipe.controller.points]
    static = args.static.split(',') if args.static else list(dict.fromkeys(
        ['full', seg.bundle.profile.get('recommended', 'full'), points[0]]))
    names = ['adaptive', *static]
    lat = {n: [] for n in names}
    cms = {n: ConfusionMatrix(seg.num_classes) for n in names}
    chosen = []
    phases = [int(v) for v in args.phases.split(',')]
    workers: list[mp.Process] = []
    start = time.monotonic()
    i = 0
    try:
        for busy in phases:
            while len(workers) < busy:
                workers.append(mp.Process(target=_burn, daemon=True))
                workers[-1].start()
            while len(workers) > busy:
                workers.pop().terminate()
            phase_end = time.monotonic() + args.phase_s
            print(f'{time.monotonic() - start:6.1f} s: {busy} busy processes', flush=True)
            while time.monotonic() < phase_end:
                image, label = frames[i % len(frames)]
                i += 1
                result = pipe.step(Frame(image), Signals())
                lat['adaptive'].append(result.segmentation.latency_ms)
                cms['adaptive'].update(result.segmentation.labels, label)
                chosen.append(result.decision.point.policy)
                for name in static:
                    r = seg.segment(image, name, want_exit_map=False)
                    lat[name].append(r.latency_ms)
                    cms[name].update(r.labels, label)
    finally:
        for w in workers:
            w.terminate()
    minutes = (time.monotonic() - start) / 60
    switches = sum(a != b for a, b in zip(chosen, chosen[1:]))
    rows = []
    for n in names:
        a = np.asarray(lat[n])
        rows.append({'setting': n, 'frames': int(a.size),
                     'deadline_hit_rate': round(float((a <= args.budget_ms).mean()), 4),
                     'latency_ms_p50': round(float(np.percentile(a, 50)), 2),
                     'latency_ms_p95': round(float(np.percentile(a, 95)), 2),
                     'latency_ms_p99': round(float(np.percentile(a, 99)), 2),
                     'miou': round(cms[n].miou() * 100, 2)})
    report = {'budget_ms': args.budget_ms, 'phases': phases, 'phase_s': args.phase_s,
              'switches_per_minute': round(switches / minutes, 2),
              'guard_stops': pipe.counts.guard_stops, 'settings': rows,
              'points_used': {p: chosen.count(p) for p in dict.fromkeys(chosen)}}
    print('| setting | frames | deadline hits | p50 ms | p95 ms | p99 ms | mIoU |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['setting']} | {r['frames']} | {r['deadline_hit_rate'] * 100:.1f}% | "
              f"{r['latency_ms_p50']} | {r['latency_ms_p95']} | {r['latency_ms_p99']} | "
              f"{r['miou']} |")
    print(f"switches per minute: {report['switches_per_minute']}, guard stops: "
          f"{report['guard_stops']}")
    Path(args.json).write_text(json.dumps(report, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
