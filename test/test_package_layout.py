"""The files colcon and ros2 launch rely on say what the code does."""

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ee_seg_ros.ros.parameters import PARAMS, check

ROOT = Path(__file__).resolve().parents[1]


def test_config_file_sets_every_parameter_to_a_valid_value():
    params = yaml.safe_load((ROOT / 'config' / 'segmenter.yaml').read_text())
    values = params['/**']['ros__parameters']
    assert set(values) == {p.name for p in PARAMS}
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
    assert {'bag', 'record', 'image_topic', 'latency_budget_ms'} <= _launch_arguments(
        'replay.launch.py')


def test_launch_file_declares_its_arguments():
    assert _launch_arguments('segmenter.launch.py') == {
        'params_file', 'namespace', 'image_topic', 'latency_budget_ms', 'use_sim_time'}


@pytest.mark.skipif(shutil.which('ros2') is None, reason='ros2 launch needs a ROS 2 install')
def test_ros2_launch_starts_the_node_with_its_arguments():
    import signal
    import time
    proc = subprocess.Popen(['ros2', 'launch', 'ee_seg_ros', 'segmenter.launch.py',
                             'latency_budget_ms:=30', 'namespace:=launch_test'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if 'ee_segmenter ready' in line:
                break
        assert 'budget 30.0 ms' in ''.join(lines)
        # the ros2 daemon may not have discovered the node yet ("Node not found"): ask again
        for _ in range(40):
            got = subprocess.run(['ros2', 'param', 'get', '/launch_test/ee_segmenter',
                                  'latency_budget_ms'], capture_output=True, text=True,
                                 timeout=30)
            if got.returncode == 0:
                break
            time.sleep(0.5)
        assert 'Double value is: 30.0' in got.stdout, got
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
