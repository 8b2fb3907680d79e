"""Replay of multi-camera drives: one network and one scheduler for every camera topic,
sections per camera, outputs under each camera's name, depth topics never taken."""

import json

import numpy as np
import pytest

from ee_seg_ros.cli import main as ee_seg
from ee_seg_ros.data.folder import read_rgb
from ee_seg_ros.replay.bagio import BagReader, BagWriter
from ee_seg_ros.replay.cameras import camera_names

SIZE = (72, 100)
T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    import cv2
    from conftest import calibrated_tiny_bundle
    root = tmp_path_factory.mktemp('cameras')
    bundle = calibrated_tiny_bundle(root, SIZE, 8, val_seed=3)
    files = sorted((root / 'data' / 'val').glob('*.png'))
    frames = [read_rgb(p) for p in files]
    labels = [cv2.imread(str(root / 'data' / 'valannot' / p.name), cv2.IMREAD_UNCHANGED)
              for p in files]
    # two synchronised cameras (same stamps), each with its own labels; a depth camera too
    bag = root / 'two_cams'
    w = BagWriter(bag)
    for i in range(4):
        t = T0 + i * 100_000_000
        for cam, k in (('front', 2 * i), ('rear', 2 * i + 1)):
            h = w.header(t, cam)
            w.image(f'/{cam}/image_raw', t, h, frames[k], 'rgb8')
            w.image(f'/{cam}/labels', t, h, labels[k], 'mono8')
        w.image('/front/depth/image_raw', t, w.header(t, 'front_depth'),
                np.full(SIZE, 1000, np.uint16), '16UC1')
    w.close()
    depth_only = root / 'depth_only'
    w = BagWriter(depth_only)
    for i in range(2):
        w.image('/camera/depth/image_rect_raw', T0 + i, w.header(T0 + i, 'd'),
                np.zeros(SIZE, np.uint16), '16UC1')
    w.close()
    return {'root': root, 'bundle': bundle, 'bag': bag, 'depth_only': depth_only}


def replay(world, bag, out, *extra):
    return ee_seg(['replay', str(bag), '--out', str(out), '--model', str(world['bundle']),
                   '--quiet', '--threads', '1', *extra])


def load(out):
    return json.loads((out / 'report.json').read_text())


def test_every_colour_camera_is_replayed_with_a_section_each(world, tmp_path):
    out = tmp_path / 'both'
    assert replay(world, world['bag'], out, '--policy', 'cbt:0.3,0.8') == 0
    r = load(out)
    assert r['topics']['image'] == {'front': '/front/image_raw', 'rear': '/rear/image_raw'}
    assert r['topics']['labels'] == {'front': '/front/labels', 'rear': '/rear/labels'}
    assert set(r['cameras']) == {'front', 'rear'}
    for cam in ('front', 'rear'):
        c = r['cameras'][cam]
        assert (c['frames_received'], c['frames_processed'], c['frames_scored']) == (4, 4, 4)
        assert c['frames_accounted'] and c['miou'] is not None
    assert r['frames_received'] == 8 and r['frames_processed'] == 8 and r['frames_accounted']
    assert {s['camera'] for s in r['series']} == {'front', 'rear'}
    with BagReader(out / 'output_bag') as b:
        assert {'/ee_segmenter/front/mask', '/ee_segmenter/rear/mask',
                '/ee_segmenter/front/exit_stats', '/ee_segmenter/rear/exit_stats'} <= set(
                    b.topics)
        stats = [m for m in b.messages(['/ee_segmenter/rear/exit_stats'])]
        assert {kv.key: kv.value for kv in stats[0].msg.status[0].values}['camera'] == 'rear'
    assert '## Cameras' in (out / 'report.md').read_text()
    # each camera alone gives the same mIoU at a fixed policy
    for cam in ('front', 'rear'):
        alone = tmp_path / cam
        assert replay(world, world['bag'], alone, '--policy', 'cbt:0.3,0.8', '--image-topic',
                      f'/{cam}/image_raw') == 0
        a = load(alone)
        assert a['topics']['labels'] == f'/{cam}/labels'
        assert a['miou'] == pytest.approx(r['cameras'][cam]['miou'])
        assert a['frames_processed'] == 4


def test_score_reads_a_multi_camera_recording_per_camera(world, tmp_path):
    out = tmp_path / 'r'
    assert replay(world, world['bag'], out, '--policy', 'full') == 0
    scored = tmp_path / 's'
    assert ee_seg(['score', str(out / 'output_bag'), '--labels', str(world['bag']),
                   '--out', str(scored), '--model', str(world['bundle'])]) == 0
    s, r = load(scored), load(out)
    assert set(s['cameras']) == {'front', 'rear'}
    for cam in ('front', 'rear'):
        assert s['cameras'][cam]['miou'] == pytest.approx(r['cameras'][cam]['miou'])
        assert s['cameras'][cam]['frames_processed'] == 4
    assert s['frames_processed'] == 8 and s['frames_accounted']
    assert (s['frames_in_bag'], s['frames_lost']) == (8, 0)


def test_realtime_shares_the_model_and_counts_per_camera(world, tmp_path):
    out = tmp_path / 'rt'
    assert replay(world, world['bag'], out, '--timing', 'realtime', '--budget-ms', '5000',
                  '--priority', 'rear=1') == 0
    r = load(out)
    rear, front = r['cameras']['rear'], r['cameras']['front']
    assert r['frames_accounted'] and rear['frames_accounted'] and front['frames_accounted']
    assert rear['frames_received'] == front['frames_received'] == 4
    # synchronised cameras: front's frame comes first in the bag and finds the model free,
    # rear's (same stamp) waits for it, and waiting counts against the deadline; as in the
    # node, a frame's wait includes its decoding and its total the outputs at input size
    assert all(s['wait_ms'] == pytest.approx(s['decode_ms'], abs=1e-3)
               for s in r['series'] if s['camera'] == 'front')
    assert all(s['wait_ms'] > s['decode_ms'] for s in r['series'] if s['camera'] == 'rear')
    assert all(s['total_ms'] == pytest.approx(s['wait_ms'] + s['latency_ms'] + s['output_ms'],
                                               abs=1e-3)
               for s in r['series'])
    assert all(s['output_ms'] > 0 for s in r['series'])
    assert r['total_ms_p99'] >= r['latency_ms_p99']


def test_a_depth_topic_is_never_taken_for_a_camera(world, tmp_path, capsys):
    out = tmp_path / 'front_only'
    assert replay(world, world['bag'], out, '--image-topic', '/front/image_raw') == 0
    assert 'cameras' in load(out) and load(out)['topics']['image'] == '/front/image_raw'
    assert replay(world, world['depth_only'], tmp_path / 'd') == 2
    assert 'depth' in capsys.readouterr().err
    assert replay(world, world['bag'], tmp_path / 'p', '--priority', 'left=1') == 2
    assert "priority for cameras ['left']" in capsys.readouterr().err
    assert replay(world, world['bag'], tmp_path / 'l', '--labels-dir',
                  str(world['root'] / 'data' / 'valannot')) == 2
    assert 'labels for one camera' in capsys.readouterr().err


def test_camera_names_come_from_the_topics():
    assert camera_names(['/front/image_raw', '/rear/image_raw']) == ['front', 'rear']
    assert camera_names(['/camera/image_raw']) == ['camera']
    assert camera_names(['/robot/left/color/image_raw', '/robot/right/color/image_raw']) == [
        'robot_left_color', 'robot_right_color']
    assert camera_names(['/a/cam/image', '/b/cam/image']) == ['a_cam', 'b_cam']
    assert camera_names(['/front/image_raw/compressed']) == ['front']


def test_input_width_resizes_as_the_node_does_and_scores_at_camera_size(world, tmp_path):
    out = tmp_path / 'w'
    assert replay(world, world['bag'], out, '--policy', 'full', '--input-width', '50',
                  '--image-topic', '/rear/image_raw') == 0
    r = load(out)
    assert r['frames_processed'] == 4 and r['frames_scored'] == 4 and r['miou'] is not None
    with BagReader(out / 'output_bag') as b:
        masks = [m.msg for m in b.messages(['/ee_segmenter/mask'])]
    assert {(m.height, m.width) for m in masks} == {SIZE}     # back at the camera's size
