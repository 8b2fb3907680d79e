"""The controller under real CPU contention: busy processes started and stopped by this script.

Every frame runs the adaptive pipeline and, interleaved on the same frame, each static point
of the profile alone, so all see the same contention. The pipeline reads the machine's CPU load
as the node does with ``cpu_load.source: local`` (other processes only, once a second) and uses
``--high-threads`` inference threads while it is high; static points keep ``--threads``.
Reports deadline hit rate, latency percentiles, operating-point switches per minute and mIoU
(frames with labels) for each.

    python bench/controller_contention.py --root ../shared/data/camvid --split val \
        --budget-ms 160 --phase-s 20 --json contention.json
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
    parser.add_argument('--high-threads', type=int, default=1,
                        help='threads while the CPU load is high (0: keep --threads)')
    parser.add_argument('--json', default='controller_contention.json')
    args = parser.parse_args()

    from ee_seg_ros.control import ControllerSettings, Signals
    from ee_seg_ros.data.folder import camvid_layout
    from ee_seg_ros.data.synthetic import SyntheticScenes
    from ee_seg_ros.metrics import ConfusionMatrix
    from ee_seg_ros.runtime import Frame, Pipeline, Segmenter
    from ee_seg_ros.signals import LocalCpuLoad

    seg = Segmenter(args.model, threads=args.threads)
    frames = (camvid_layout(args.root, args.split, seg.bundle.labels) if args.root
              else SyntheticScenes(60, seed=5))
    pipe = Pipeline(seg, ControllerSettings(latency_budget_ms=args.budget_ms,
                                            cpu_high_threads=args.high_threads))
    cpu_monitor = LocalCpuLoad()
    cpu_load, cpu_read_at = None, 0.0
    points = [p.policy for p in pipe.controller.points]
    static = args.static.split(',') if args.static else list(dict.fromkeys(
        ['full', seg.bundle.profile.get('recommended', 'full'), points[0]]))
    names = ['adaptive', *static]
    lat = {n: [] for n in names}
    cms = {n: ConfusionMatrix(seg.num_classes) for n in names}
    chosen = []
    threads_used = []
    phase_of = []
    phases = [int(v) for v in args.phases.split(',')]
    workers: list[mp.Process] = []
    start = time.monotonic()
    i = 0
    try:
        for k, busy in enumerate(phases):
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
                if time.monotonic() - cpu_read_at >= 1.0:   # as the node's 1 Hz timer
                    cpu_load, cpu_read_at = cpu_monitor.read(), time.monotonic()
                result = pipe.step(Frame(image), Signals(cpu_load=cpu_load))
                threads_used.append(result.decision.threads or seg.threads)
                phase_of.append(k)
                seg.use_threads(0)
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
    adaptive = np.asarray(lat['adaptive'])
    phase_arr = np.asarray(phase_of)
    changed = np.r_[False, np.asarray(chosen[1:]) != np.asarray(chosen[:-1])]
    per_phase = [{'busy': busy, 'frames': int((phase_arr == k).sum()),
                  'adaptive_deadline_hit_rate': round(float(
                      (adaptive[phase_arr == k] <= args.budget_ms).mean()), 4),
                  # switches inside the phase (a load change itself is expected to move it),
                  # and in its second half, once the controller has settled
                  'switches': int(changed[phase_arr == k][1:].sum()),
                  'switches_second_half': int(np.array_split(changed[phase_arr == k], 2)[1]
                                              .sum())}
                 for k, busy in enumerate(phases) if (phase_arr == k).any()]
    steady_per_minute = sum(p['switches_second_half'] for p in per_phase) / (
        len(per_phase) * args.phase_s / 2 / 60)
    report = {'budget_ms': args.budget_ms, 'per_phase': per_phase, 'phases': phases,
              'phase_s': args.phase_s,
              'switches_per_minute': round(switches / minutes, 2),
              'switches_per_minute_settled': round(steady_per_minute, 2),
              'guard_stops': pipe.counts.guard_stops, 'settings': rows,
              'points_used': {p: chosen.count(p) for p in dict.fromkeys(chosen)},
              'frames_per_thread_count': {str(t): threads_used.count(t)
                                          for t in sorted(set(threads_used))},
              'adaptive_series': [{'phase': int(k), 'threads': int(t), 'latency_ms':
                                   round(float(v), 2), 'point': p} for k, t, v, p in
                                  zip(phase_of, threads_used, adaptive, chosen)]}
    print('| setting | frames | deadline hits | p50 ms | p95 ms | p99 ms | mIoU |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['setting']} | {r['frames']} | {r['deadline_hit_rate'] * 100:.1f}% | "
              f"{r['latency_ms_p50']} | {r['latency_ms_p95']} | {r['latency_ms_p99']} | "
              f"{r['miou']} |")
    print('adaptive deadline hits per phase: ' + ', '.join(
        f"{p['busy']} busy {p['adaptive_deadline_hit_rate'] * 100:.1f}% of {p['frames']} "
        f"({p['switches']} switches)"
        for p in per_phase))
    print(f"switches per minute: {report['switches_per_minute']} "
          f"({report['switches_per_minute_settled']} in the second half of each phase), "
          f"guard stops: "
          f"{report['guard_stops']}, frames per thread count: "
          f"{report['frames_per_thread_count']}")
    Path(args.json).write_text(json.dumps(report, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
