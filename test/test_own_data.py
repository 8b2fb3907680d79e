"""A user's own data, end to end: a 4-class dataset at 320x240 in the folder layout goes through
train, calibrate, eval, bench, export-onnx, bag-from-images and replay, and every step reports
that dataset's classes (no CamVid name, count or size left anywhere on the way)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ee_seg_ros.bundle import load_bundle
from ee_seg_ros.cli import main as ee_seg
from ee_seg_ros.data.labels import CAMVID, IGNORE
from ee_seg_ros.data.synthetic import SyntheticScenes, write_camvid_layout

from conftest import TINY

H, W = 240, 320
NAMES = ['sky', 'ground', 'structure', 'agent']
PALETTE = [[70, 130, 180], [128, 64, 128], [150, 150, 150], [220, 20, 60]]
GROUPS = {'Sky': 0, 'Road': 1, 'Pavement': 1, 'Building': 2, 'Pole': 2, 'SignSymbol': 2,
          'Fence': 2, 'Tree': 2, 'Car': 3, 'Pedestrian': 3, 'Bicyclist': 3}


def write_own_dataset(root: Path, counts: dict[str, int]) -> Path:
    """Synthetic street scenes relabelled onto four classes, written in the folder layout."""
    table = np.full(256, IGNORE, np.uint8)
    for name, own in GROUPS.items():
        table[CAMVID.class_names.index(name)] = own
    (root).mkdir(parents=True)
    (root / 'classes.json').write_text(json.dumps({'names': NAMES, 'palette': PALETTE}))
    for seed, (split, count) in enumerate(counts.items(), start=1):
        for d in ('images', 'labels'):
            (root / d / split).mkdir(parents=True)
        scenes = SyntheticScenes(count, seed=seed, size=(H, W))
        for i in range(count):
            image, label = scenes[i]
            cv2.imwrite(str(root / 'images' / split / f'{scenes.name(i)}.png'),
                        cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / 'labels' / split / f'{scenes.name(i)}.png'), table[label])
    return root


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp('own')
    data = write_own_dataset(root / 'data', {'train': 8, 'val': 3})
    arch = root / 'tiny.json'
    arch.write_text(json.dumps(TINY))
    assert ee_seg(['train', '--dataset', 'folder', '--root', str(data), '--out',
                   str(root / 'run'), '--steps', '120,30,30', '--batch', '4',
                   '--model-config', str(arch), '--threads', '2']) == 0
    bundle = root / 'run' / 'bundle'
    assert ee_seg(['calibrate', '--dataset', 'folder', '--root', str(data), '--model',
                   str(bundle), '--quiet']) == 0
    return {'root': root, 'data': data, 'bundle': bundle}


def run_eval(world, out: Path, *extra: str) -> dict:
    assert ee_seg(['eval', '--dataset', 'folder', '--root', str(world['data']), '--model',
                   str(world['bundle']), '--json', str(out), '--quiet', *extra]) == 0
    return json.loads(out.read_text())


def test_the_bundle_carries_its_classes_and_calibrated_size(world):
    bundle = load_bundle(world['bundle'])
    assert list(bundle.labels.class_names) == NAMES
    assert [list(c) for c in bundle.labels.palette] == PALETTE
    assert bundle.config['num_classes'] == 4
    assert bundle.profile['input_size'] == [H, W]
    assert bundle.profile['stage_costs']['tokens'] == (H // 16) * (W // 16)
    assert len(bundle.calibration['margins']) == 4


def test_eval_and_bench_report_the_bundles_classes(world, tmp_path):
    result = run_eval(world, tmp_path / 'eval.json', '--policy', 'adaptive')
    assert list(result['per_class_iou']) == NAMES
    assert result['frames'] == 3 and result['split'] == 'val' and result['dataset'] == 'folder'
    # trained for seconds, but above chance (25% pixel accuracy for four classes)
    assert result['pixel_accuracy'] > 40
    out = tmp_path / 'bench'
    assert ee_seg(['bench', '--dataset', 'folder', '--root', str(world['data']), '--model',
                   str(world['bundle']), '--out', str(out), '--limit', '1', '--quiet']) == 0
    report = json.loads((out / 'bench.json').read_text())
    assert report['frames'] == 1
    assert all(list(row['per_class_iou']) == NAMES for row in report['settings'])


def test_replay_of_its_frames_scores_as_eval_does(world, tmp_path):
    from ee_seg_ros.replay.bagio import BagReader
    data = world['data']
    bag = tmp_path / 'bag'
    assert ee_seg(['bag-from-images', str(data / 'images' / 'val'), '--out', str(bag),
                   '--labels', str(data / 'labels' / 'val')]) == 0
    policy = 'cbt:0.5,0.9'
    out = tmp_path / 'replay'
    assert ee_seg(['replay', str(bag), '--out', str(out), '--model', str(world['bundle']),
                   '--policy', policy, '--quiet']) == 0
    replayed = json.loads((out / 'report.json').read_text())
    evaluated = run_eval(world, tmp_path / 'eval.json', '--policy', policy)
    assert replayed['frames_processed'] == 3
    assert replayed['miou'] == pytest.approx(evaluated['miou'])
    with BagReader(out / 'output_bag') as b:
        masks = [m.msg for m in b.messages(['/ee_segmenter/mask'])]
    assert len(masks) == 3 and (masks[0].height, masks[0].width) == (H, W)
    assert max(int(np.frombuffer(m.data, np.uint8).max()) for m in masks) < len(NAMES)


def test_onnx_export_evaluates_like_pytorch(world, tmp_path):
    pytest.importorskip('onnxruntime')
    assert ee_seg(['export-onnx', '--model', str(world['bundle'])]) == 0
    torch_run = run_eval(world, tmp_path / 'torch.json', '--policy', 'full')
    ort_run = run_eval(world, tmp_path / 'ort.json', '--policy', 'full',
                       '--backend', 'onnxruntime')
    assert list(ort_run['per_class_iou']) == NAMES
    assert ort_run['miou'] == pytest.approx(torch_run['miou'], abs=0.5)


def test_data_with_other_classes_is_refused(world, tmp_path, capsys):
    write_camvid_layout(tmp_path / 'camvid', 'val', 1, seed=3, size=(H, W))
    assert ee_seg(['eval', '--root', str(tmp_path / 'camvid'), '--model',
                   str(world['bundle']), '--quiet']) == 2
    err = capsys.readouterr().err
    assert 'has 11 classes but bundle' in err and 'predicts 4 (sky, ground' in err
