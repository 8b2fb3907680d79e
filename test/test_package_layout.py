"""The files colcon and ros2 launch rely on say what the code does."""

import os
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ee_seg_ros.ros.parameters import PARAMS, check

ROOT = Path(__file__).resolve().parents[1]


def test_config_file_sets_every_parameter_to_a_valid_value():
    params = yaml.safe_load((ROOT / 'config' / 'segmenter.yaml').read_text())
    values = params['/**']['ros__parameters']
    # arrays that default to empty are left out: rcl's YAML parser refuses an empty list
    assert set(values) == {p.name for p in PARAMS if not p.array}
    for name, value in values.items():
        assert check(name, value) is None, name
        default = next(p.default for p in PARAMS if p.name == name)
        assert type(value) is type(default), f'{name}: YAML type differs from the declared one'


def test_ament_layout():
    assert (ROOT / 'resource' / 'ee_seg_ros').exists()
    pkg = ET.parse(ROOT / 'package.xml').getroot()
    assert pkg.get('format') == '3' and pkg.findtext('name') == 'ee_seg_ros'
    assert pkg.find('export/build_type').text == 'ament_python'
    cfg = (ROOT / 'setup.cfg').read_text()
    assert 'script_dir=$base/lib/ee_seg_ros' in cfg
    assert 'install_scripts=$base/lib/ee_seg_ros' in cfg


def _launch_arguments(name: str) -> set[str]:
    pytest.importorskip('launch_ros', reason='launch_ros needs a ROS 2 install')
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT / 'launch' / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {a.name for a in module.generate_launch_description().get_launch_arguments()}


def test_replay_launch_file_declares_its_arguments():
    assert {'bag', 'record', 'image_topic', 'latency_budget_ms', 'cpu_load_source',
            'use_sim_time', 'clock_hz', 'rate'} <= _launch_arguments('replay.launch.py')


def test_the_replay_player_publishes_clock_only_for_a_node_on_sim_time():
    from ee_seg_ros.ros.launch_args import LaunchArgumentError, drain_seconds, play_command
    assert drain_seconds('3') == 3.0
    with pytest.raises(LaunchArgumentError, match='drain_s'):
        drain_seconds('-1')
    wall = play_command('drive_bag')
    assert wall[:4] == ['ros2', 'bag', 'play', 'drive_bag'] and '--clock' not in wall
    assert '--wait-for-all-acked' in wall   # the recorder has every message before play exits
    sim = play_command('drive_bag', rate='0.5', use_sim_time='True', clock_hz='2')
    assert sim[sim.index('--clock') + 1] == '2' and sim[sim.index('--rate') + 1] == '0.5'
    # the harness below the node: nice execs the player, so signals still reach it
    assert play_command('drive_bag', nice='10')[:5] == ['nice', '-n', '10', 'ros2', 'bag']
    for bad, name in (({'rate': '0'}, 'rate'), ({'delay_s': '-1'}, 'play_delay_s'),
                      ({'nice': '20'}, 'harness_nice'), ({'nice': 'low'}, 'harness_nice'),
                      ({'use_sim_time': 'yes'}, 'use_sim_time'),
                      ({'use_sim_time': 'true', 'clock_hz': 'fast'}, 'clock_hz')):
        with pytest.raises(LaunchArgumentError, match=name):
            play_command('drive_bag', **bad)


def test_launch_file_declares_its_arguments():
    assert _launch_arguments('segmenter.launch.py') == {
        'params_file', 'namespace', 'image_topic', 'latency_budget_ms', 'use_sim_time',
        'cameras', 'cpu_load_source', 'reliable_input'}


def test_launch_arguments_override_the_params_file_only_when_given(tmp_path):
    from ee_seg_ros.ros.launch_args import LaunchArgumentError, node_parameters
    params = tmp_path / 'p.yaml'
    params.write_text('/**:\n  ros__parameters:\n    latency_budget_ms: 75.0\n')
    assert node_parameters(str(params)) == [str(params)]
    assert node_parameters(str(params), '', '') == [str(params)]
    assert node_parameters(str(params), '30', 'True') == [
        str(params), {'latency_budget_ms': 30.0, 'use_sim_time': True}]
    assert node_parameters(str(params), use_sim_time='false') == [
        str(params), {'use_sim_time': False}]
    for bad in ({'latency_budget_ms': 'fast'}, {'use_sim_time': 'maybe'}):
        with pytest.raises(LaunchArgumentError, match=next(iter(bad))):
            node_parameters(str(params), **bad)
    with pytest.raises(LaunchArgumentError, match='is not a file'):
        node_parameters(str(tmp_path / 'missing.yaml'))
    assert node_parameters(str(params), cameras="['front','rear']") == [
        str(params), {'cameras': ['front', 'rear']}]
    assert node_parameters(str(params), cameras='front, rear')[1] == {
        'cameras': ['front', 'rear']}
    for bad in ('[]', '[1, 2]', '{a: 1}'):
        with pytest.raises(LaunchArgumentError, match='cameras'):
            node_parameters(str(params), cameras=bad)
    assert node_parameters(str(params), cpu_load_source='topic+local')[1] == {
        'cpu_load.source': 'topic+local'}
    with pytest.raises(LaunchArgumentError, match='cpu_load_source'):
        node_parameters(str(params), cpu_load_source='load average')
    assert node_parameters(str(params), reliable_input='True')[1] == {'input.reliable': True}
    with pytest.raises(LaunchArgumentError, match='reliable_input'):
        node_parameters(str(params), reliable_input='yes please')


def test_a_node_that_exits_with_an_error_fails_the_launch_but_a_stop_does_not():
    from ee_seg_ros.ros.launch_args import exit_problem
    assert 'exited with code 1' in exit_problem('segmenter-1', 1, shutting_down=False)
    assert exit_problem('segmenter-1', 0, shutting_down=False) is None
    assert exit_problem('segmenter-1', -15, shutting_down=True) is None   # launch stopped it


needs_ros2 = pytest.mark.skipif(shutil.which('ros2') is None,
                                reason='ros2 launch needs a ROS 2 install')


def _ros_env() -> dict:
    """Loopback only and a test-only domain (see test_node.py for why not LOCALHOST)."""
    env = {**os.environ, 'ROS_DOMAIN_ID': str(200 + os.getpid() % 30),
           'FASTRTPS_DEFAULT_PROFILES_FILE': str(ROOT / 'config' / 'fastdds_loopback.xml')}
    env.pop('ROS_AUTOMATIC_DISCOVERY_RANGE', None)
    return env


class _Launch:
    """``ros2 launch ee_seg_ros segmenter.launch.py ARGS`` with its output in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.log = open(tmp_path / 'launch.log', 'w+')
        self.env = _ros_env()
        self.proc = subprocess.Popen(['ros2', 'launch', 'ee_seg_ros', 'segmenter.launch.py',
                                      *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     text=True, env=self.env)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 120.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if 'ee_segmenter ready' in self.output():
                return self.output()
            assert self.proc.poll() is None, self.output()
            time.sleep(0.2)
        raise AssertionError(self.output())

    def ros2(self, *args: str) -> subprocess.CompletedProcess:
        """A ros2cli call; asked again while the ros2 daemon has not (or, for a moment, no
        longer) discovered the node: "Node not found" is the daemon's view, not the node's."""
        for _ in range(40):
            done = subprocess.run(['ros2', *args], capture_output=True, text=True, timeout=60,
                                  env=self.env)
            if 'Node not found' not in done.stderr:
                return done
            time.sleep(0.5)
        return done

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.ros2('daemon', 'stop')      # the one this test's ros2 param calls started


@needs_ros2
def test_ros2_launch_a_given_argument_wins_over_the_params_file(tmp_path):
    params = tmp_path / 'p.yaml'
    params.write_text('/**:\n  ros__parameters:\n    latency_budget_ms: 75.0\n')
    launch = _Launch(tmp_path, f'params_file:={params}', 'latency_budget_ms:=30',
                     'namespace:=launch_arg', 'cpu_load_source:=topic+local',
                     'reliable_input:=true', "cameras:=['front','rear']")
    try:
        assert 'budget 30.0 ms' in launch.wait_ready()
        node = '/launch_arg/ee_segmenter'
        assert 'String value is: topic+local' in launch.ros2(
            'param', 'get', node, 'cpu_load.source').stdout
        assert 'Boolean value is: True' in launch.ros2(
            'param', 'get', node, 'input.reliable').stdout
        assert "['front', 'rear']" in launch.ros2('param', 'get', node, 'cameras').stdout
        topics = launch.ros2('topic', 'list', '--no-daemon', '--spin-time', '3').stdout
        assert '/launch_arg/ee_segmenter/front/mask' in topics, topics
        assert '/launch_arg/ee_segmenter/rear/exit_stats' in topics, topics
    finally:
        assert launch.stop() == 0, launch.output()


@needs_ros2
def test_ros2_launch_and_ros2_param_as_the_readme_says(tmp_path):
    """The params file's value stands when no argument is given; `ros2 param set` with an
    integer keeps a double a double; mode fixed before the point works; SIGINT exits 0."""
    params = tmp_path / 'p.yaml'
    params.write_text('/**:\n  ros__parameters:\n    latency_budget_ms: 75.0\n')
    launch = _Launch(tmp_path, f'params_file:={params}', 'namespace:=launch_test')
    node = '/launch_test/ee_segmenter'
    try:
        assert 'budget 75.0 ms' in launch.wait_ready()
        got = launch.ros2('param', 'get', node, 'latency_budget_ms')
        assert 'Double value is: 75.0' in got.stdout, got
        for name, value, shown in (('latency_budget_ms', '80', 'Double value is: 80.0'),
                                   ('overlay.alpha', '1', 'Double value is: 1.0')):
            assert 'successful' in launch.ros2('param', 'set', node, name, value).stdout
            assert shown in launch.ros2('param', 'get', node, name).stdout
            assert 'Type: double' in launch.ros2('param', 'describe', node, name).stdout
        refused = launch.ros2('param', 'set', node, 'latency_budget_ms', '-5')
        assert 'failed' in refused.stdout + refused.stderr
        assert 'successful' in launch.ros2('param', 'set', node, 'policy.mode', 'fixed').stdout
        assert 'successful' in launch.ros2('param', 'set', node, 'policy.point',
                                           'cbt:0.5,0.99').stdout
        assert 'String value is: fixed' in launch.ros2('param', 'get', node,
                                                       'policy.mode').stdout
        assert 'cbt:0.5,0.99' in launch.ros2('param', 'get', node, 'policy.point').stdout
    finally:
        assert launch.stop() == 0, launch.output()


@needs_ros2
def test_ros2_launch_exits_non_zero_when_the_node_cannot_start(tmp_path):
    missing = _Launch(tmp_path, f'params_file:={tmp_path / "missing.yaml"}')
    assert missing.proc.wait(timeout=120) != 0
    assert 'is not a file' in missing.output()
    bad = tmp_path / 'bad.yaml'
    bad.write_text('/**:\n  ros__parameters:\n    latency_budget_ms: -5.0\n')
    failed = _Launch(tmp_path, f'params_file:={bad}')
    assert failed.proc.wait(timeout=120) != 0, failed.output()
    out = failed.output()
    assert 'cannot start' in out and 'latency_budget_ms' in out and 'exited with code 1' in out


def _has_ros2_bag() -> bool:
    if shutil.which('ros2') is None:
        return False
    return subprocess.run(['ros2', 'bag', '--help'], capture_output=True,
                          timeout=60).returncode == 0


needs_ros2_bag = pytest.mark.skipif(not _has_ros2_bag(),
                                    reason='ros2 bag needs a ROS 2 install with rosbag2')


def _live_and_offline(tmp_path: Path, frames: int, rate: float, params: str,
                      offline_args: list[str],
                      launch_args: tuple[str, ...] = ()) -> tuple[dict, dict, dict]:
    """A synthetic drive played into the live node by replay.launch.py (with
    ``launch_args``) and recorded, scored with ee-seg score; the same bag through ee-seg
    replay; and ee-seg compare of the two. Returns the online and offline reports and the
    comparison."""
    import json
    import sys

    from ee_seg_ros.data.synthetic import write_camvid_layout
    write_camvid_layout(tmp_path, 'drive', frames, seed=3, size=(180, 240))
    bag, rec = tmp_path / 'drive_bag', tmp_path / 'recorded'
    cli = [sys.executable, '-m', 'ee_seg_ros.cli']
    env = _ros_env()
    subprocess.run(cli + ['bag-from-images', str(tmp_path / 'drive'), '--out', str(bag),
                          '--labels', str(tmp_path / 'driveannot'), '--rate', str(rate)],
                   check=True, timeout=120, env=env)
    (tmp_path / 'params.yaml').write_text(f'/**:\n  ros__parameters:\n{params}')
    launch = subprocess.run(
        ['ros2', 'launch', 'ee_seg_ros', 'replay.launch.py', f'bag:={bag}', f'record:={rec}',
         f'params_file:={tmp_path / "params.yaml"}', 'namespace:=replay_test', *launch_args],
        capture_output=True, text=True, timeout=300, env=env)
    assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
    info = subprocess.run(['ros2', 'bag', 'info', str(rec)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert info.returncode == 0 and '/replay_test/ee_segmenter/mask' in info.stdout, info
    subprocess.run(cli + ['score', str(rec), '--labels', str(bag), '--out',
                          str(tmp_path / 'online')], check=True, timeout=120, env=env)
    subprocess.run(cli + ['replay', str(bag), *offline_args, '--out',
                          str(tmp_path / 'offline')], check=True, timeout=300, env=env)
    subprocess.run(cli + ['compare', str(tmp_path / 'online'), str(tmp_path / 'offline'),
                          '--json', str(tmp_path / 'compare.json')], timeout=60, env=env)
    online = json.loads((tmp_path / 'online' / 'report.json').read_text())
    offline = json.loads((tmp_path / 'offline' / 'report.json').read_text())
    online['launch_output'] = launch.stdout[-4000:]
    return online, offline, json.loads((tmp_path / 'compare.json').read_text())


@needs_ros2_bag
def test_replay_launch_refuses_a_bad_player_argument_before_starting_anything(tmp_path):
    for arg, name in (('rate:=0', 'rate'), ('harness_nice:=20', 'harness_nice'),
                      ('use_sim_time:=maybe', 'use_sim_time')):
        launch = subprocess.run(
            ['ros2', 'launch', 'ee_seg_ros', 'replay.launch.py', f'bag:={tmp_path / "b"}',
             f'record:={tmp_path / "r"}', arg], capture_output=True, text=True, timeout=120,
            env=_ros_env())
        out = launch.stdout + launch.stderr
        assert launch.returncode != 0 and f'{name}:=' in out, out
        assert 'ee_segmenter ready' not in out and not (tmp_path / 'r').exists(), out


@needs_ros2_bag
def test_replay_launch_plays_records_and_scores_like_offline_replay(tmp_path):
    """The real-ROS loop of the replay issue: ros2 bag play -> live node -> ros2 bag record ->
    ee-seg score gives the same masks as ee-seg replay on the same bag. Here the node runs on
    the bag's time (/clock from the player); the adaptive test below on the wall clock."""
    # full depth: the masks do not depend on how fast this machine happens to be right now
    online, offline, _ = _live_and_offline(tmp_path, 5, 2, '    policy.mode: "full"\n',
                                           ['--policy', 'full'], ('use_sim_time:=true',))
    stamps = [f['stamp_ns'] for f in online['series']]
    assert online['frames_processed'] == offline['frames_processed'] == 5, (
        stamps, online['launch_output'])
    assert (online['frames_in_bag'], online['frames_lost']) == (5, 0)   # reliable input
    assert online['miou'] == pytest.approx(offline['miou'], abs=1e-6)
    # the time split: delivery over DDS online only, output time on both sides
    assert online['time_split_ms']['transport'] > 0 == offline['time_split_ms']['transport']


@needs_ros2_bag
def test_the_adaptive_live_loop_agrees_with_offline_replay_within_tolerance(tmp_path):
    """Adaptive mode, the controller steering, at a budget every point meets on any machine
    that runs the tests: frames, deadlines and mIoU agree within compare's tolerances (latency
    may differ: the player and the recorder share the cores online)."""
    online, offline, comparison = _live_and_offline(
        tmp_path, 12, 4, '    policy.mode: "adaptive"\n    latency_budget_ms: 3000.0\n',
        ['--budget-ms', '3000', '--timing', 'realtime'])
    assert (online['frames_in_bag'], online['frames_lost']) == (12, 0), online['launch_output']
    assert online['frames_processed'] == offline['frames_processed'] == 12
    flagged = set(comparison['flagged'])
    assert not flagged - {'latency p50 (ms)', 'latency p95 (ms)', 'latency p99 (ms)'}, \
        comparison['rows']
    assert abs(online['miou'] - offline['miou']) <= 0.5
    assert abs(online['deadline_hit_rate'] - offline['deadline_hit_rate']) <= 0.02
