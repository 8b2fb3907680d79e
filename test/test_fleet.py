"""Fleet replay: bag discovery, local processes and Ray, one exact merged report, faults kept
with their bag, interruption and --resume.

Ray runs only inside a network namespace that holds nothing but loopback (``unshare -n``,
then ``ip link set lo up``); where no namespace can be made the Ray tests skip."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ee_seg_ros.cli import main as ee_seg
from ee_seg_ros.replay.bagio import BATTERY, BagWriter
from ee_seg_ros.replay.fleet import FAULT_ENV, BagOutcome, discover
from ee_seg_ros.replay.make_bag import bag_from_images

SIZE = (72, 100)
POLICY = 'cbt:0.3,0.8'
REPO = Path(__file__).resolve().parents[1]


def _split(src: Path, names: list[str], dst: Path) -> None:
    for sub, suffix in ((dst, ''), (Path(str(dst) + 'annot'), 'annot')):
        sub.mkdir(parents=True)
        for n in names:
            shutil.copy(Path(str(src) + suffix) / n, sub / n)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    from conftest import calibrated_tiny_bundle
    root = tmp_path_factory.mktemp('fleet')
    bundle = calibrated_tiny_bundle(root, SIZE, 7, val_seed=2)
    names = sorted(p.name for p in (root / 'data' / 'val').iterdir())
    parts = [names[:3], names[3:4], names[4:]]           # 3 + 1 + 3 frames: unequal bags
    drives = root / 'drives'
    for i, part in enumerate(parts):
        _split(root / 'data' / 'val', part, root / 'parts' / f'p{i}')
    bag_from_images(root / 'parts' / 'p0', drives / 'robot1' / 'monday',
                    root / 'parts' / 'p0annot', rate=5, battery_trace='drain:0.5,0.05')
    bag_from_images(root / 'parts' / 'p1', drives / 'robot1' / 'tuesday',
                    root / 'parts' / 'p1annot', rate=5)
    mcap = bag_from_images(root / 'parts' / 'p2', root / 'mcap_bag', root / 'parts' / 'p2annot',
                           rate=5, storage='mcap', compressed=True)
    (drives / 'robot2').mkdir()
    shutil.copy(next(mcap.glob('*.mcap')), drives / 'robot2' / 'wednesday.mcap')  # loose file
    whole = bag_from_images(root / 'data' / 'val', root / 'whole', root / 'data' / 'valannot',
                            rate=5)
    return {'root': root, 'bundle': bundle, 'drives': drives, 'whole': whole}


def bad_bags(world, where: Path) -> None:
    """A truncated bag and a bag without a camera topic, beside the good ones."""
    broken = where / 'broken'
    shutil.copytree(world['drives'] / 'robot1' / 'monday', broken)
    db = next(broken.glob('*.db3'))
    db.write_bytes(db.read_bytes()[:3000])
    w = BagWriter(where / 'nocamera')
    T = w.ts.types
    msg = T[BATTERY](header=w.header(1, 'base'), voltage=12.0, temperature=20.0, current=1.0,
                     charge=1.0, capacity=1.0, design_capacity=1.0, percentage=0.5,
                     power_supply_status=0, power_supply_health=0, power_supply_technology=0,
                     present=True, cell_voltage=np.zeros(0, np.float32),
                     cell_temperature=np.zeros(0, np.float32), location='', serial_number='')
    w.write('/battery_state', BATTERY, 1, msg)
    w.close()


def fleet(world, out, *extra, inputs=None, env=None):
    args = ['replay', *(map(str, inputs or [world['drives']])), '--out', str(out), '--model',
            str(world['bundle']), '--quiet', '--threads', '1', '--policy', POLICY, *extra]
    if env is None:
        return ee_seg(args)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return ee_seg(args)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def load(path):
    return json.loads(Path(path).read_text())


def test_discovery_finds_folders_and_loose_files_with_unique_names(world, tmp_path):
    jobs = discover([world['drives'], world['whole'], world['whole']])
    assert [j.name for j in jobs] == ['robot1__monday', 'robot1__tuesday', 'robot2__wednesday',
                                      'whole']
    assert ee_seg(['replay', str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')]) == 2
    (tmp_path / 'empty').mkdir()
    assert ee_seg(['replay', str(tmp_path / 'empty'), '--out', str(tmp_path / 'o')]) == 2
    drives = str(world['drives'])
    assert ee_seg(['replay', drives, '--out', str(tmp_path / 'o'), '--ray', '--jobs', '2']) == 2
    (tmp_path / 'plain').mkdir()
    assert ee_seg(['replay', drives, '--out', str(tmp_path / 'plain'), '--resume']) == 2
    assert ee_seg(['replay', drives, '--out', str(world['drives'] / 'x')]) == 2  # inside input
    # a folder written by ee-seg (it holds output bags) is not searched for drives
    (tmp_path / 'scan').mkdir()
    shutil.copytree(world['whole'], tmp_path / 'scan' / 'drive')
    drive = tmp_path / 'scan' / 'drive'
    assert fleet(world, tmp_path / 'scan' / 'old', inputs=[drive, drive]) == 0
    assert [j.name for j in discover([tmp_path / 'scan'])] == ['drive']


def test_bad_bags_fail_alone_and_merged_figures_equal_one_bag(world, tmp_path, capsys):
    drives = tmp_path / 'drives'
    shutil.copytree(world['drives'], drives)
    bad_bags(world, drives)
    out = tmp_path / 'fleet'
    assert fleet(world, out, '--jobs', '2', inputs=[drives]) == 3
    printed = capsys.readouterr().out
    r = load(out / 'report.json')
    status = {b['name']: (b['status'], b['reason']) for b in r['bags']}
    assert status['broken'][0] == 'failed' and 'broken' in status['broken'][1]
    assert status['nocamera'][0] == 'failed' and 'no Image or' in status['nocamera'][1]
    assert all('\n' not in (reason or '') for _, reason in status.values())
    assert sum(s == 'ok' for s, _ in status.values()) == 3 and r['bags_failed'] == 2
    assert 'failed: ' in printed and 'nocamera' in printed
    # the three good bags, merged, are the whole split replayed as one bag
    assert fleet(world, tmp_path / 'one', inputs=[world['whole'], world['whole']]) == 0
    one = load(next((tmp_path / 'one').glob('whole/report.json')))
    assert r['confusion_matrix'] == one['confusion_matrix']
    assert r['miou'] == one['miou'] and r['per_class_iou'] == one['per_class_iou']
    assert r['frames_processed'] == one['frames_processed'] == 7 and r['frames_accounted']
    # ... and equal ee-seg eval on that split
    ev = tmp_path / 'eval.json'
    assert ee_seg(['eval', '--root', str(world['root'] / 'data'), '--split', 'val', '--model',
                   str(world['bundle']), '--policy', POLICY, '--json', str(ev), '--quiet',
                   '--threads', '1']) == 0
    assert r['miou'] == pytest.approx(load(ev)['miou'])
    # fleet percentiles are over every frame, not an average of the bags'
    lat = [s['latency_ms'] for b in r['bags'] if b['status'] == 'ok'
           for s in load(out / b['report'])['series']]
    assert len(lat) == 7 and r['latency_ms_p95'] == round(float(np.percentile(lat, 95)), 3)
    assert r['deadline_hit_rate'] == round(float(np.mean(np.array(lat) <= 100.0)), 4)
    assert r['time_split_ms']['inference'] == pytest.approx(np.mean(lat), abs=2e-3)
    single = load(out / 'robot1__monday' / 'report.json')
    assert set(single) - {'backend'} <= set(r)            # a single bag's fields, plus bags
    md = (out / 'report.md').read_text()
    assert 'Worst bags by mIoU' in md and 'Worst bags by deadline hit rate' in md
    assert 'nocamera' in md and (out / 'bags.png').stat().st_size > 100


def test_only_the_ray_engine_imports_ray():
    package = REPO / 'ee_seg_ros'
    importers = sorted(str(p.relative_to(package)) for p in package.rglob('*.py')
                       if any(line.strip().startswith(('import ray', 'from ray'))
                              for line in p.read_text().splitlines()))
    assert importers == ['replay/fleet_ray.py']


def test_fleet_percentiles_are_over_all_frames_not_averaged(world):
    """Merging alone, on reports whose latencies are known: the mean of the per-bag p95s is
    not the fleet p95."""
    from ee_seg_ros.bundle import load_bundle
    from ee_seg_ros.replay.fleet_report import merge_reports
    from ee_seg_ros.replay.report import _pct
    from ee_seg_ros.replay.run import ReplayOptions
    bundle = load_bundle(world['bundle'])
    k = bundle.labels.num_classes

    def report(name, lats, diag):
        m = np.zeros((k, k), int)
        m[np.arange(k), np.arange(k)] = diag
        series = [{'latency_ms': v, 'total_ms': v, 'camera': 'c', 'wait_ms': 0.0, 'exit': 0,
                   'point': 'full', 'gmacs': 1.0, 'stopped': 0.0} for v in lats]
        return {'_name': name, 'bag': name, 'series': series, 'confusion_matrix': m.tolist(),
                'frames_received': len(lats), 'frames_processed': len(lats),
                'frames_dropped': 0, 'frames_rejected': 0, 'frames_accounted': True,
                'topics': {'image': '/c'}, 'guard_stops': 0, 'operating_point_switches': 0,
                'frames_scored': len(lats), 'frames_without_label': 0,
                'labels_without_frame': 0, 'wall_s': 1.0, 'miou': 1.0,
                'deadline_hit_rate': 1.0, 'latency_ms_p95': _pct(lats, 95)}
    a, b = report('a', [10.0] * 19 + [200.0], 5), report('b', [50.0, 60.0], 1)
    outcomes = [BagOutcome('a', 'a', 'ok', None, 20), BagOutcome('b', 'b', 'ok', None, 2)]
    r = merge_reports([a, b], outcomes, ReplayOptions(budget_ms=55.0), bundle, 'test')
    every = [10.0] * 19 + [200.0, 50.0, 60.0]
    assert r['latency_ms_p95'] == _pct(every, 95)
    assert r['latency_ms_p95'] != pytest.approx((a['latency_ms_p95'] + b['latency_ms_p95']) / 2)
    assert r['deadline_hit_rate'] == round(20 / 22, 4)         # not (19/20 + 1/2) / 2
    assert np.array(r['confusion_matrix']).trace() == 6 * k


def test_a_killed_worker_fails_its_bag_only(world, tmp_path, capsys):
    out = tmp_path / 'k'
    assert fleet(world, out, '--jobs', '2',
                 env={FAULT_ENV: 'robot1__tuesday:kill'}) == 3
    r = load(out / 'report.json')
    status = {b['name']: (b['status'], b['reason']) for b in r['bags']}
    assert status['robot1__tuesday'] == ('failed', 'worker process died (killed by signal '
                                                   'SIGKILL)')
    assert status['robot1__monday'][0] == status['robot2__wednesday'][0] == 'ok'
    assert r['frames_processed'] == 6
    out = tmp_path / 'raise'
    os.environ[FAULT_ENV] = 'robot1__monday:raise'
    try:                                    # without --quiet: one progress bar on stderr
        assert ee_seg(['replay', str(world['drives']), '--out', str(out), '--model',
                       str(world['bundle']), '--threads', '1']) == 3
    finally:
        del os.environ[FAULT_ENV]
    bags = load(out / 'report.json')['bags']
    assert bags[0]['reason'] == 'RuntimeError: test fault in robot1__monday'
    bar = capsys.readouterr().err
    assert '3/3' in bar and 'failed=1' in bar and 'fps=' in bar


def _interrupted_run(world, out: Path, engine: list[str],
                     wrap: list[str] = ()) -> subprocess.CompletedProcess:
    """A fleet run that gets Ctrl-C (SIGINT to its process group, as a terminal sends it)
    once the first bag has finished and while the next is still running."""
    env = {**os.environ, FAULT_ENV: 'robot1__tuesday:sleep', 'PYTHONPATH': str(REPO)}
    cmd = [*wrap, sys.executable, '-m', 'ee_seg_ros.cli', 'replay', str(world['drives']),
           '--out', str(out), '--model', str(world['bundle']), '--quiet', '--threads', '1',
           '--policy', POLICY, *engine]
    # SIG_DFL first: a test run started in the background (nohup, CI) ignores SIGINT, and a
    # Python started with SIGINT ignored never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (out / 'robot1__monday' / 'report.json').exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    text, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, text)


@pytest.mark.parametrize('jobs', ['1', '2'])
def test_interrupt_keeps_finished_bags_and_resume_finishes(world, tmp_path, capsys, jobs):
    out = tmp_path / 'fleet'
    run = _interrupted_run(world, out, ['--jobs', jobs])
    assert run.returncode == 130, run.stdout
    assert 'Traceback' not in run.stdout and '--resume' in run.stdout
    assert not (out / 'report.json').exists()                 # nothing that looks complete
    assert not (out / 'robot1__tuesday' / 'report.json').exists()
    assert load(out / 'robot1__monday' / 'report.json')['frames_processed'] == 3
    # a resume with other options is refused, naming the difference
    assert fleet(world, out, '--resume', '--budget-ms', '50') == 2
    err = capsys.readouterr().err
    assert '--budget-ms was 100.0, now 50.0' in err and err.count('\n') == 1
    assert fleet(world, out, '--resume', '--policy', 'full') == 2
    assert "--policy was 'cbt:0.3,0.8', now 'full'" in capsys.readouterr().err
    before = (out / 'robot1__monday' / 'report.json').stat().st_mtime_ns
    assert fleet(world, out, '--resume') == 0
    r = load(out / 'report.json')
    assert [b['status'] for b in r['bags']][0] == 'skipped' and r['bags_skipped'] >= 1
    assert r['bags_failed'] == 0 and r['frames_processed'] == 7
    assert (out / 'robot1__monday' / 'report.json').stat().st_mtime_ns == before
    full = tmp_path / 'full'
    assert fleet(world, full) == 0
    assert load(full / 'report.json')['confusion_matrix'] == r['confusion_matrix']


# -- Ray, inside a loopback-only network namespace ---------------------------------------------
def _namespace_problem() -> str | None:
    if not all(shutil.which(t) for t in ('unshare', 'ip', 'ss')):
        return 'unshare (util-linux), ip or ss (iproute2) is not installed'
    try:
        import ray  # noqa: F401
    except ImportError:
        return 'ray is not installed (pip install "ee_seg_ros[fleet]")'
    probe = subprocess.run(['unshare', '-n', 'sh', '-c', 'ip link set lo up'],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return ('cannot make a loopback-only network namespace (unshare -n: '
                f'{probe.stderr.strip() or probe.returncode}); Ray is not started on the '
                'open network')
    return None


needs_namespace = pytest.mark.skipif(_namespace_problem() is not None,
                                     reason=str(_namespace_problem()))

PROBE = '''
import json, subprocess, sys
import ray
from ee_seg_ros.replay.fleet_ray import connect
from ee_seg_ros.cli import main
connect(None)
@ray.remote(num_cpus=1)
def pid():
    import os
    return os.getpid()
ray.get([pid.remote() for _ in range(2)])          # workers up, as during a fleet
listen = subprocess.run(['ss', '-tulnpH'], capture_output=True, text=True).stdout
print(listen, file=sys.stderr)
codes = [main(a) for a in json.loads(sys.argv[1])]
print(json.dumps({'listen': listen, 'codes': codes}))
'''


def _ray_runs(tmp_path, runs: list[list[str]], env: dict | None = None) -> dict:
    script = tmp_path / 'probe.py'
    script.write_text(PROBE)
    cmd = ['unshare', '-n', 'sh', '-c',
           f'ip link set lo up && exec "{sys.executable}" "{script}" "$0"', json.dumps(runs)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400,
                          env={**os.environ, 'PYTHONPATH': str(REPO), **(env or {})})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_namespace
def test_ray_equals_local_processes_and_listens_on_loopback_only(world, tmp_path):
    base = ['--model', str(world['bundle']), '--quiet', '--threads', '1', '--policy', POLICY]
    drives = str(world['drives'])
    result = _ray_runs(tmp_path, [
        ['replay', drives, '--out', str(tmp_path / 'ray'), '--ray', *base]])
    assert result['codes'] == [0]
    assert fleet(world, tmp_path / 'j1', '--jobs', '1') == 0
    assert fleet(world, tmp_path / 'j2', '--jobs', '2') == 0
    reports = {e: load(tmp_path / e / 'report.json') for e in ('ray', 'j1', 'j2')}
    assert reports['ray']['engine'] == 'ray (local)'
    for e in ('ray', 'j2'):
        assert reports[e]['confusion_matrix'] == reports['j1']['confusion_matrix']
        assert reports[e]['miou'] == reports['j1']['miou']
        for name in ('robot1__monday', 'robot1__tuesday', 'robot2__wednesday'):
            mine = load(tmp_path / e / name / 'report.json')
            ref = load(tmp_path / 'j1' / name / 'report.json')
            assert mine['confusion_matrix'] == ref['confusion_matrix']
            assert [s['exit'] for s in mine['series']] == [s['exit'] for s in ref['series']]
    rows = [line.split() for line in result['listen'].splitlines() if line.strip()]
    assert rows, 'Ray opened no socket?'
    for row in rows:                 # netid state recv send local peer [process]
        local = row[4].rsplit(':', 1)[0].strip('[]')
        assert local in ('127.0.0.1', '::1', '::ffff:127.0.0.1'), row


@needs_namespace
def test_ray_worker_killed_fails_its_bag_only(world, tmp_path):
    result = _ray_runs(tmp_path, [[
        'replay', str(world['drives']), '--out', str(tmp_path / 'ray'), '--ray', '--model',
        str(world['bundle']), '--quiet', '--threads', '1', '--policy', POLICY]],
        env={FAULT_ENV: 'robot1__tuesday:kill'})
    assert result['codes'] == [3]
    r = load(tmp_path / 'ray' / 'report.json')
    status = {b['name']: (b['status'], b['reason']) for b in r['bags']}
    assert status['robot1__tuesday'][0] == 'failed'
    assert 'died' in status['robot1__tuesday'][1]
    assert status['robot1__monday'][0] == status['robot2__wednesday'][0] == 'ok'
    assert r['frames_processed'] == 6


@needs_namespace
def test_ray_run_interrupted_keeps_finished_bags_and_writes_no_fleet_report(world, tmp_path):
    out = tmp_path / 'ray'
    wrap = ['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"']
    run = _interrupted_run(world, out, ['--ray'], wrap)
    assert run.returncode == 130, run.stdout
    assert 'Traceback' not in run.stdout and '--resume' in run.stdout
    assert not (out / 'report.json').exists()
    assert load(out / 'robot1__monday' / 'report.json')['frames_processed'] == 3
    assert not (out / 'robot1__tuesday').exists()
