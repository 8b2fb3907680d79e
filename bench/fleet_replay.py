"""Fleet replay on this machine: 24 bags of 10 CamVid val frames each through
``ee-seg replay FOLDER`` with ``--jobs 1``, ``--jobs 2`` and ``--ray`` (a local Ray), at a fixed
policy so the three runs must give identical confusion matrices; the per-bag overhead of a Ray
task against replaying the same bag inside one process; the memory of each worker.

    python bench/fleet_replay.py --images ../shared/data/camvid/val \
        --labels ../shared/data/camvid/valannot --json fleet_replay.json

Ray is only ever started inside a network namespace that holds nothing but loopback
(``unshare -n``, then ``ip link set lo up``, which needs root); without one the Ray rows are
skipped and the JSON says why.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_bags(images: Path, labels: Path, folder: Path, bags: int, frames: int) -> None:
    """``bags`` bags of ``frames`` consecutive frames (wrapping round the split)."""
    from ee_seg_ros.replay.make_bag import bag_from_images
    names = sorted(p.name for p in images.iterdir() if p.suffix == '.png')
    for b in range(bags):
        part = [names[(b * frames + i) % len(names)] for i in range(frames)]
        src = folder.parent / 'parts' / f'b{b:02d}'
        for sub, origin in ((src, images), (Path(f'{src}annot'), labels)):
            sub.mkdir(parents=True)
            for n in part:
                shutil.copy(origin / n, sub / n)
        bag_from_images(src, folder / f'drive_{b:02d}', Path(f'{src}annot'), rate=10)


def namespace_problem() -> str | None:
    if not all(shutil.which(t) for t in ('unshare', 'ip')):
        return 'unshare or ip is not installed'
    probe = subprocess.run(['unshare', '-n', 'sh', '-c', 'ip link set lo up'],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f'no loopback-only namespace: {probe.stderr}'


def in_namespace(cmd: list[str]) -> list[str]:
    return ['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"', *cmd]


def watch(cmd: list[str], worker_match) -> dict:
    """Run ``cmd``; its wall time, exit code, and the peak resident memory of each process
    below it that ``worker_match(cmdline)`` calls a worker (polled every 0.2 s)."""
    import psutil
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak: dict[int, float] = {}
    others: dict[int, float] = {}
    me = psutil.Process(proc.pid)
    driver = 0.0
    while proc.poll() is None:
        try:
            driver = max(driver, me.memory_info().rss / 2**20)
            for child in me.children(recursive=True):
                try:
                    line = ' '.join(child.cmdline())
                    rss = child.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                book = peak if worker_match(line) else others
                book[child.pid] = max(book.get(child.pid, 0.0), rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - start
    text = proc.stdout.read()
    return {'wall_s': round(wall, 2), 'exit_code': proc.returncode, 'output_tail': text[-600:],
            'driver_peak_rss_mb': round(driver, 1),
            'worker_peak_rss_mb': sorted(round(v, 1) for v in peak.values()),
            'other_processes_peak_rss_mb_sum': round(sum(others.values()), 1)}


RAY_OVERHEAD = r'''
import json, sys, time
from pathlib import Path
import ray
from ee_seg_ros.replay import fleet_ray
from ee_seg_ros.replay.fleet import FleetSettings, discover, replay_job
from ee_seg_ros.replay.run import ReplayOptions
bags, out, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
jobs = discover([bags])[:int(sys.argv[4])]
settings = FleetSettings(ReplayOptions(policy='full', budget_ms=1e4), threads=threads)
from ee_seg_ros.bundle import default_bundle_path
import hashlib
fleet_ray.connect(None)
path = default_bundle_path()
box = [ray.put(fleet_ray._bundle_files(path)),
       hashlib.sha256((path / 'manifest.json').read_bytes()).hexdigest()[:16]]
task = fleet_ray._bag_task.options(num_cpus=threads)
rows = []
for job in jobs:                                     # one task at a time: overhead alone
    t0 = time.perf_counter()
    outcome = ray.get(task.remote(job, settings, str(out / 'ray'), box))
    rows.append({'bag': job.name, 'round_trip_s': time.perf_counter() - t0,
                 'in_task_s': outcome.wall_s, 'status': outcome.status})
ray.shutdown()
(out / 'inproc').mkdir()
local = []
for job in jobs:                                     # the same bags inside this process
    outcome = replay_job(job, settings, out / 'inproc')
    local.append(outcome.wall_s)
print(json.dumps({'ray': rows, 'in_process_s': local}))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--images', required=True)
    parser.add_argument('--labels', required=True)
    parser.add_argument('--bags', type=int, default=24)
    parser.add_argument('--frames', type=int, default=10)
    parser.add_argument('--jobs1-threads', type=int, default=2,
                        help='inference threads of the --jobs 1 run (1 on a busy machine, '
                             'where two threads stall each other)')
    parser.add_argument('--overhead-bags', type=int, default=8,
                        help='bags replayed one at a time for the Ray task overhead')
    parser.add_argument('--engines', default='jobs1,jobs2,ray',
                        help='which runs: any of jobs1, jobs2, ray')
    parser.add_argument('--no-overhead', action='store_true',
                        help='skip the one-task-at-a-time Ray overhead probe')
    parser.add_argument('--json', default='fleet_replay.json')
    args = parser.parse_args()
    import numpy as np
    tmp = Path(tempfile.mkdtemp(prefix='fleet_bench_'))
    try:
        make_bags(Path(args.images), Path(args.labels), tmp / 'drives', args.bags, args.frames)
        total = args.bags * args.frames
        base = [sys.executable, '-m', 'ee_seg_ros.cli', 'replay', str(tmp / 'drives'),
                '--policy', 'full', '--budget-ms', '10000', '--quiet']
        problem = namespace_problem()
        t1 = str(args.jobs1_threads)
        runs = {f'jobs 1, {t1} thread(s)': (['--jobs', '1', '--threads', t1], False, 'jobs1'),
                'jobs 2, 1 thread each': (['--jobs', '2', '--threads', '1'], False, 'jobs2'),
                'ray (local, 2 tasks of 1 thread)': (['--ray', '--threads', '1'], True, 'ray')}
        wanted = set(args.engines.split(','))
        runs = {k: v[:2] for k, v in runs.items() if v[2] in wanted}
        result = {'jobs1_threads': args.jobs1_threads, 'bags': args.bags,
                  'frames_per_bag': args.frames, 'frames': total,
                  'cpus': os.cpu_count(), 'loadavg_start': os.getloadavg(), 'runs': {}}
        confusions = {}
        for name, (extra, ray) in runs.items():
            if ray and problem:
                result['runs'][name] = {'skipped': problem}
                continue
            out = tmp / f'out_{len(confusions)}'
            cmd = [*base, '--out', str(out), *extra]
            cmd = in_namespace(cmd) if ray else cmd
            # Ray renames its workers' process titles to ray::IDLE / ray::<task name>
            match = ((lambda c: c.startswith('ray::') or 'default_worker.py' in c) if ray
                     else (lambda c: 'multiprocessing' in c and 'spawn' in c
                           and 'resource_tracker' not in c))
            row = watch(cmd, match)
            if row['exit_code'] == 0:
                report = json.loads((out / 'report.json').read_text())
                confusions[name] = report['confusion_matrix']
                row.update(frames_processed=report['frames_processed'], miou=report['miou'],
                           frames_per_s=round(report['frames_processed'] / row['wall_s'], 2),
                           latency_ms_p50=report['latency_ms_p50'],
                           bags_ok=report['bags_ok'])
            if not ray and extra[1] == '1':          # jobs 1: the whole fleet in one process
                row['worker_peak_rss_mb'] = [row['driver_peak_rss_mb']]
            result['runs'][name] = row
            print(name, json.dumps({k: v for k, v in row.items() if k != 'output_tail'}),
                  flush=True)
        first = next(iter(confusions.values()), None)
        result['identical_confusion_matrices'] = (
            all(c == first for c in confusions.values()) if len(confusions) > 1 else None)
        if not problem and not args.no_overhead:
            script = tmp / 'overhead.py'
            script.write_text(RAY_OVERHEAD)
            (tmp / 'ovh').mkdir()
            done = subprocess.run(in_namespace([sys.executable, str(script),
                                                str(tmp / 'drives'), str(tmp / 'ovh'), '1',
                                                str(args.overhead_bags)]),
                                  capture_output=True, text=True,
                                  env={**os.environ, 'PYTHONPATH': str(REPO)})
            if done.returncode != 0:
                result['ray_overhead'] = {'error': done.stderr[-1500:]}
            else:
                data = json.loads(done.stdout.strip().splitlines()[-1])
                rows = data['ray'][1:]           # the first task also loads the model
                over = [r['round_trip_s'] - r['in_task_s'] for r in rows]
                ray_bag = [r['round_trip_s'] for r in rows]
                local = data['in_process_s'][1:]
                frame_s = float(np.median(local)) / args.frames
                result['ray_overhead'] = {
                    'threads': 1, 'bags_measured': len(rows),
                    'task_overhead_ms_median': round(float(np.median(over)) * 1e3, 1),
                    'task_overhead_ms_max': round(float(np.max(over)) * 1e3, 1),
                    'ray_bag_s_median': round(float(np.median(ray_bag)), 3),
                    'in_process_bag_s_median': round(float(np.median(local)), 3),
                    'overhead_vs_frame_time_at_10_frames': round(
                        float(np.median(over)) / (frame_s * args.frames), 4),
                    'ray_vs_in_process_bag_time': round(
                        float(np.median(ray_bag)) / float(np.median(local)) - 1.0, 4)}
            print('ray overhead', json.dumps(result['ray_overhead']), flush=True)
        result['loadavg_end'] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + '\n')
    print(json.dumps({k: v for k, v in result.items() if k != 'runs'}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
