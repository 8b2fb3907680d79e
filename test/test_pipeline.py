"""The frame pipeline, signals and parameter rules shared by the node and replay (no ROS)."""

import math
import sys

import pytest

from ee_seg_ros.bundle import save_bundle
from ee_seg_ros.control import ControllerSettings, Signals
from ee_seg_ros.data.labels import CAMVID
from ee_seg_ros.ros.parameters import PARAMS, check, controller_settings
from ee_seg_ros.runtime import Frame, Pipeline, Segmenter
from ee_seg_ros.signals import (SignalError, SignalState, battery_fraction, cpu_fraction,
                                cpu_from_diagnostics)

from conftest import random_rgb


@pytest.fixture
def pipeline(tmp_path, tiny_model):
    bundle = save_bundle(tmp_path / 'b', tiny_model, CAMVID)
    return Pipeline(Segmenter(str(bundle)), ControllerSettings(latency_budget_ms=1000.0))


def test_step_segments_and_counts(pipeline):
    image = random_rgb(90, 125)
    for _ in range(3):
        pipeline.received()
        result = pipeline.step(Frame(image, 1.5, 'cam'), Signals())
    assert result.segmentation.labels.shape == (90, 125)
    assert result.decision.point.policy == 'full' and result.deadline_met
    pipeline.received()
    pipeline.dropped()
    c = pipeline.counts
    assert (c.received, c.processed, c.dropped, c.rejected) == (4, 3, 1, 0) and c.balanced()


def test_an_exception_inside_inference_rejects_only_that_frame(pipeline, monkeypatch):
    real = pipeline.segmenter.segment
    calls = {'n': 0}

    def flaky(*args, **kwargs):
        calls['n'] += 1
        if calls['n'] == 2:
            raise RuntimeError('simulated failure')
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline.segmenter, 'segment', flaky)
    results = []
    for _ in range(3):
        pipeline.received()
        results.append(pipeline.step(Frame(random_rgb()), Signals()))
    assert results[1] is None and results[0] is not None and results[2] is not None
    c = pipeline.counts
    assert c.processed == 2 and c.rejected == 1 and c.balanced()
    assert c.reasons['inference error: RuntimeError: simulated failure'] == 1
    assert 'simulated failure' in pipeline.last_error


@pytest.mark.parametrize('value, scale, expected', [
    (0.42, 'auto', 0.42), (42.0, 'auto', 0.42), (42.0, 'percent', 0.42), (1.0, 'auto', 1.0),
    (100.0, 'auto', 1.0), (0.5, 'percent', 0.005), (math.nan, 'auto', None)])
def test_battery_percentage_scales(value, scale, expected):
    assert battery_fraction(value, scale) == (None if expected is None
                                              else pytest.approx(expected))


@pytest.mark.parametrize('value', [-1.0, math.inf, 150.0])
def test_bad_battery_percentages_are_refused(value):
    with pytest.raises(SignalError):
        battery_fraction(value)


def test_cpu_load_units_and_overload():
    assert cpu_fraction(0.3) == (pytest.approx(0.3), None)
    assert cpu_fraction(30.0) == (pytest.approx(0.3), None)
    load, note = cpu_fraction(250.0)
    assert load == 1.0 and 'above 100%' in note
    with pytest.raises(SignalError):
        cpu_fraction(math.nan)

    class KV:
        def __init__(self, key, value):
            self.key, self.value = key, value

    class Status:
        values = [KV('Load Average (1min)', '0.3'), KV('CPU Load Average', '37.5%')]

    assert cpu_from_diagnostics([Status()]) == pytest.approx(0.375)
    assert cpu_from_diagnostics([]) is None


def test_stale_inputs_count_as_unknown():
    state = SignalState(stale_after_s=2.0)
    state.set_battery(0.5, False, now=10.0)
    state.set_cpu(0.9, now=10.0)
    assert state.snapshot(11.0) == Signals(battery=0.5, charging=False, cpu_load=0.9)
    late = state.snapshot(13.0)
    assert late.battery is None and late.cpu_load is None and late.stale
    assert SignalState().snapshot(0.0) == Signals()     # never received: unknown, not stale


def test_a_reported_and_a_local_cpu_load_give_the_higher_one():
    """topic+local: a bag's recorded load steers the controller, but CPU really taken on this
    machine (the bag player, the recorder) is never hidden behind a lower recorded value."""
    state = SignalState(stale_after_s=2.0)
    state.set_cpu(0.3, 10.0)
    state.set_local_cpu(0.9, 10.0)
    assert state.snapshot(10.5).cpu_load == 0.9
    state.set_local_cpu(0.1, 11.0)
    assert state.snapshot(11.5).cpu_load == 0.3
    late = state.snapshot(12.9)              # the reported one went quiet: the local one holds
    assert late.cpu_load == 0.1 and not late.stale
    gone = state.snapshot(20.0)              # both quiet: unknown and stale
    assert gone.cpu_load is None and gone.stale


def test_parameter_rules():
    defaults = {p.name: p.default for p in PARAMS}
    for name, value in defaults.items():
        assert check(name, value) is None, name
    assert check('latency_budget_ms', 30) is None            # integer accepted
    assert 'must be in' in check('latency_budget_ms', -5.0)
    assert 'must be a number' in check('latency_budget_ms', '30')
    assert 'must be finite' in check('latency_budget_ms', math.nan)
    assert 'one of' in check('policy.mode', 'fast')
    assert 'cannot parse policy' in check('policy.point', 'cbt:0.9')
    assert 'needs 33 values' in check('palette', [1, 2, 3], num_classes=11)
    assert check('palette', [10, 20, 30] * 11, num_classes=11) is None
    with pytest.raises(ValueError, match='critical < low'):
        controller_settings({**defaults, 'battery.low': 0.1, 'battery.critical': 0.2})
    with pytest.raises(ValueError, match='mode fixed needs'):
        controller_settings({**defaults, 'policy.mode': 'fixed'})
    s = controller_settings({**defaults, 'latency_budget_ms': 30})
    assert s.latency_budget_ms == 30.0 and isinstance(s.latency_budget_ms, float)


def test_the_pipeline_runs_on_fewer_threads_while_the_cpu_is_loaded(tmp_path, tiny_model):
    import torch
    before = torch.get_num_threads()
    try:
        bundle = save_bundle(tmp_path / 'b', tiny_model, CAMVID)
        pipe = Pipeline(Segmenter(str(bundle), threads=2),
                        ControllerSettings(latency_budget_ms=1000.0, cpu_high_threads=1))
        image = random_rgb(64, 64)
        assert pipe.step(Frame(image), Signals(cpu_load=1.0)).decision.threads == 1
        assert torch.get_num_threads() == 1
        assert pipe.step(Frame(image), Signals(cpu_load=0.1)).decision.threads == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# spins for a second between two reads of its own LocalCpuLoad (a plain subprocess: it only
# imports ee_seg_ros.signals, so it starts in a fraction of a second even on a busy machine)
_SPIN_AND_READ = """
import json, sys, time
import psutil
from ee_seg_ros.signals import LocalCpuLoad
me, monitor = psutil.Process(), LocalCpuLoad()
print('ready', flush=True)
sys.stdin.readline()
monitor.read()
t0, cpu0 = time.monotonic(), sum(me.cpu_times()[:2])
while time.monotonic() < t0 + 1.0:
    pass
reading = monitor.read()
print(json.dumps([reading, sum(me.cpu_times()[:2]) - cpu0, time.monotonic() - t0]), flush=True)
"""


def test_local_cpu_load_leaves_out_our_own_work_and_counts_other_processes():
    """Holds on a loaded machine too: nothing is compared with an idle baseline.

    A child process spins for a second and reads its own LocalCpuLoad over that window while
    this (idle) process reads one over the same window. Ours must count the child (at least
    its share of the cores); the child's must leave its own spinning out: what it reads is
    what we saw minus the child, as a share of what the child left free. On a saturated
    machine both read 1.0, which is still what the definition says.
    """
    import json
    import subprocess
    import sys

    import psutil

    from ee_seg_ros.signals import LocalCpuLoad
    cores = psutil.cpu_count() or 1
    for attempt in range(3):          # a window where the child hardly ran is retried
        child = subprocess.Popen([sys.executable, '-c', _SPIN_AND_READ], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == 'ready'
            monitor = LocalCpuLoad()
            child.stdin.write('go\n')
            child.stdin.flush()
            theirs, child_cpu, window = json.loads(child.stdout.readline())
            ours = monitor.read()
        finally:
            child.stdin.close()
            child.wait(30)
        if child_cpu > 0.2 * window and window < 2.0:
            break
    capacity = window * cores
    share = min(child_cpu / capacity, 1.0)
    # the child is another process to us: counted, at least its share of the machine
    assert ours >= share - 0.1, (ours, share)
    # the child's own spinning is left out of its reading
    others = max(ours * capacity - child_cpu, 0.0)
    expected = min(others / max(capacity - child_cpu, 0.25 * capacity), 1.0)
    assert theirs == pytest.approx(expected, abs=0.15), (theirs, expected, ours, share)


def test_local_cpu_load_arithmetic_on_a_scripted_machine(monkeypatch):
    """The same rules on scripted CPU times (a real machine may be saturated, where every
    reading is 1.0): 2 cores, one window of 1 s, our process and the others varying."""
    import types

    import ee_seg_ros.signals as signals
    state = {'now': 0.0, 'busy': 0.0, 'own': 0.0}
    fake = types.SimpleNamespace(
        cpu_count=lambda: 2,
        cpu_times=lambda: types.SimpleNamespace(user=state['busy'], system=0.0),
        Process=lambda: types.SimpleNamespace(
            cpu_times=lambda: types.SimpleNamespace(user=state['own'], system=0.0)))
    monkeypatch.setitem(sys.modules, 'psutil', fake)
    monkeypatch.setattr(signals, 'time', types.SimpleNamespace(monotonic=lambda: state['now']))
    monitor = signals.LocalCpuLoad()

    def window(own: float, others: float) -> float:
        state['now'] += 1.0
        state['own'] += own
        state['busy'] += own + others
        return monitor.read()

    assert window(own=1.0, others=0.0) == 0.0           # only us, one core busy: no load
    assert window(own=2.0, others=0.0) == 0.0           # only us, both cores
    assert window(own=0.0, others=1.0) == 0.5           # another process on one core of two
    assert window(own=1.0, others=0.5) == 0.5           # half of the core we left free
    assert window(own=1.0, others=1.0) == 1.0           # all of it
    assert window(own=1.9, others=0.1) == pytest.approx(0.2)  # a sliver: against 0.5 core
    state['now'] -= 1.0                                 # no time passed: no reading
    assert monitor.read() is None


def test_warm_up_leaves_counts_and_controller_untouched(pipeline):
    index, m = pipeline.controller.index, pipeline.controller.m
    pipeline.warm_up(64, 80)
    c = pipeline.counts
    assert (c.received, c.processed, c.rejected) == (0, 0, 0)
    assert (pipeline.controller.index, pipeline.controller.m) == (index, m)


def test_backends_import_neither_the_segmenter_nor_each_other():
    """The Segmenter picks a backend by name; both backends see only runtime.backend."""
    import ast
    from pathlib import Path

    import ee_seg_ros.runtime as runtime
    folder = Path(runtime.__file__).parent

    def imported(module: str) -> set[str]:
        tree = ast.parse((folder / f'{module}.py').read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.level == 1 and n.module}

    for backend in ('torch_backend', 'onnx_backend'):
        assert imported(backend) & {'segmenter', 'torch_backend', 'onnx_backend',
                                    'pipeline'} == set(), backend
        assert 'backend' in imported(backend)
    assert 'segmenter' not in imported('backend')


_FAULTS_SCRIPT = '''
import resource, sys
import numpy as np
from ee_seg_ros.runtime.memory import keep_freed_memory
if sys.argv[1] == 'keep':
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def frame():                           # a frame's activations, 256 KB to 8 MB: made, freed
    blocks = [np.ones(n) for n in (1 << 15, 1 << 17, 1 << 19, 1 << 20, 1 << 18, 1 << 16) * 3]
    del blocks
frame()
before = faults()
for _ in range(20):
    frame()
print(faults() - before)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc settings')
def test_memory_a_frame_frees_is_kept_for_the_next_instead_of_faulted_in_again():
    """Without it a frame's blocks are mapped afresh and faulted in page by page (about
    4,600 faults a frame here); with it each frame reuses the previous one's pages."""
    import subprocess
    counts = {mode: int(subprocess.run([sys.executable, '-c', _FAULTS_SCRIPT, mode],
                                       capture_output=True, text=True, check=True).stdout)
              for mode in ('keep', 'default')}
    assert counts['default'] > 20 * 2000, counts
    assert counts['keep'] < 20 * 100, counts


def test_keeping_freed_memory_can_be_turned_off(monkeypatch):
    from ee_seg_ros.runtime.memory import keep_freed_memory
    monkeypatch.setenv('EE_SEG_KEEP_FREED_MEMORY', '0')
    assert keep_freed_memory() is False
