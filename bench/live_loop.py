"""The real-ROS loop against offline replay, and where the live loop's time goes (needs
rosbag2 and a sourced ROS 2 with this package on its path).

Runs ``ros2 launch ee_seg_ros replay.launch.py`` on a bag while sampling the CPU time of the
player, the recorder, the node, the launch process and everything else on the machine; then
``ee-seg score`` of the recording, ``ee-seg replay --timing realtime`` of the same bag, and
the comparison with the deadline gap split into its parts (``ee_seg_ros.replay.gap``).
``--runs N`` repeats the live loop and each offline timing N times, interleaved, so the spread
between runs of one kind stands beside the gap between kinds.

    python bench/live_loop.py BAG --budget-ms 60 --runs 3 --out runs/live_loop

Writes OUT/live_loop.json and prints the tables. Loopback only: the Fast DDS profile in
config/ and a domain id of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLES = ('player', 'recorder', 'node', 'launch')
# the node's threads by name (ee_seg_ros/ros/threads.py; Fast DDS names its own dds.*)
NODE_THREADS = ('inference', 'executor', 'middleware')


def role_of(cmdline: list[str]) -> str | None:
    """Which part of the loop a process started by the launch is."""
    words = ' '.join(cmdline)
    if ' bag play' in words:
        return 'player'
    if ' bag record' in words:
        return 'recorder'
    if 'segmenter' in words or 'ee_seg_ros.ros.main' in words:
        return 'node'
    return None


def thread_group(name: str) -> str:
    """Which of NODE_THREADS a thread of the node is: the main thread and the unnamed ones
    (PyTorch's OpenMP workers) run inference."""
    if name.startswith('ee.'):
        return 'executor'
    if name.startswith('dds.'):
        return 'middleware'
    return 'inference'


def node_thread_cpu(proc) -> dict[str, float]:
    """CPU seconds of the node's threads, summed by NODE_THREADS group."""
    out = dict.fromkeys(NODE_THREADS, 0.0)
    for t in proc.threads():
        try:
            name = Path(f'/proc/{proc.pid}/task/{t.id}/comm').read_text().strip()
        except OSError:
            continue     # the thread has ended
        out[thread_group(name)] += t.user_time + t.system_time
    return out


def minor_faults(pid: int) -> int:
    """The process's minor page faults so far (/proc/PID/stat, field 10)."""
    try:
        return int(Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[7])
    except (OSError, IndexError, ValueError):
        return 0


class CpuSampler(threading.Thread):
    """CPU seconds of each role and of the whole machine, while the player plays (from
    ``delay_s`` after the player appears, when its first message goes out, to its exit)."""

    def __init__(self, root_pid: int, delay_s: float, period_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        import psutil
        self.psutil, self.root = psutil, psutil.Process(root_pid)
        self.delay_s, self.period_s = delay_s, period_s
        self.stop = threading.Event()
        self.start_snap: dict | None = None
        self.end_snap: dict | None = None
        self._player_seen: float | None = None

    def _snapshot(self) -> dict:
        cpu: dict[str, float] = dict.fromkeys(ROLES, 0.0)
        threads = dict.fromkeys(NODE_THREADS, 0.0)
        faults = 0
        player = False
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            procs = []
        for p in procs:
            try:
                role = 'launch' if p.pid == self.root.pid else role_of(p.cmdline())
                t = p.cpu_times()
                if role == 'node':
                    threads = node_thread_cpu(p)
                    faults = minor_faults(p.pid)
            except self.psutil.Error:
                continue
            if role is not None:
                cpu[role] += t.user + t.system + t.children_user + t.children_system
                player |= role == 'player'
        m = self.psutil.cpu_times()
        busy = m.user + m.system + m.nice + m.irq + m.softirq + getattr(m, 'steal', 0.0)
        return {'time': time.monotonic(), 'cpu': cpu, 'machine_busy': busy,
                'player': player, 'threads': threads, 'node_faults': faults}

    def run(self) -> None:
        while not self.stop.is_set():
            snap = self._snapshot()
            if snap['player']:
                if self._player_seen is None:
                    self._player_seen = snap['time']
                if self.start_snap is None and snap['time'] >= self._player_seen + self.delay_s:
                    self.start_snap = snap
                if self.start_snap is not None:
                    self.end_snap = snap
            elif self.end_snap is not None:
                return          # the player has exited
            self.stop.wait(self.period_s)

    def shares(self) -> dict | None:
        """Each role's share of the machine (1.0 = every core) over the play window."""
        a, b = self.start_snap, self.end_snap
        if a is None or b is None or b['time'] <= a['time']:
            return None
        capacity = (b['time'] - a['time']) * (self.psutil.cpu_count() or 1)
        out = {r: round((b['cpu'][r] - a['cpu'][r]) / capacity, 4) for r in ROLES}
        busy = (b['machine_busy'] - a['machine_busy']) / capacity
        out['everything else'] = round(max(busy - sum(out.values()), 0.0), 4)
        out['window_s'] = round(b['time'] - a['time'], 2)
        out['node_minor_faults'] = b['node_faults'] - a['node_faults']
        out['node_threads_cpu_s'] = {g: round(b['threads'][g] - a['threads'][g], 3)
                                     for g in NODE_THREADS}
        return out


def machine() -> str:
    from ee_seg_ros.points import machine_description
    return machine_description(os.cpu_count() or 1)


def live_run(args, out: Path, env: dict) -> dict | None:
    """One ``replay.launch.py`` loop and ``ee-seg score`` of its recording; the report with
    the CPU shares added, or None when the launch failed."""
    launch_cmd = ['ros2', 'launch', 'ee_seg_ros', 'replay.launch.py', f'bag:={args.bag}',
                  f'record:={out / "recorded"}', f'latency_budget_ms:={args.budget_ms}',
                  f'cpu_load_source:={args.cpu_load_source}',
                  f'play_delay_s:={args.play_delay_s}']
    if args.params_file:
        launch_cmd.append(f'params_file:={args.params_file}')
    elif args.threads:
        out.mkdir(parents=True)
        params = out / 'threads.yaml'
        params.write_text(f'/**:\n  ros__parameters:\n    model.threads: {args.threads}\n')
        launch_cmd.append(f'params_file:={params}')
    launch_cmd += args.launch_arg
    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'launch.log', 'w') as log:
        launch = subprocess.Popen(launch_cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        sampler = CpuSampler(launch.pid, args.play_delay_s)
        sampler.start()
        try:
            code = launch.wait(timeout=args.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGINT)
            code = launch.wait(timeout=60)
        sampler.stop.set()
        sampler.join(5)
    if code != 0:
        print(f'live_loop: ros2 launch exited with {code}; see {out / "launch.log"}',
              file=sys.stderr)
        return None
    run_cli(['score', str(out / 'recorded'), '--labels', args.bag, '--out',
             str(out / 'online')], env)
    report = json.loads((out / 'online' / 'report.json').read_text())
    shares = sampler.shares()
    threads_s = shares.pop('node_threads_cpu_s') if shares else None
    faults = shares.pop('node_minor_faults') if shares else None
    report['node_minor_faults_per_frame'] = (
        round(faults / max(report['frames_processed'], 1), 1) if faults is not None else None)
    report['cpu_share_while_playing'] = shares
    # the play window holds every frame: it opens as the player sends its first message
    report['node_thread_cpu_ms_per_frame'] = {
        g: round(v * 1e3 / max(report['frames_processed'], 1), 2)
        for g, v in threads_s.items()} if threads_s else None
    return report


def offline_run(args, timing: str, out: Path, env: dict) -> dict:
    run_cli(['replay', args.bag, '--budget-ms', str(args.budget_ms), '--timing', timing,
             '--out', str(out), '--quiet', '--threads', str(args.threads or 2)], env)
    return json.loads((out / 'report.json').read_text())


def run_cli(argv: list[str], env: dict) -> None:
    subprocess.run([sys.executable, '-m', 'ee_seg_ros.cli', *argv], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def pooled(reports: list[dict]) -> dict:
    """Several runs of one kind as one report for the gap split (every frame of every run)."""
    series = [f for r in reports for f in r['series']]
    return {'budget_ms': reports[0]['budget_ms'], 'series': series,
            'deadline_hit_rate': sum(f['total_ms'] <= reports[0]['budget_ms']
                                     for f in series) / len(series)}


def inference_by_point(reports: list[dict]) -> dict[str, dict]:
    """Mean inference per (point, inference threads) over the runs: the CPU-load tier sets the
    threads, so one point's latency is only comparable within a tier."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in reports:
        for f in r['series']:
            by[f"{f['point']} ({'1 thread' if f['cpu_tier'] == 'high' else 'all threads'})"
               ].append(f['latency_ms'])
    return {k: {'frames': len(v), 'mean_ms': round(sum(v) / len(v), 2)} for k, v in by.items()}


def mean_of(dicts: list[dict | None]) -> dict | None:
    """Key by key mean of the runs' figures (runs without them left out)."""
    have = [d for d in dicts if d]
    return {k: round(sum(d[k] for d in have) / len(have), 4) for k in have[0]} if have else None


def spread(values: list[float]) -> dict:
    return {'mean': round(sum(values) / len(values), 4), 'min': min(values),
            'max': max(values), 'runs': values}


FIGURES = ('frames_in_bag', 'frames_lost', 'frames_received', 'frames_processed',
           'deadline_hit_rate', 'miou', 'gmacs_mean', 'latency_ms_p50', 'latency_ms_p95',
           'total_ms_p50', 'total_ms_p95')


def summary(reports: list[dict]) -> dict:
    out = {k: spread([r[k] for r in reports]) for k in FIGURES
           if all(r.get(k) is not None for r in reports)}
    splits = [r['time_split_ms'] for r in reports if r.get('time_split_ms')]
    out['time_split_ms'] = {k: round(sum(s[k] for s in splits) / len(splits), 3)
                            for k in splits[0]} if splits else None
    points: dict[str, int] = defaultdict(int)
    for r in reports:
        for p, n in r['operating_points_used'].items():
            points[p] += n
    out['operating_points_used'] = dict(sorted(points.items(), key=lambda kv: -kv[1]))
    out['inference_by_point'] = inference_by_point(reports)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', help='bag with camera frames (and labels) to play')
    parser.add_argument('--budget-ms', type=float, default=60.0)
    parser.add_argument('--runs', type=int, default=1, help='repeats of each kind of run')
    parser.add_argument('--offline-timings', default='realtime,paced',
                        help='ee-seg replay --timing values to compare with (comma-separated)')
    parser.add_argument('--out', default='runs/live_loop', help='new folder for the outputs')
    parser.add_argument('--cpu-load-source', default='topic+local',
                        help="the node's cpu_load.source in the loop (replay.launch.py's "
                             'default: topic+local)')
    parser.add_argument('--params-file', help='node parameters (default: the package\'s)')
    parser.add_argument('--threads', type=int, default=0,
                        help='inference threads of the node (model.threads, through a params '
                             'file of its own) and of the offline replays; 0: the defaults (2)')
    parser.add_argument('--play-delay-s', type=float, default=5.0)
    parser.add_argument('--launch-arg', action='append', default=[], metavar='NAME:=VALUE',
                        help='another replay.launch.py argument (repeatable)')
    parser.add_argument('--timeout-s', type=float, default=900.0)
    args = parser.parse_args()
    out = Path(args.out)
    timings = [t for t in args.offline_timings.split(',') if t]
    if out.exists():
        print(f'live_loop: {out} exists; give a new folder', file=sys.stderr)
        return 2
    if args.threads and args.params_file:
        print('live_loop: give --threads or --params-file, not both (set model.threads in the '
              'file)', file=sys.stderr)
        return 2
    if shutil.which('ros2') is None or subprocess.run(
            ['ros2', 'bag', '--help'], capture_output=True).returncode != 0:
        print('live_loop: `ros2 bag` is not available (source a ROS 2 with rosbag2)',
              file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE', str(ROOT / 'config' / 'fastdds_loopback.xml'))
    env.setdefault('ROS_DOMAIN_ID', '78')
    env.pop('ROS_AUTOMATIC_DISCOVERY_RANGE', None)   # see test/test_node.py

    runs: dict[str, list[dict]] = {'live': [], **{t: [] for t in timings}}
    for i in range(args.runs):        # interleaved, so a slow spell of the machine hits all
        live = live_run(args, out / f'live{i}', env)
        if live is None:
            return 1
        runs['live'].append(live)
        for t in timings:
            runs[t].append(offline_run(args, t, out / f'{t}{i}', env))
        print(f'run {i + 1}/{args.runs}: live {live["deadline_hit_rate"] * 100:.1f}% '
              f'mIoU {live["miou"]}; ' + ', '.join(
                  f'{t} {runs[t][-1]["deadline_hit_rate"] * 100:.1f}% mIoU '
                  f'{runs[t][-1]["miou"]}' for t in timings), flush=True)

    from ee_seg_ros.replay.gap import GapPart, GapSplit, format_split, split_deadline_gap
    shares = [r['cpu_share_while_playing'] for r in runs['live'] if r['cpu_share_while_playing']]
    result = {
        'machine': machine(), 'bag': args.bag, 'budget_ms': args.budget_ms, 'runs': args.runs,
        'cpu_load_source': args.cpu_load_source, 'launch_args': args.launch_arg,
        'threads': args.threads or 2,
        'cpu_share_while_playing': mean_of(shares),
        'keep_freed_memory': os.environ.get('EE_SEG_KEEP_FREED_MEMORY', '1') != '0',
        'node_minor_faults_per_frame': spread(
            [r['node_minor_faults_per_frame'] for r in runs['live']
             if r['node_minor_faults_per_frame'] is not None] or [0.0]),
        'node_thread_cpu_ms_per_frame': mean_of(
            [r['node_thread_cpu_ms_per_frame'] for r in runs['live']]),
        'summary': {kind: summary(reports) for kind, reports in runs.items()},
        'deadline_gap': {t: asdict(split_deadline_gap(pooled(runs['live']), pooled(runs[t])))
                         for t in timings},
    }
    (out / 'live_loop.json').write_text(json.dumps(result, indent=1) + '\n')

    kinds = list(runs)
    print(f'\n{args.runs} run(s) of each, budget {args.budget_ms} ms; mean (min-max):')
    print('| figure | ' + ' | '.join(('live node' if k == 'live' else f'offline {k}')
                                    for k in kinds) + ' |')
    print('|---|' + '---|' * len(kinds))
    for k in ('frames_lost', 'deadline_hit_rate', 'miou', 'gmacs_mean', 'latency_ms_p50',
              'latency_ms_p95'):
        cells = []
        for kind in kinds:
            v = result['summary'][kind].get(k)
            cells.append('' if v is None else f"{v['mean']:g} ({v['min']:g}-{v['max']:g})")
        print(f'| {k} | ' + ' | '.join(cells) + ' |')
    for part in ('transport', 'dispatch', 'queue', 'decode', 'inference', 'output', 'total'):
        print(f'| mean {part} (ms) | ' + ' | '.join(
            str((result['summary'][kind]['time_split_ms'] or {}).get(part, ''))
            for kind in kinds) + ' |')
    print('\ninference by point, mean ms (frames):')
    names = sorted({p for kind in kinds for p in result['summary'][kind]['inference_by_point']})
    print('| point | ' + ' | '.join(kinds) + ' |\n|---|' + '---|' * len(kinds))
    for name in names:
        cells = []
        for kind in kinds:
            v = result['summary'][kind]['inference_by_point'].get(name)
            cells.append('' if v is None else f"{v['mean_ms']} ({v['frames']})")
        print(f'| {name} | ' + ' | '.join(cells) + ' |')
    for t in timings:
        g = result['deadline_gap'][t]
        print(f'\ndeadline gap, live against offline {t} (all runs pooled):')
        print(format_split(GapSplit(**{**g, 'parts': [GapPart(**p) for p in g['parts']]})))
    if result['cpu_share_while_playing']:
        s = result['cpu_share_while_playing']
        print(f'\nCPU while the bag played (share of all cores, mean over runs, '
              f'{s["window_s"]} s windows):')
        print('| ' + ' | '.join(k for k in s if k != 'window_s') + ' |')
        print('|' + '---|' * (len(s) - 1))
        print('| ' + ' | '.join(f'{v * 100:.1f}%' for k, v in s.items() if k != 'window_s')
              + ' |')
    if result['node_thread_cpu_ms_per_frame']:
        t = result['node_thread_cpu_ms_per_frame']
        print("\nthe node's CPU per frame by thread (ms, mean over runs): " + ', '.join(
            f'{g} {v:g}' for g, v in t.items()))
        f = result['node_minor_faults_per_frame']
        print(f"the node's minor page faults per frame: {f['mean']:g} ({f['min']:g}-{f['max']:g})"
              f"; freed memory kept: {result['keep_freed_memory']} (EE_SEG_KEEP_FREED_MEMORY)")
    print(f'\n{machine()}; results in {out / "live_loop.json"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
