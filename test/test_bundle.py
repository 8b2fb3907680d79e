import json

import numpy as np
import pytest
import torch

from ee_seg_ros.bundle import BundleError, load_bundle, save_bundle, update_bundle
from ee_seg_ros.data.labels import CAMVID
from ee_seg_ros.model import ExitPolicy
from ee_seg_ros.runtime import Segmenter

from conftest import random_rgb


@pytest.fixture
def bundle_dir(tmp_path, tiny_model):
    return save_bundle(tmp_path / 'bundle', tiny_model, CAMVID)


def test_round_trip_gives_the_same_network(bundle_dir, tiny_model, frame):
    model = load_bundle(bundle_dir).load_model(fuse=False)
    with torch.no_grad():
        torch.testing.assert_close(model(frame), tiny_model(frame))
    b = load_bundle(bundle_dir)
    assert b.labels == CAMVID and b.calibration is None and b.profile is None


def test_calibration_and_profile_are_checksummed(bundle_dir):
    update_bundle(bundle_dir, calibration={'margins': [0.5] * 11},
                  profile={'points': [], 'recommended': 'global:0.9'})
    b = load_bundle(bundle_dir)
    assert set(b.manifest['files']) >= {'calibration.json', 'profile.json'}
    seg = Segmenter(b)
    assert seg.resolve('adaptive') == ExitPolicy(rule='global', threshold=0.9)
    (bundle_dir / 'profile.json').write_text('{"points": [], "recommended": "full"}')
    with pytest.raises(BundleError, match='checksum mismatch.*profile.json'):
        load_bundle(bundle_dir)


def test_corrupted_weights_are_refused(bundle_dir):
    path = bundle_dir / 'model.safetensors'
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match='checksum mismatch.*model.safetensors'):
        load_bundle(bundle_dir)


def test_truncated_weights_are_refused_even_without_checksums(bundle_dir):
    path = bundle_dir / 'model.safetensors'
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BundleError, match='cannot read weights'):
        load_bundle(bundle_dir, verify=False).load_model()


def test_missing_file_and_missing_folder_are_refused(bundle_dir, tmp_path):
    (bundle_dir / 'labels.json').unlink()
    with pytest.raises(BundleError, match='missing bundle file.*labels.json'):
        load_bundle(bundle_dir)
    with pytest.raises(BundleError, match='is not a folder'):
        load_bundle(tmp_path / 'nowhere')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BundleError, match='missing bundle file.*manifest.json'):
        load_bundle(tmp_path / 'empty')


def test_weights_that_do_not_match_the_config_are_refused(bundle_dir):
    cfg = json.loads((bundle_dir / 'config.json').read_text())
    cfg['embed_dim'] = 48
    (bundle_dir / 'config.json').write_text(json.dumps(cfg))
    from ee_seg_ros.bundle import write_manifest
    write_manifest(bundle_dir)
    with pytest.raises(BundleError, match='do not match config.json'):
        load_bundle(bundle_dir).load_model()


def test_class_count_mismatch_and_other_format_versions_are_refused(bundle_dir):
    from ee_seg_ros.bundle import write_manifest
    labels = json.loads((bundle_dir / 'labels.json').read_text())
    labels['class_names'] = labels['class_names'][:5]
    (bundle_dir / 'labels.json').write_text(json.dumps(labels))
    write_manifest(bundle_dir)
    with pytest.raises(BundleError, match='11 classes'):
        load_bundle(bundle_dir)
    manifest = json.loads((bundle_dir / 'manifest.json').read_text())
    manifest['format_version'] = 99
    (bundle_dir / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match='format version 99'):
        load_bundle(bundle_dir)


def test_segmenter_outputs_match_the_frame(bundle_dir):
    seg = Segmenter(str(bundle_dir))
    image = random_rgb(90, 125)
    res = seg.segment(image, 'full')
    assert res.labels.shape == res.confidence.shape == res.exit_map.shape == (90, 125)
    assert res.labels.dtype == np.uint8 and res.labels.max() < 11
    assert res.confidence.dtype == np.uint8 and res.confidence.min() >= 255 // 11
    assert (res.exit_map == 3).all() and res.exit_taken == 3
    with pytest.raises(BundleError, match='no CBT calibration'):
        seg.segment(image, 'cbt:0.5,0.9')
    with pytest.raises(BundleError, match='no operating-point profile'):
        seg.segment(image, 'adaptive')
    with pytest.raises(ValueError, match='RGB uint8'):
        seg.segment(image[..., 0], 'full')
