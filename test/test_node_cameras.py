"""The segmenter with several cameras, against a real rclpy and Fast DDS on loopback (as
test_node.py): one network, each camera's frames out on its own topics with its own header,
no starvation, priority, counts per camera and in total, a bad frame on one camera leaving
the others alone, and a clean Ctrl-C while frames flow on every camera."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from test_node import (H, W, bundle, node_here, probe, publish_frames,  # noqa: F401
                       rclpy, rgb_msg, segmenter_node)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402,I100
from sensor_msgs.msg import Image  # noqa: E402

CAMERAS = ('front', 'rear', 'left')


class CameraListener:
    """What the node publishes for each camera, and its /diagnostics."""

    def __init__(self, probe, ns, cameras=CAMERAS):  # noqa: F811
        self.masks = {c: [] for c in cameras}
        self.stats = {c: [] for c in cameras}
        self.diagnostics = []
        for c in cameras:
            probe.create_subscription(Image, f'/{ns}/ee_segmenter/{c}/mask',
                                      lambda m, c=c: self.masks[c].append(m), 500)
            probe.create_subscription(DiagnosticArray, f'/{ns}/ee_segmenter/{c}/exit_stats',
                                      lambda m, c=c: self.stats[c].append(m), 500)
        probe.create_subscription(DiagnosticArray, '/diagnostics',
                                  lambda m: self.diagnostics.append(m), 50)

    def last(self, camera) -> dict:
        return {kv.key: kv.value for kv in self.stats[camera][-1].status[0].values}

    def status(self, name: str) -> dict | None:
        for msg in reversed(self.diagnostics):
            for st in msg.status:
                if st.name == name:
                    return {'level': st.level, 'message': st.message,
                            **{kv.key: kv.value for kv in st.values}}
        return None


def balanced(stats: dict, prefix: str = '') -> bool:
    get = lambda k: int(stats[f'{prefix}frames_{k}'])  # noqa: E731
    return get('received') == (get('processed') + get('dropped') + get('rejected')
                              + get('pending'))


def test_three_cameras_share_one_node(probe, segmenter_node):  # noqa: F811
    node = segmenter_node('multi', latency_budget_ms=5000.0, input__reliable=True,
                          cameras=list(CAMERAS))
    out = CameraListener(probe, 'multi')
    pubs = {c: probe.create_publisher(Image, f'/multi/{c}/image', 10) for c in CAMERAS}
    # a few frames on each camera, interleaved; stamps tell the cameras apart
    base = {'front': 100, 'rear': 200, 'left': 300}
    frames = []
    for k in range(3):
        for c in CAMERAS:
            frames.append((c, rgb_msg(base[c] + k, frame_id=f'{c}_optical')))
    for c in CAMERAS:
        assert probe.spin_until(lambda: pubs[c].get_subscription_count() > 0)
    probe.spin_until(lambda: False, timeout=0.5)
    bad = rgb_msg(250, encoding='nv21', frame_id='rear_optical')   # one bad frame, on rear
    for i, (c, msg) in enumerate(frames):
        pubs[c].publish(msg)
        probe.spin_until(lambda: False, timeout=0.15)
        if i == 4:     # after a gap: a reader of depth 1 would replace the frame before it
            pubs['rear'].publish(bad)
            probe.spin_until(lambda: False, timeout=0.15)
    assert probe.spin_until(lambda: all(out.stats[c] and int(out.last(c)['frames_received'])
                                        >= (4 if c == 'rear' else 3) for c in CAMERAS),
                            timeout=30), ({c: len(out.stats[c]) for c in CAMERAS},
                                          {c: out.last(c) for c in CAMERAS if out.stats[c]})
    for c in CAMERAS:
        sent = {base[c] + k for k in range(3)}
        assert out.masks[c], c
        for mask in out.masks[c]:      # that camera's header, never another's
            assert mask.header.frame_id == f'{c}_optical', (c, mask.header.frame_id)
            assert mask.header.stamp.sec in sent and mask.header.stamp.nanosec == 123
            assert (mask.height, mask.width, mask.encoding) == (H, W, 'mono8')
        stats = out.last(c)
        assert stats['camera'] == c and balanced(stats) and balanced(stats, 'total_')
        assert int(stats['frames_rejected']) == (1 if c == 'rear' else 0)
        assert int(stats['frames_processed']) == 3      # the bad frame disturbed no one
    # no starvation: front floods, rear and left send a frame now and then
    before = {c: int(out.last(c)['frames_processed']) for c in CAMERAS}
    slow_sent = 0
    for k in range(300):
        pubs['front'].publish(rgb_msg(1000 + k, frame_id='front_optical'))
        if k % 60 == 30:
            for c in ('rear', 'left'):
                pubs[c].publish(rgb_msg(base[c] + 10 + k, frame_id=f'{c}_optical'))
            slow_sent += 1
        probe.spin_until(lambda: False, timeout=0.002)
    assert probe.spin_until(lambda: all(
        int(out.last(c)['frames_processed']) >= before[c] + slow_sent
        for c in ('rear', 'left')), timeout=30), {c: out.last(c) for c in CAMERAS}
    assert int(out.last('front')['frames_processed']) > before['front']
    # the 1 Hz summary: the node's status and one per camera
    name = '/multi/ee_segmenter'
    assert probe.spin_until(lambda: out.status(f'{name}: camera left') is not None
                            and out.status(f'{name}: Status') is not None, timeout=15)
    total, left = out.status(f'{name}: Status'), out.status(f'{name}: camera left')
    assert total['cameras'] == 'front,rear,left' and balanced(left) and left['priority'] == '0'
    assert int(total['frames_received']) >= sum(int(out.status(f'{name}: camera {c}')[
        'frames_received']) for c in CAMERAS) - 3      # a later second may have more
    try:                       # Nav2 needs LabelInfo: without vision_msgs the node says so
        import vision_msgs  # noqa: F401
    except ImportError:
        assert 'vision_msgs is not installed' in node.output()
    # Ctrl-C while frames flow on every camera: a clean stop
    for k in range(40):
        for c in CAMERAS:
            pubs[c].publish(rgb_msg(2000 + k, frame_id=f'{c}_optical'))
        probe.spin_until(lambda: False, timeout=0.01)
        if k == 20:
            node.proc.send_signal(signal.SIGINT)
    assert node.stop() == 0, node.output()
    assert 'Traceback' not in node.output()


def test_one_network_serves_every_camera_by_priority(node_here, monkeypatch):  # noqa: F811
    """In this process (no executor): the network is built once for three cameras, and when
    frames of every camera wait, the higher priority is served first, then the oldest."""
    import ee_seg_ros.ros.node as node_module
    built = []
    real = node_module.Segmenter

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(node_module, 'Segmenter', counting)
    node = node_here(cameras=list(CAMERAS), camera_priorities=[0, 0, 5],
                     latency_budget_ms=5000.0)
    assert len(built) == 1 and node.shared.pipeline is node.pipeline
    topics = {p.topic_name for p in node.publishers}
    for c in CAMERAS:
        assert {f'/ee_segmenter/{c}/mask', f'/ee_segmenter/{c}/exit_stats'} <= topics
    assert '/ee_segmenter/mask' not in topics
    assert len([t for t in topics if t.endswith('label_info')]) <= 1
    subs = {s.topic_name for s in node.subscriptions}
    assert {'/front/image', '/rear/image', '/left/image'} <= subs
    served = []
    finish = node.shared.finish
    monkeypatch.setattr(node.shared, 'finish',
                        lambda w, *a, **k: served.append(w.camera) or finish(w, *a, **k))
    for stamp, c in enumerate(['rear', 'front', 'left', 'front']):   # front's first dropped
        node._on_image(c, rgb_msg(stamp + 1, frame_id=c), {})   # no middleware info
    steps = iter(range(3))
    node.serve_frames(lambda: next(steps, None) is not None, poll_s=0.01)
    assert served == ['left', 'rear', 'front']
    sched = node.shared.scheduler
    assert sched.counts['front'].dropped == 1 and sched.balanced()
    assert sched.total().received == 4 and sched.total().processed == 3


def test_cameras_are_checked_at_start_up(node_here):  # noqa: F811
    with pytest.raises(ValueError, match='cameras must be different'):
        node_here(cameras=['front', 'front'])
    with pytest.raises(ValueError, match='topic names'):
        node_here(cameras=['front/left'])
    with pytest.raises(ValueError, match='one per camera'):
        node_here(cameras=['front', 'rear'], camera_priorities=[1])


def test_without_cameras_the_topics_are_those_of_one_camera(node_here):  # noqa: F811
    node = node_here()
    topics = {p.topic_name for p in node.publishers}
    assert {'/ee_segmenter/mask', '/ee_segmenter/exit_stats'} <= topics
    assert not any(t.startswith('/ee_segmenter/front') for t in topics)
    assert '/image' in {s.topic_name for s in node.subscriptions}
    assert node.shared.cameras == ['']
    assert np.array_equal(node.get_parameter('cameras').value or [], [])


def test_the_multi_camera_config_is_valid():
    from pathlib import Path

    import yaml

    from ee_seg_ros.ros.parameters import PARAMS, camera_setup, check
    root = Path(__file__).resolve().parents[1]
    values = yaml.safe_load((root / 'config' / 'multi_camera.yaml').read_text())[
        '/**']['ros__parameters']
    names = {p.name for p in PARAMS}
    for name, value in values.items():
        assert name in names and check(name, value) is None, name
    cameras, priorities = camera_setup(values)
    assert cameras == ['front', 'rear', 'left'] and priorities['front'] == 2


def test_a_bundle_above_256_classes_is_warned_about_at_start_up(tmp_path, monkeypatch):
    """Nav2's layer reads 8-bit ids: the node says so when the bundle has more classes."""
    import torch
    from rclpy.impl.rcutils_logger import RcutilsLogger
    from rclpy.parameter import Parameter as P

    from conftest import TINY
    from ee_seg_ros.bundle import save_bundle
    from ee_seg_ros.data.labels import LabelSpec
    from ee_seg_ros.model import ModelConfig, MultiExitSegmenter
    from ee_seg_ros.ros.node import SegmenterNode
    spec = LabelSpec('many', tuple(f'c{i}' for i in range(300)),
                     tuple((i % 256, i // 256, 0) for i in range(300)), ignore_ids=())
    torch.manual_seed(0)
    model = MultiExitSegmenter(ModelConfig(**{**TINY, 'num_classes': 300})).eval()
    path = save_bundle(tmp_path / 'many', model, spec)
    warnings = []
    real = RcutilsLogger.warning
    monkeypatch.setattr(RcutilsLogger, 'warning',
                        lambda self, msg, **kw: warnings.append(msg) or real(self, msg, **kw))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = SegmenterNode(context=context, parameter_overrides=[
            P('model.path', value=str(path)), P('model.threads', value=1)])
        assert node.num_classes == 300
        assert any('300 classes' in w and 'at most 256' in w for w in warnings), warnings
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
