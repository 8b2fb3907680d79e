"""Rosbag replay: bags in and out, frame accounting, labels, timing modes, bad input."""

import json

import numpy as np
import pytest

from ee_seg_ros.cli import main as ee_seg
from ee_seg_ros.outdir import OutputError
from ee_seg_ros.replay.bagio import IMAGE, BagError, BagReader, BagWriter
from ee_seg_ros.replay.make_bag import IMAGE_TOPIC, bag_from_images

SIZE = (72, 100)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    from conftest import calibrated_tiny_bundle
    root = tmp_path_factory.mktemp('replay')
    bundle = calibrated_tiny_bundle(root, SIZE, 6, val_seed=2)
    bag = bag_from_images(root / 'data' / 'val', root / 'bag', root / 'data' / 'valannot',
                          rate=5, battery_trace='drain:0.5,0.05', cpu_trace='spike:0.2,0.6,0.95')
    return {'root': root, 'bundle': bundle, 'bag': bag}


def replay(world, out, *extra):
    return ee_seg(['replay', str(world['bag']), '--out', str(out), '--model',
                   str(world['bundle']), '--quiet', '--threads', '1', *extra])


def load(out):
    return json.loads((out / 'report.json').read_text())


def test_replay_accounts_for_every_frame_and_writes_outputs(world, tmp_path):
    out = tmp_path / 'r'
    assert replay(world, out, '--compare', 'full') == 0
    r = load(out)
    assert r['frames_received'] == 6 and r['frames_processed'] == 6 and r['frames_accounted']
    assert r['topics'] == {'image': IMAGE_TOPIC, 'labels': '/camera/labels',
                           'battery': '/battery_state', 'cpu': '/cpu_load'}
    assert r['miou'] is not None and r['frames_without_label'] == 0
    assert r['agreement_miou_with_full'] is not None
    assert len(r['series']) == 6 and r['series'][-1]['battery'] < 0.2
    assert any(s['cpu_load'] and s['cpu_load'] > 0.9 for s in r['series'])
    for name in ('report.md', 'latency.png', 'policy.png', 'exits.png', 'miou_vs_cost.png',
                 'samples.png'):
        assert (out / name).stat().st_size > 100, name
    with BagReader(out / 'output_bag') as b:
        masks = [m for m in b.messages(['/ee_segmenter/mask'])]
        stats = [m for m in b.messages(['/ee_segmenter/exit_stats'])]
    assert len(masks) == len(stats) == r['frames_processed']
    assert (masks[0].msg.height, masks[0].msg.width) == SIZE
    assert (out / 'output_bag' / 'metadata.yaml').read_text().count('version: 8') == 1


def test_replay_miou_equals_eval_at_the_same_policy(world, tmp_path):
    for policy in ('full', 'cbt:0.3,0.8'):
        out = tmp_path / policy.replace(':', '_')
        assert replay(world, out, '--policy', policy) == 0
        ev = tmp_path / 'eval.json'
        assert ee_seg(['eval', '--root', str(world['root'] / 'data'), '--split', 'val',
                       '--model', str(world['bundle']), '--policy', policy, '--json', str(ev),
                       '--quiet', '--threads', '1']) == 0
        assert load(out)['miou'] == pytest.approx(json.loads(ev.read_text())['miou'])


def test_realtime_timing_drops_frames_that_arrive_while_busy(world, tmp_path):
    fast = world['root'] / 'fast_bag'
    bag_from_images(world['root'] / 'data' / 'val', fast, world['root'] / 'data' / 'valannot',
                    rate=5000)
    out = tmp_path / 'rt'
    assert ee_seg(['replay', str(fast), '--out', str(out), '--model', str(world['bundle']),
                   '--timing', 'realtime', '--quiet', '--threads', '1']) == 0
    r = load(out)
    assert r['frames_dropped'] > 0 and r['frames_accounted'] and r['frames_received'] == 6


def test_paced_timing_runs_on_the_wall_clock_like_a_live_node(world, tmp_path):
    """Paced is realtime with the waits done for real: the 6 frames at 5 Hz take at least the
    bag's 1 s, none is dropped (each is done long before the next), the masks are realtime's."""
    for timing in ('realtime', 'paced'):
        assert ee_seg(['replay', str(world['bag']), '--out', str(tmp_path / timing),
                       '--model', str(world['bundle']), '--timing', timing, '--policy',
                       'full', '--quiet', '--threads', '1']) == 0
    paced, realtime = load(tmp_path / 'paced'), load(tmp_path / 'realtime')
    assert paced['timing'] == 'paced' and paced['wall_s'] >= 1.0    # the bag spans 1 s
    assert paced['frames_processed'] == 6 and paced['frames_dropped'] == 0
    assert paced['confusion_matrix'] == realtime['confusion_matrix']


def test_mcap_compressed_and_several_bags_in_parallel(world, tmp_path):
    mcap = bag_from_images(world['root'] / 'data' / 'val', tmp_path / 'mcap_bag',
                           world['root'] / 'data' / 'valannot', storage='mcap',
                           compressed=True)
    out = tmp_path / 'many'
    assert ee_seg(['replay', str(world['bag']), str(mcap), '--out', str(out), '--model',
                   str(world['bundle']), '--jobs', '2', '--storage', 'mcap', '--quiet',
                   '--threads', '2']) == 0
    bags = json.loads((out / 'report.json').read_text())['bags']
    assert [b['frames_processed'] for b in bags] == [6, 6]
    single = next((tmp_path / 'mcap_bag').glob('*.mcap'))
    assert replay({**world, 'bag': single}, tmp_path / 'single') == 0


def test_bad_frames_and_labels_are_counted_not_fatal(world, tmp_path):
    bag = tmp_path / 'bad_bag'
    w = BagWriter(bag)
    rgb = np.zeros((*SIZE, 3), np.uint8)
    t0 = 1_700_000_000_000_000_000
    for i in range(5):
        h = w.header(t0 + i, 'cam')
        if i == 1:
            w.image(IMAGE_TOPIC, t0 + i, h, rgb, 'nv21')
        elif i == 2:
            w.compressed(IMAGE_TOPIC + '_c', t0 + i, h, b'garbage', 'jpeg')
            w.image(IMAGE_TOPIC, t0 + i, h, rgb, 'rgb8')
        else:
            w.image(IMAGE_TOPIC, t0 + i, h, rgb, 'rgb8')
        if i == 0:
            w.image('/camera/labels', t0 + i, h, np.zeros((10, 10), np.uint8), 'mono8')
        elif i == 2:
            w.image('/camera/labels', t0 + i, h, np.full(SIZE, 40, np.uint8), 'mono8')
        elif i == 3:
            w.image('/camera/labels', t0 + i, h, np.full(SIZE, 3, np.uint8), 'mono8')
    w.close()
    out = tmp_path / 'bad'
    assert replay({**world, 'bag': bag}, out, '--image-topic', IMAGE_TOPIC) == 0
    r = load(out)
    assert r['frames_received'] == 5 and r['frames_rejected'] == 1 and r['frames_accounted']
    assert r['rejected_reasons'] == {"bad image: unsupported image encoding 'nv21'": 1}
    assert sum(r['label_rejections'].values()) == 2      # wrong size, ids out of range
    assert r['frames_without_label'] == 1                # stamp 4 has no label
    # corrupt JPEG frames on a CompressedImage topic are rejected, counted; with no frame
    # left the run fails (exit 1), and its report says why
    out = tmp_path / 'bad_jpeg'
    assert replay({**world, 'bag': bag}, out, '--image-topic', IMAGE_TOPIC + '_c') == 1
    assert load(out)['frames_rejected'] == 1


def test_refusals_with_clear_errors(world, tmp_path, capsys):
    out = tmp_path / 'exists'
    out.mkdir()
    assert replay(world, out) == 2
    assert 'exists' in capsys.readouterr().err
    assert replay(world, out, '--overwrite') == 0
    assert replay(world, tmp_path / 'x', '--image-topic', '/nope') == 2
    err = capsys.readouterr().err
    assert "'/nope' is not in" in err and '/camera/image_raw' in err
    # refused before anything is written: the same command with the right topic then works
    assert not (tmp_path / 'x').exists()
    (tmp_path / 'notabag.txt').write_text('hello')
    assert replay({**world, 'bag': tmp_path / 'notabag.txt'}, tmp_path / 'y') == 2
    assert 'is not a bag' in capsys.readouterr().err
    (tmp_path / 'dir').mkdir()
    assert replay({**world, 'bag': tmp_path / 'dir'}, tmp_path / 'z') == 2
    assert 'metadata.yaml' in capsys.readouterr().err


def test_truncated_corrupt_and_empty_bags(world, tmp_path, capsys):
    import shutil
    broken = tmp_path / 'broken'
    shutil.copytree(world['bag'], broken)
    db = next(broken.glob('*.db3'))
    db.write_bytes(db.read_bytes()[:3000])
    assert replay({**world, 'bag': broken}, tmp_path / 'a') == 2
    assert 'bag' in capsys.readouterr().err
    empty = tmp_path / 'empty'
    w = BagWriter(empty)
    w.writer.add_connection(IMAGE_TOPIC, IMAGE, typestore=w.ts)
    w.close()
    assert replay({**world, 'bag': empty}, tmp_path / 'b') == 2
    assert 'holds no messages' in capsys.readouterr().err


def test_score_reads_back_what_replay_recorded(world, tmp_path):
    out = tmp_path / 'r'
    assert replay(world, out, '--policy', 'full') == 0
    scored = tmp_path / 's'
    assert ee_seg(['score', str(out / 'output_bag'), '--labels', str(world['bag']),
                   '--out', str(scored), '--model', str(world['bundle'])]) == 0
    assert load(scored)['miou'] == pytest.approx(load(out)['miou'])
    assert load(scored)['frames_processed'] == 6
    assert (load(scored)['frames_in_bag'], load(scored)['frames_lost']) == (6, 0)


def test_score_counts_the_frames_that_never_reached_the_node(world, tmp_path):
    """A recording whose node saw 4 of the bag's 6 frames (as a best-effort subscriber can):
    score says 6 in the bag, 2 lost before the node, and prints it."""
    out = tmp_path / 'r'
    assert replay(world, out, '--policy', 'full') == 0
    cut = tmp_path / 'cut'
    writer = BagWriter(cut)
    with BagReader(out / 'output_bag') as bag:
        kept = {c.topic: 0 for c in bag.connections}
        for conn, time_ns, raw in bag.reader.messages(connections=bag.connections):
            if conn.topic.endswith(('/mask', '/exit_stats')):
                kept[conn.topic] += 1
                if kept[conn.topic] > 4:
                    continue
            writer.write_raw(conn.topic, conn.msgtype, time_ns, raw)
    writer.close()
    scored = tmp_path / 's'
    assert ee_seg(['score', str(cut), '--labels', str(world['bag']), '--out', str(scored),
                   '--model', str(world['bundle'])]) == 0
    report = load(scored)
    assert (report['frames_in_bag'], report['frames_received'], report['frames_lost']) == \
        (6, 4, 2)
    assert '| frames in the input bag / lost before the node | 6 / 2 |' in \
        (scored / 'report.md').read_text()


def test_bag_from_images_refuses_bad_arguments(world, tmp_path):
    with pytest.raises(BagError, match='cannot parse trace'):
        bag_from_images(world['root'] / 'data' / 'val', tmp_path / 'b', battery_trace='up')
    with pytest.raises(BagError, match='not a folder'):
        bag_from_images(tmp_path / 'none', tmp_path / 'b')
    with pytest.raises(OutputError, match='exists'):
        bag_from_images(world['root'] / 'data' / 'val', world['bag'])
