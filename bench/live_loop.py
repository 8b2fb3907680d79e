"""The real-ROS loop against offline replay, and where the live loop's time goes (needs
rosbag2 and a sourced ROS 2 with this package on its path).

Runs ``ros2 launch ee_seg_ros replay.launch.py`` on a bag while sampling the CPU time of the
player, the recorder, the node, the launch process and everything else on the machine; then
``ee-seg score`` of the recording, ``ee-seg replay --timing realtime`` of the same bag, and
the comparison with the deadline gap split into its parts (``ee_seg_ros.replay.gap``).

    python bench/live_loop.py BAG --budget-ms 60 --out runs/live_loop

Writes OUT/live_loop.json and prints the tables. Loopback only: the Fast DDS profile in
config/ and a domain id of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLES = ('player', 'recorder', 'node', 'launch')


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
        player = False
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            procs = []
        for p in procs:
            try:
                role = 'launch' if p.pid == self.root.pid else role_of(p.cmdline())
                t = p.cpu_times()
            except self.psutil.Error:
                continue
            if role is not None:
                cpu[role] += t.user + t.system + t.children_user + t.children_system
                player |= role == 'player'
        m = self.psutil.cpu_times()
        busy = m.user + m.system + m.nice + m.irq + m.softirq + getattr(m, 'steal', 0.0)
        return {'time': time.monotonic(), 'cpu': cpu, 'machine_busy': busy,
                'player': player}

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
        return out


def machine() -> str:
    from ee_seg_ros.points import machine_description
    return machine_description(os.cpu_count() or 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', help='bag with camera frames (and labels) to play')
    parser.add_argument('--budget-ms', type=float, default=60.0)
    parser.add_argument('--out', default='runs/live_loop', help='new folder for the outputs')
    parser.add_argument('--cpu-load-source', default='topic+local',
                        help="the node's cpu_load.source in the loop (replay.launch.py's "
                             'default: topic+local)')
    parser.add_argument('--params-file', help='node parameters (default: the package\'s)')
    parser.add_argument('--play-delay-s', type=float, default=5.0)
    parser.add_argument('--timeout-s', type=float, default=900.0)
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        print(f'live_loop: {out} exists; give a new folder', file=sys.stderr)
        return 2
    if subprocess.run(['ros2', 'bag', '--help'], capture_output=True).returncode != 0:
        print('live_loop: `ros2 bag` is not available (source a ROS 2 with rosbag2)',
              file=sys.stderr)
        return 2
    out.mkdir(parents=True)
    env = dict(os.environ)
    env.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE', str(ROOT / 'config' / 'fastdds_loopback.xml'))
    env.setdefault('ROS_DOMAIN_ID', '78')
    env.pop('ROS_AUTOMATIC_DISCOVERY_RANGE', None)   # see test/test_node.py

    launch_cmd = ['ros2', 'launch', 'ee_seg_ros', 'replay.launch.py', f'bag:={args.bag}',
                  f'record:={out / "recorded"}', f'latency_budget_ms:={args.budget_ms}',
                  f'cpu_load_source:={args.cpu_load_source}',
                  f'play_delay_s:={args.play_delay_s}']
    if args.params_file:
        launch_cmd.append(f'params_file:={args.params_file}')
    t0 = time.monotonic()
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
    loop_s = time.monotonic() - t0
    if code != 0:
        print(f'live_loop: ros2 launch exited with {code}; see {out / "launch.log"}',
              file=sys.stderr)
        return 1
    cli = [sys.executable, '-m', 'ee_seg_ros.cli']
    subprocess.run(cli + ['score', str(out / 'recorded'), '--labels', args.bag, '--out',
                          str(out / 'online')], check=True, env=env)
    subprocess.run(cli + ['replay', args.bag, '--budget-ms', str(args.budget_ms), '--timing',
                          'realtime', '--out', str(out / 'offline'), '--quiet'],
                   check=True, env=env)
    subprocess.run(cli + ['compare', str(out / 'online'), str(out / 'offline'), '--json',
                          str(out / 'compare.json')], env=env)

    from ee_seg_ros.replay.gap import split_deadline_gap
    online = json.loads((out / 'online' / 'report.json').read_text())
    offline = json.loads((out / 'offline' / 'report.json').read_text())
    shares = sampler.shares()
    result = {
        'machine': machine(), 'bag': args.bag, 'budget_ms': args.budget_ms,
        'cpu_load_source': args.cpu_load_source, 'loop_wall_s': round(loop_s, 1),
        'cpu_share_while_playing': shares,
        'time_split_ms': {'online': online.get('time_split_ms'),
                          'offline': offline.get('time_split_ms')},
        'deadline_gap': asdict(split_deadline_gap(online, offline)),
        **{f'{k}_{side}': rep.get(k) for side, rep in (('online', online),
                                                       ('offline', offline))
           for k in ('frames_in_bag', 'frames_lost', 'frames_received', 'frames_processed',
                     'frames_dropped', 'deadline_hit_rate', 'latency_ms_p50',
                     'latency_ms_p95', 'total_ms_p50', 'total_ms_p95', 'miou', 'gmacs_mean',
                     'operating_points_used')},
    }
    (out / 'live_loop.json').write_text(json.dumps(result, indent=1) + '\n')
    if shares:
        print('\nCPU while the bag played (share of all cores, over '
              f'{shares["window_s"]} s):')
        print('| ' + ' | '.join(k for k in shares if k != 'window_s') + ' |')
        print('|' + '---|' * (len(shares) - 1))
        print('| ' + ' | '.join(f'{v * 100:.1f}%' for k, v in shares.items()
                                if k != 'window_s') + ' |')
    print(f'\n{machine()}; results in {out / "live_loop.json"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
