"""Several cameras sharing one network, without ROS: the scheduler, the model-time shares,
the controller's per-camera lanes, the shared pipeline and the per-frame record."""

import numpy as np
import pytest

from ee_seg_ros.bundle import save_bundle
from ee_seg_ros.control import Controller, ControllerSettings, OperatingPoint, Signals
from ee_seg_ros.data.labels import CAMVID
from ee_seg_ros.runtime import Frame, FrameRecord, Pipeline, Segmenter
from ee_seg_ros.runtime.cameras import CameraScheduler, SharedPipeline, share_model_time

from conftest import random_rgb

POINTS = [OperatingPoint('exit:0', 20.0, 55.0), OperatingPoint('cbt:0.5,0.9', 40.0, 60.0),
          OperatingPoint('full', 80.0, 62.0)]


def simulate(sched: CameraScheduler, rates: dict, service_s: float, seconds: float,
             phase: dict | None = None) -> list[str]:
    """Cameras at fixed rates, a model that takes ``service_s`` per frame; returns the order
    in which cameras were served."""
    arrivals = sorted(((phase.get(c, 0.0) if phase else 0.0) + k / r, c)
                      for c, r in rates.items() for k in range(int(seconds * r)))
    served, free_at = [], 0.0

    def advance(until: float) -> None:
        nonlocal free_at
        while sched.waiting():
            start = max(free_at, min(sched.peek_arrivals().values()))
            if start > until:
                return
            w = sched.take()
            served.append(w.camera)
            sched.counts[w.camera].processed += 1
            sched.release(w.camera)
            free_at = start + service_s

    for t, camera in arrivals:
        advance(t)
        sched.offer(camera, None, t)
        advance(t)
    advance(float('inf'))
    return served


def test_newest_frame_only_and_replaced_frames_are_dropped_for_their_camera():
    s = CameraScheduler(['front', 'rear'])
    s.offer('front', 'f1', 0.0)
    s.offer('front', 'f2', 0.1)
    s.offer('rear', 'r1', 0.05)
    assert s.counts['front'].dropped == 1 and s.counts['rear'].dropped == 0
    first = s.take()
    assert (first.camera, first.item) == ('rear', 'r1')          # the oldest waiting frame
    assert s.take().item == 'f2' and s.take() is None
    with pytest.raises(KeyError, match='unknown camera'):
        s.offer('left', 'x', 0.2)


def test_a_flooding_camera_does_not_starve_the_slow_ones():
    s = CameraScheduler(['flood', 'slow1', 'slow2'])
    served = simulate(s, {'flood': 500.0, 'slow1': 2.0, 'slow2': 3.0}, service_s=0.05,
                      seconds=10.0, phase={'slow1': 0.013, 'slow2': 0.027})
    for cam in ('slow1', 'slow2'):
        c = s.counts[cam]
        assert c.processed == c.received > 0 and c.dropped == 0, cam
    assert s.counts['flood'].processed > 150 and s.counts['flood'].dropped > 4000
    assert s.balanced() and s.total().received == sum(c.received for c in s.counts.values())
    assert served.count('slow1') == 20 and served.count('slow2') == 30


def test_priority_orders_service_when_the_model_cannot_keep_up():
    s = CameraScheduler(['a', 'b', 'c'], priorities={'c': 2, 'b': 1})
    for cam, t in (('a', 0.0), ('b', 0.1), ('c', 0.2)):
        s.offer(cam, cam, t)
    assert [s.take().camera for _ in range(3)] == ['c', 'b', 'a']
    # overloaded: three cameras at 10 Hz, a model that serves 15 frames per second
    s = CameraScheduler(['a', 'b', 'c'], priorities={'c': 2, 'b': 1})
    simulate(s, {'a': 10.0, 'b': 10.0, 'c': 10.0}, service_s=1 / 15, seconds=10.0,
             phase={'b': 0.001, 'c': 0.002})
    done = {k: c.processed for k, c in s.counts.items()}
    assert done['c'] == s.counts['c'].received and done['c'] > done['b'] > done['a']
    assert s.balanced()
    with pytest.raises(ValueError, match='unknown cameras'):
        CameraScheduler(['a'], priorities={'z': 1})


def test_counts_balance_per_camera_and_in_total_in_any_order():
    rng = np.random.default_rng(0)
    s = CameraScheduler(['a', 'b', 'c'])
    for i in range(500):
        op = rng.integers(0, 4)
        if op < 2:
            s.offer(['a', 'b', 'c'][rng.integers(0, 3)], i, i * 0.01)
        else:
            w = s.take()
            if w is None:
                continue
            assert not s.balanced() or s.waiting() >= 0   # in flight counts as accounted
            if op == 2:
                s.counts[w.camera].processed += 1
                s.release(w.camera)
            else:
                s.rejected(w.camera, 'bad image: test (details)')
        assert s.balanced()
    total = s.total()
    assert total.balanced() and total.pending == s.waiting()
    assert total.reasons == {'bad image: test': total.rejected}


def test_model_time_is_shared_so_every_camera_keeps_up():
    rates = {'a': 10.0, 'b': 10.0, 'c': 10.0}
    share = share_model_time(rates, {}, deadline_ms=100.0, floor_ms=10.0)
    assert share == pytest.approx({'a': 1000 / 30, 'b': 1000 / 30, 'c': 1000 / 30})
    # a slow camera set leaves the deadline as the bound
    assert share_model_time({'a': 2.0}, {}, 80.0, 10.0) == {'a': 80.0}
    # priority: the high camera gets up to the deadline, the rest what is left, >= the floor
    share = share_model_time(rates, {'a': 1}, deadline_ms=60.0, floor_ms=10.0)
    assert share['a'] == 60.0 and share['b'] == share['c'] == pytest.approx(20.0)
    assert sum(share[c] * rates[c] for c in rates) <= 1000.0 + 1e-9
    share = share_model_time(rates, {'a': 1}, deadline_ms=500.0, floor_ms=10.0)
    assert share['b'] == share['c'] == 10.0 and share['a'] == pytest.approx(80.0)
    # rates not known yet: the deadline; overloaded beyond the floor: the floor
    assert share_model_time({'a': 0.0}, {}, 70.0, 10.0) == {'a': 70.0}
    assert share_model_time({'a': 500.0}, {}, 70.0, 10.0) == {'a': 10.0}


def test_rates_follow_the_cameras_and_a_quiet_camera_slows():
    s = CameraScheduler(['a', 'b'])
    for k in range(20):
        s.offer('a', k, k * 0.1)
    assert s.rates(1.9)['a'] == pytest.approx(10.0) and s.rates(1.9)['b'] == 0.0
    assert s.rates(5.9)['a'] == pytest.approx(0.25)                # 4 s since its last frame


def test_controller_lanes_plan_within_the_limit_and_keep_hysteresis_per_camera():
    ctrl = Controller(POINTS, ControllerSettings(latency_budget_ms=100.0, dwell_frames=3))
    assert ctrl.choose(Signals(), lane='a').point.policy == 'full'
    ctrl.observe(70.0)
    d = ctrl.choose(Signals(), limit_ms=50.0, lane='b')          # 50 * 0.9 fits cbt only
    assert d.point.policy == 'cbt:0.5,0.9' and d.budget_ms == 100.0
    ctrl.observe(38.0)
    assert ctrl.choose(Signals(), lane='a').point.policy == 'full'   # a keeps its place
    ctrl.observe(72.0)
    assert ctrl.lane_index('a') == 2 and ctrl.lane_index('b') == 1
    # a frame that waited 50 of its 100 ms plans with what is left
    assert ctrl.choose(Signals(), lane='d', waited_ms=50.0).point.policy == 'cbt:0.5,0.9'
    ctrl.observe(38.0, elapsed_ms=88.0)
    # a miss is counted from the arrival: waiting included
    ctrl.choose(Signals(), lane='c')
    ctrl.observe(60.0, elapsed_ms=130.0)
    ctrl.choose(Signals(), lane='c')
    ctrl.observe(60.0, elapsed_ms=130.0)
    assert ctrl.choose(Signals(), lane='c').index == 0            # two misses: two down


@pytest.fixture
def shared(tmp_path, tiny_model):
    bundle = save_bundle(tmp_path / 'b', tiny_model, CAMVID)
    pipe = Pipeline(Segmenter(str(bundle)), ControllerSettings(latency_budget_ms=5000.0))
    return SharedPipeline(pipe, ['front', 'rear', 'left'], priorities={'front': 1})


def test_shared_pipeline_serves_cameras_and_records_their_frames(shared):
    image = random_rgb(60, 80)
    for k, cam in enumerate(['rear', 'left', 'front', 'rear']):
        shared.offer(cam, k, k * 0.01)
    records = []
    while (w := shared.scheduler.take()) is not None:
        if w.camera == 'left':
            shared.rejected(w, 'bad image: corrupt')
            continue
        result = shared.run(w, Frame(image, 1.0 + w.item, w.camera), Signals(), now=0.05)
        records.append(shared.finish(w, result, Signals(), stamp_ns=w.item))
    assert [r.camera for r in records] == ['front', 'rear']      # priority, then oldest
    rear = records[1]
    assert rear.wait_ms == pytest.approx(20.0) and rear.total_ms >= rear.latency_ms
    assert rear.camera_counts.received == 2 and rear.camera_counts.dropped == 1
    assert rear.total_counts.received == 4 and rear.total_counts.rejected == 1
    assert rear.deadline_met and shared.scheduler.balanced()
    assert shared.scheduler.counts['rear'].deadline_hits == 1
    # the record goes through ~/exit_stats strings and back unchanged
    back = FrameRecord.from_values(rear.to_values(), rear.stamp_ns, rear.frame_id, rear.time_s)
    assert back.to_values() == rear.to_values()
    assert back.guard_stop is False and back.deadline_met is True
    # a recording of the older node: no camera, wait or totals; flags as 'True'/'False'
    old = {'exit_taken': '3', 'stopped_fraction': '0.1000', 'gmacs': '1.5',
           'latency_ms': '40.0', 'budget_ms': '60.0', 'deadline_met': 'True',
           'guard_stop': 'False', 'operating_point': 'full', 'battery': 'unknown',
           'battery_tier': 'unknown', 'cpu_load': '0.500', 'cpu_tier': 'normal',
           'frames_received': '5', 'frames_processed': '4', 'frames_dropped': '1',
           'frames_rejected': '0'}
    r = FrameRecord.from_values(old, 7)
    assert (r.total_ms, r.wait_ms, r.battery, r.cpu_load) == (40.0, 0.0, None, 0.5)
    assert r.total_counts == r.camera_counts and r.total_counts.dropped == 1
    with pytest.raises(ValueError, match='latency_ms'):
        FrameRecord.from_values({**old, 'latency_ms': 'fast'}, 7)


def test_waiting_counts_against_the_deadline(shared):
    image = random_rgb(60, 80)
    shared.offer('rear', 0, 0.0)
    w = shared.scheduler.take()
    result = shared.run(w, Frame(image), Signals(), now=6.0)       # waited 6 s of a 5 s budget
    record = shared.finish(w, result, Signals(), stamp_ns=0)
    assert not result.deadline_met and not record.deadline_met
    assert record.wait_ms == pytest.approx(6000.0)
    assert shared.scheduler.counts['rear'].deadline_hits == 0 and shared.scheduler.balanced()


@pytest.mark.parametrize('gap_s, expected', [(0.5, 'full'), (0.002, 'exit:0')])
def test_the_cameras_frame_rates_move_the_point_before_drops_start(tmp_path, tiny_model,
                                                                    gap_s, expected):
    """Three cameras at 2 Hz leave every frame the deadline; at 500 Hz each the network's
    second holds 0.67 ms per frame, so the first frame already runs at the cheapest point
    (the deadline alone would have allowed full depth)."""
    bundle = save_bundle(tmp_path / 'b', tiny_model, CAMVID)
    pipe = Pipeline(Segmenter(str(bundle)), ControllerSettings(latency_budget_ms=100.0))
    pipe.controller = Controller([OperatingPoint('exit:0', 10.0, 55.0),
                                  OperatingPoint('full', 40.0, 62.0)],
                                 ControllerSettings(latency_budget_ms=100.0))
    shared = SharedPipeline(pipe, ['a', 'b', 'c'])
    t = 0.0
    for _ in range(4):
        for cam in ('a', 'b', 'c'):
            shared.offer(cam, None, t)
            t += gap_s / 3
    w = shared.scheduler.take()
    # 2 Hz each: the deadline; 500 Hz each: 0.67 ms, raised to the cheapest point's 10 ms
    # (it cannot go cheaper: frames will be dropped, and the point is the cheapest)
    assert shared.allowance(w.camera, w.arrival) == (100.0 if expected == 'full' else 10.0)
    result = shared.run(w, Frame(random_rgb(60, 80)), Signals(), now=w.arrival)
    assert result.decision.point.policy == expected


def test_counts_read_while_a_frame_is_in_the_model_still_add_up(shared):
    """The 1 Hz summary reads the counts at any moment: a frame taken and not yet settled is
    ``pending``, and processing it moves it to ``processed`` in one step."""
    shared.offer('front', 0, 0.0)
    shared.offer('rear', 1, 0.0)
    w = shared.scheduler.take()
    front = shared.scheduler.snapshot('front')
    assert (front.received, front.processed, front.pending) == (1, 0, 1) and front.balanced()
    assert shared.scheduler.total().pending == 2 and shared.scheduler.total().balanced()
    result = shared.run(w, Frame(random_rgb(60, 80), 1.0, 'front'), Signals(), now=0.01)
    front = shared.scheduler.snapshot('front')
    assert (front.processed, front.pending) == (1, 0) and front.balanced()
    record = shared.finish(w, result, Signals(), stamp_ns=0)
    assert record.camera_counts.pending == 0 and record.total_counts.pending == 1
    assert FrameRecord.from_values(record.to_values(), 0).total_counts.pending == 1
