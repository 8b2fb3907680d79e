"""Bags as other tools write them: service-event channels and custom types that rosbags cannot
parse, RealSense / OpenNI camera layouts, depth-only bags, and one-line errors for broken ones.
Test bags are built with rosbags' writers, the way ``ros2 bag record`` lays them out."""

import numpy as np
import pytest

from ee_seg_ros.cli import main as ee_seg
from ee_seg_ros.replay.bagio import COMPRESSED, IMAGE, BagError, BagReader, BagWriter

SEP = '=' * 80 + '\n'
# what Jazzy's rosbag2 stores as the schema of a service-event channel: the raw .srv
# (ros2/rosbag2#2365), which no .msg parser accepts
SERVICE_EVENT = (SEP + 'SRV: example_interfaces/srv/AddTwoInts\nint64 a\nint64 b\n---\n'
                 'int64 sum\n')
UNPARSEABLE = 'int32 x\n!!garbage\n'
UNRESOLVED = 'int32 x\nother_pkg/Thing thing\n'   # parses, but Thing is defined nowhere
PARSEABLE = 'std_msgs/Header header\nfloat64 speed\nstring mode\n'
HASH = 'RIHS01_' + '0' * 64
T0 = 1_700_000_000_000_000_000
SIZE = (24, 32)


def frame(writer, topic, i, encoding='rgb8', pixels=None):
    h = writer.header(T0 + i, 'cam')
    if pixels is None:
        channels = {'rgb8': 3, 'bgr8': 3, 'mono8': 1}.get(encoding)
        dtype = np.float32 if encoding == '32FC1' else (
            np.uint16 if encoding in ('16UC1', 'mono16') else np.uint8)
        shape = SIZE if channels in (None, 1) else (*SIZE, channels)
        pixels = np.full(shape, 40 + i, dtype)
    writer.image(topic, T0 + i, h, pixels, encoding)


def write_bag(path, images: dict[str, str], storage='mcap', frames=3, extra=True,
              compressed: dict[str, str] | None = None):
    """A bag with these image topics (topic -> encoding), optionally a service-event channel
    and custom types on other topics, as ``ros2 bag record -a --all-services`` writes."""
    w = BagWriter(path, storage)
    if extra:
        svc = w.writer.add_connection('/add_two_ints/_service_event',
                                      'example_interfaces/srv/AddTwoInts_Event',
                                      msgdef=SERVICE_EVENT, rihs01=HASH)
        bad = w.writer.add_connection('/weird', 'my_pkg/msg/Weird', msgdef=UNPARSEABLE,
                                      rihs01=HASH)
        lost = w.writer.add_connection('/lost', 'my_pkg/msg/Lost', msgdef=UNRESOLVED,
                                       rihs01=HASH)
        lost2 = w.writer.add_connection('/lost2', 'my_pkg/msg/Lost', msgdef=UNRESOLVED,
                                        rihs01=HASH)     # the same type on a second topic
        good = w.writer.add_connection('/robot/status', 'my_pkg/msg/Status', msgdef=PARSEABLE,
                                       rihs01=HASH)
    for i in range(frames):
        for topic, enc in images.items():
            frame(w, topic, i, enc)
        for topic, fmt in (compressed or {}).items():
            import cv2
            data = cv2.imencode('.png', np.full((*SIZE, 3), 60, np.uint8))[1].tobytes()
            w.compressed(topic, T0 + i, w.header(T0 + i, 'cam'), data, fmt)
        if extra:
            w.writer.write(svc, T0 + i, b'\x00\x01\x00\x00' + bytes(60))
            w.writer.write(bad, T0 + i, b'\x00\x01\x00\x00' + bytes(8))
            w.writer.write(lost, T0 + i, b'\x00\x01\x00\x00' + bytes(8))
            w.writer.write(lost2, T0 + i, b'\x00\x01\x00\x00' + bytes(8))
            w.ts.register(_status_types())
            status = w.ts.types['my_pkg/msg/Status'](header=w.header(T0 + i, 'base'),
                                                     speed=0.5, mode='auto')
            w.writer.write(good, T0 + i, w.ts.serialize_cdr(status, 'my_pkg/msg/Status'))
    w.close()
    return path


def _status_types():
    from rosbags.typesys import get_types_from_msg
    return get_types_from_msg(PARSEABLE, 'my_pkg/msg/Status')


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_service_events_and_unparseable_types_are_left_out_not_fatal(tmp_path, storage):
    bag = write_bag(tmp_path / 'b', {'/camera/image_raw': 'rgb8'}, storage)
    with BagReader(bag) as b:
        assert b.topics['/camera/image_raw'] == IMAGE
        assert '/add_two_ints/_service_event' not in b.topics and '/weird' not in b.topics
        assert set(b.skipped) == {'/add_two_ints/_service_event', '/weird', '/lost', '/lost2'}
        assert b.skipped['/lost2'] == b.skipped['/lost']
        assert b.skipped['/lost'] == ('my_pkg/msg/Lost: it uses other_pkg/msg/Thing, which the '
                                      'bag does not define')
        assert all('\n' not in why for why in b.skipped.values())
        assert b.skipped['/weird'].startswith('my_pkg/msg/Weird: ')
        # a custom type whose definition parses is read with it
        assert b.topics['/robot/status'] == 'my_pkg/msg/Status'
        status = [m.msg for m in b.messages(['/robot/status'])]
        assert [s.mode for s in status] == ['auto'] * 3 and status[0].speed == 0.5
        frames = [m.msg for m in b.messages(['/camera/image_raw'])]
        assert len(frames) == 3 and frames[0].encoding == 'rgb8'
        assert b.camera_topic().topic == '/camera/image_raw'
        with pytest.raises(BagError, match=r"'/weird' is not in .*left out, its type cannot "
                                           r"be read: my_pkg/msg/Weird"):
            b.require('/weird', (IMAGE,), 'image')


REALSENSE = {'/camera/aligned_depth_to_color/image_raw': '16UC1',
             '/camera/depth/image_rect_raw': '16UC1',
             '/camera/infra1/image_rect_raw': 'mono8',
             '/camera/color/image_raw': 'rgb8'}
REALSENSE_COMPRESSED = {'/camera/aligned_depth_to_color/image_raw/compressedDepth':
                        '16UC1; compressedDepth png',
                        '/camera/color/image_raw/compressed': 'rgb8; png compressed bgr8'}
OPENNI = {'/camera/depth/image_raw': '16UC1', '/camera/depth_registered/image_raw': '32FC1',
          '/camera/ir/image': 'mono16', '/camera/rgb/image_raw': 'bgr8'}


@pytest.mark.parametrize('images, compressed, expected', [
    (REALSENSE, REALSENSE_COMPRESSED, '/camera/color/image_raw'),
    (REALSENSE, None, '/camera/color/image_raw'),
    (OPENNI, None, '/camera/rgb/image_raw'),
    # depth by encoding alone, on names that do not say so; mono only when there is no colour
    ({'/a/image': '16UC1', '/b/image': '32FC1', '/c/image': 'mono8'}, None, '/c/image'),
    ({'/c/image': 'mono8'}, {'/sensor/packed': '16UC1; compressedDepth png'}, '/c/image'),
    ({'/camera/image_mono': 'mono8', '/camera/image_color': 'bgr8'}, None,
     '/camera/image_color'),
    # compressed colour before raw mono, raw colour before compressed colour
    ({'/ir/image': 'mono8'}, {'/color/image/compressed': 'jpeg'}, '/color/image/compressed'),
    ({'/cam/image': 'rgb8'}, {'/cam/image/compressed': 'jpeg'}, '/cam/image'),
    # labels are never the camera
    ({'/camera/labels': 'mono8', '/camera/image_raw': 'rgb8'}, None, '/camera/image_raw'),
])
def test_the_colour_camera_is_chosen_and_depth_never(tmp_path, images, compressed, expected):
    bag = write_bag(tmp_path / 'b', images, compressed=compressed, extra=False, frames=1)
    with BagReader(bag) as b:
        chosen = b.camera_topic()
        assert chosen.topic == expected, [(t.topic, t.kind) for t in b.image_topics()]
        assert chosen.kind == ('mono' if expected == '/c/image' else 'colour')
        assert b.topics[expected] in (IMAGE, COMPRESSED)


@pytest.mark.parametrize('images, compressed', [
    ({'/camera/depth/image_rect_raw': '16UC1',
      '/camera/aligned_depth_to_color/image_raw': '16UC1'}, None),
    ({'/sensor/image': '32FC1'}, {'/camera/depth/image_raw/compressedDepth':
                                  '16UC1; compressedDepth png'}),
])
def test_a_bag_with_only_depth_images_is_refused_saying_so(tmp_path, images, compressed):
    bag = write_bag(tmp_path / 'b', images, compressed=compressed, extra=False, frames=1)
    with BagReader(bag) as b, pytest.raises(BagError, match='holds only depth images'):
        b.camera_topic()


def test_a_bag_with_only_labels_asks_for_a_topic(tmp_path):
    bag = write_bag(tmp_path / 'b', {'/camera/labels': 'mono8'}, extra=False, frames=1)
    with BagReader(bag) as b, pytest.raises(BagError, match='no camera image topic.*'
                                                            '--image-topic'):
        b.camera_topic()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and '\n' not in err and 'Traceback' not in err, err
    return err


def test_replay_refusals_are_one_line_naming_the_bag(tmp_path, capsys):
    bag = write_bag(tmp_path / 'depth_only', {'/camera/depth/image_rect_raw': '16UC1'},
                    extra=True, frames=1)
    assert ee_seg(['replay', str(bag), '--out', str(tmp_path / 'o1'), '--quiet']) == 2
    err = _one_line_error(capsys)
    assert str(bag) in err and 'holds only depth images' in err
    assert not (tmp_path / 'o1').exists()
    # a broken metadata.yaml and a truncated mcap
    broken = write_bag(tmp_path / 'broken', {'/camera/image_raw': 'rgb8'}, frames=1)
    (broken / 'metadata.yaml').write_text('rosbag2_bagfile_information:\n  version: [oops\n')
    assert ee_seg(['replay', str(broken), '--out', str(tmp_path / 'o2'), '--quiet']) == 2
    assert str(broken) in _one_line_error(capsys)
    cut = write_bag(tmp_path / 'cut', {'/camera/image_raw': 'rgb8'}, frames=2)
    mcap = next(cut.glob('*.mcap'))
    single = tmp_path / 'single.mcap'
    single.write_bytes(mcap.read_bytes()[:-300])
    assert ee_seg(['replay', str(single), '--out', str(tmp_path / 'o3'), '--quiet']) == 2
    assert str(single) in _one_line_error(capsys)


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    import torch

    from conftest import TINY
    from ee_seg_ros.bundle import save_bundle
    from ee_seg_ros.data.labels import CAMVID
    from ee_seg_ros.model import ModelConfig, MultiExitSegmenter
    torch.manual_seed(0)
    model = MultiExitSegmenter(ModelConfig(**TINY)).eval()
    return save_bundle(tmp_path_factory.mktemp('bagio') / 'bundle', model, CAMVID)


def test_a_recording_of_everything_replays_its_colour_camera(tmp_path, bundle, capsys):
    """The issue's case end to end: ``ros2 bag record -a --all-services`` on a RealSense."""
    import json
    bag = write_bag(tmp_path / 'everything', REALSENSE, 'mcap', frames=3,
                    compressed=REALSENSE_COMPRESSED)
    out = tmp_path / 'r'
    assert ee_seg(['replay', str(bag), '--out', str(out), '--model', str(bundle),
                   '--policy', 'full', '--threads', '1']) == 0
    printed = capsys.readouterr().out
    assert 'left out 4 topic(s) whose types cannot be read' in printed
    report = json.loads((out / 'report.json').read_text())
    assert report['topics']['image'] == '/camera/color/image_raw'
    assert report['frames_received'] == 3 and report['frames_processed'] == 3


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_metadata_that_counts_no_messages_does_not_hide_them(tmp_path, storage):
    """A recorder killed before it rewrote metadata.yaml leaves counts of 0 behind."""
    import re
    bag = write_bag(tmp_path / 'b', {'/camera/image_raw': 'rgb8'}, storage, frames=2,
                    extra=False)
    meta = bag / 'metadata.yaml'
    meta.write_text(re.sub(r'message_count: \d+', 'message_count: 0', meta.read_text()))
    assert 'message_count: 2' not in meta.read_text()
    with BagReader(bag) as b:
        assert len(list(b.messages(['/camera/image_raw']))) == 2


def test_an_empty_metadata_file_is_refused_in_one_line(tmp_path, capsys):
    bag = write_bag(tmp_path / 'b', {'/camera/image_raw': 'rgb8'}, frames=1, extra=False)
    (bag / 'metadata.yaml').write_text('')
    with pytest.raises(BagError, match='metadata.yaml is empty'):
        BagReader(bag)
    assert ee_seg(['replay', str(bag), '--out', str(tmp_path / 'o'), '--quiet']) == 2
    assert 'metadata.yaml is empty' in _one_line_error(capsys)
