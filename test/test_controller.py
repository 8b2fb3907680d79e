"""The controller on latency traces: a simulated machine whose slowdown changes (contention
steps) with log-normal frame jitter, seeded so every run replays the same trace."""

import math

import numpy as np
import pytest

from ee_seg_ros.control import Controller, ControllerSettings, OperatingPoint, Signals

POINTS = [OperatingPoint('exit:0', 27.0, 55.0), OperatingPoint('full@cap=0', 33.0, 58.0),
          OperatingPoint('cbt:0.5,0.95', 40.0, 60.5), OperatingPoint('cbt:0.7,0.99', 50.0, 61.5),
          OperatingPoint('global:0.99', 62.0, 62.0), OperatingPoint('full', 80.0, 62.3)]


def slowdown_trace(frames: int = 3000, seed: int = 0) -> np.ndarray:
    """1x, then 1.6x (one competing process), then 2.2x, then back, every 500 frames."""
    levels = np.repeat([1.0, 1.6, 2.2, 1.0, 1.6, 1.0], frames // 6)
    jitter = np.exp(np.random.default_rng(seed).normal(0, 0.06, levels.size))
    return levels * jitter


def run_closed_loop(ctrl: Controller, trace: np.ndarray, signals=Signals()):
    latencies, mious, indices = [], [], []
    for slow in trace:
        d = ctrl.choose(signals)
        lat = d.point.latency_ms * slow
        ctrl.observe(lat)
        latencies.append(lat)
        mious.append(d.point.miou)
        indices.append(d.index)
    return np.array(latencies), np.array(mious), np.array(indices)


def test_keeps_a_deadline_the_full_network_misses():
    budget = 100.0
    trace = slowdown_trace()
    assert (POINTS[-1].latency_ms * trace > budget).mean() > 0.3   # full depth misses a lot
    ctrl = Controller(POINTS, ControllerSettings(latency_budget_ms=budget))
    lat, miou, idx = run_closed_loop(ctrl, trace)
    assert (lat <= budget).mean() >= 0.99
    minutes = len(trace) * 0.1 / 60                                   # 10 Hz camera
    assert ctrl.switches / minutes < 30
    # accuracy at least that of the best static point that always fits this budget
    static_fits = [p for p in POINTS if (p.latency_ms * trace <= budget).mean() >= 0.99]
    assert miou.mean() >= max(p.miou for p in static_fits)


def test_few_switches_at_steady_load():
    trace = np.exp(np.random.default_rng(3).normal(0, 0.05, 1200)) * 1.3
    ctrl = Controller(POINTS, ControllerSettings(latency_budget_ms=90.0))
    _, _, idx = run_closed_loop(ctrl, trace)
    assert np.count_nonzero(np.diff(idx[200:])) <= 4             # a few per 100 s at 10 Hz


def test_goes_down_at_once_and_up_only_after_a_dwell():
    ctrl = Controller(POINTS, ControllerSettings(latency_budget_ms=100.0, dwell_frames=15))
    assert ctrl.choose(Signals()).point.policy == 'full'
    for _ in range(3):
        ctrl.observe(170.0)                                           # machine 2x slower
    assert ctrl.choose(Signals()).index < len(POINTS) - 2
    low = ctrl.index
    ups = []
    for _ in range(200):
        ctrl.observe(POINTS[ctrl.index].latency_ms)                   # machine back to normal
        ups.append(ctrl.choose(Signals()).index)
    steps = np.diff([low, *ups])
    assert steps.max() == 1 and steps.min() >= 0                      # one level at a time
    first_up = int(np.argmax(steps > 0))
    assert first_up >= 10                                            # waited for the dwell
    # back up to the most accurate point that fits with the up-hysteresis headroom
    s = ctrl.settings
    limit = s.up_headroom * (1 - s.margin) * s.latency_budget_ms
    assert ups[-1] == max(i for i, p in enumerate(POINTS) if p.latency_ms <= limit)


def test_battery_tiers_scale_then_cap_and_charging_lifts_them():
    s = ControllerSettings(latency_budget_ms=100.0)
    ctrl = Controller(POINTS, s)
    assert ctrl.choose(Signals(battery=0.9)).budget_ms == 100.0
    for _ in range(10):
        d = ctrl.choose(Signals(battery=0.2))
    assert d.battery_tier == 'low' and d.budget_ms == pytest.approx(60.0)
    for _ in range(10):
        d = ctrl.choose(Signals(battery=0.05))
    assert d.battery_tier == 'critical'
    assert d.point.latency_ms <= s.battery_critical_latency_fraction * POINTS[-1].latency_ms
    d = ctrl.choose(Signals(battery=0.05, charging=True))
    assert d.battery_tier == 'charging' and d.budget_ms == 100.0
    # hysteresis: back above low only 5 points above the threshold
    ctrl = Controller(POINTS, s)
    for _ in range(10):
        ctrl.choose(Signals(battery=0.25))
    for _ in range(20):
        d = ctrl.choose(Signals(battery=0.32))
    assert d.battery_tier == 'low'
    for _ in range(20):
        d = ctrl.choose(Signals(battery=0.4))
    assert d.battery_tier == 'ok'


def test_cpu_load_feeds_the_slowdown_forward():
    ctrl = Controller(POINTS, ControllerSettings(latency_budget_ms=100.0))
    before = ctrl.predicted_ms(len(POINTS) - 1)
    d = ctrl.choose(Signals(cpu_load=0.95))
    assert d.cpu_tier == 'high'
    assert ctrl.predicted_ms(len(POINTS) - 1) == pytest.approx(before * 1.5)
    assert d.index < len(POINTS) - 1                                  # moved down before a miss
    d = ctrl.choose(Signals(cpu_load=0.75))                           # within hysteresis
    assert d.cpu_tier == 'high'
    d = ctrl.choose(Signals(cpu_load=0.3))
    assert d.cpu_tier == 'normal' and ctrl.m == pytest.approx(0.0)


def test_consecutive_misses_drop_two_levels():
    ctrl = Controller(POINTS, ControllerSettings(latency_budget_ms=1000.0, smoothing=0.01))
    ctrl.choose(Signals())
    top = ctrl.index
    ctrl.settings.latency_budget_ms = 79.0
    ctrl.observe(85.0)
    ctrl.observe(85.0)
    assert ctrl.choose(Signals()).index <= top - 2


def test_modes_and_validation():
    ctrl = Controller(POINTS, ControllerSettings(mode='fixed', fixed_point='cbt:0.5,0.95'))
    assert ctrl.choose(Signals(battery=0.01)).point.policy == 'cbt:0.5,0.95'
    ctrl = Controller(POINTS, ControllerSettings(mode='full', latency_budget_ms=1.0))
    assert ctrl.choose(Signals()).point.policy == 'full'
    ctrl = Controller(POINTS, ControllerSettings(mode='fixed', fixed_point='entropy:0.3'))
    d = ctrl.choose(Signals())
    assert d.point.policy == 'entropy:0.3' and d.index == -1
    ctrl.observe(50.0)
    assert ctrl.m == 0.0
    ctrl.update_settings(ControllerSettings(mode='adaptive'))
    assert ctrl.choose(Signals()).index >= 0
    with pytest.raises(ValueError, match='not in the profile'):
        ctrl.index_of('nope')
    for bad in (dict(latency_budget_ms=-5), dict(latency_budget_ms=math.nan),
                dict(mode='fast'), dict(battery_low=0.1, battery_critical=0.2)):
        with pytest.raises(ValueError):
            ControllerSettings(**bad).validate()


def test_deadline_guard_stops_when_the_next_stage_does_not_fit():
    costs = {'tokens': 690, 'block_ms_intercept': 0.5, 'block_ms_per_token': 0.01,
             'blocks_per_stage': [2, 2, 2, 2], 'exit_token_head_ms': 0.2,
             'exit_dense_head_ms': 0.3, 'decoder_ms': 10.0}
    now = [0.0]
    ctrl = Controller(POINTS, ControllerSettings(), stage_costs=costs)
    guard = ctrl.guard(start=0.0, budget_ms=60.0, clock=lambda: now[0])
    now[0] = 0.030          # 30 ms in: next stage ~15 ms + decoder 10 ms fits in 60
    assert not guard(0)
    now[0] = 0.040          # 40 ms in: 40 + 15 + 10 > 60
    assert guard(1)


def test_a_loaded_cpu_asks_for_fewer_threads_and_a_quiet_one_gives_them_back():
    ctrl = Controller(POINTS, ControllerSettings(latency_budget_ms=100.0, cpu_high=0.8,
                                                 cpu_hysteresis=0.1, cpu_high_threads=1))
    assert ctrl.choose(Signals(cpu_load=0.2)).threads == 0          # as configured
    assert ctrl.choose(Signals(cpu_load=0.95)).threads == 1
    assert ctrl.choose(Signals(cpu_load=0.75)).threads == 1         # hysteresis holds it
    assert ctrl.choose(Signals(cpu_load=0.6)).threads == 0
    assert ctrl.choose(Signals()).threads == 0                      # unknown load: no change
    keep = Controller(POINTS, ControllerSettings(cpu_high_threads=0))
    assert keep.choose(Signals(cpu_load=1.0)).threads == 0
    with pytest.raises(ValueError, match='cpu high threads'):
        ControllerSettings(cpu_high_threads=-1).validate()


def test_frames_that_stay_costlier_than_profiled_make_the_point_dearer():
    budget = 100.0
    ctrl = Controller(POINTS, ControllerSettings(latency_budget_ms=budget))
    i = ctrl.index_of('cbt:0.7,0.99')
    ctrl.index = i
    # one hard frame (40% more multiply-adds, proportionally slower): not a slow machine
    ctrl.observe(POINTS[i].latency_ms * 1.4, cost_ratio=1.4)
    assert ctrl.m == pytest.approx(0.0)
    assert ctrl.predicted_ms(i) < POINTS[i].latency_ms * 1.15
    # frames that stay 40% costlier (fewer tokens stop, as in an unfamiliar scene)
    for _ in range(30):
        ctrl.observe(POINTS[i].latency_ms * 1.4, cost_ratio=1.4)
    assert ctrl.m == pytest.approx(0.0, abs=1e-9)
    assert ctrl.predicted_ms(i) == pytest.approx(POINTS[i].latency_ms * 1.4, rel=0.02)
    assert ctrl.predicted_ms(0) == pytest.approx(POINTS[0].latency_ms)   # others unaffected
