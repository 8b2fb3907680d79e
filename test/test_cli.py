"""The command-line contract other checks rely on: eval, calibrate and bench JSON."""

import json

import pytest

from ee_seg_ros.bundle import load_bundle, save_bundle
from ee_seg_ros.cli import main
from ee_seg_ros.data.labels import CAMVID
from ee_seg_ros.data.synthetic import write_camvid_layout

EVAL_KEYS = {'miou', 'per_class_iou', 'frames', 'gmacs_mean', 'latency_ms_p50',
             'latency_ms_p95', 'exit_histogram', 'stopped_fraction_mean'}


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / 'data'
    write_camvid_layout(root, 'train', 4, seed=1, size=(96, 128))
    write_camvid_layout(root, 'val', 4, seed=2, size=(96, 128))
    return root


@pytest.fixture
def calibrated(tmp_path, tiny_model, data_root):
    bundle = save_bundle(tmp_path / 'bundle', tiny_model, CAMVID)
    assert main(['calibrate', '--model', str(bundle), '--root', str(data_root),
                 '--quiet']) == 0
    return bundle


def test_calibrate_writes_thresholds_and_a_pareto_profile(calibrated):
    b = load_bundle(calibrated)
    assert len(b.calibration['margins']) == 11
    assert len(b.calibration['mean_probs']) == 3
    points = b.profile['points']
    lat = [p['latency_ms_p50'] for p in points]
    miou = [p['miou'] for p in points]
    assert lat == sorted(lat) and miou == sorted(miou)      # Pareto: faster is worse
    assert b.profile['recommended'] in {p['policy'] for p in points}
    assert b.profile['stage_costs']['tokens'] == 6 * 8


@pytest.mark.parametrize('policy', ['full', 'exit:1', 'global:0.9', 'cbt:0.5,0.95',
                                    'entropy:0.5', 'adaptive'])
def test_eval_json_contract(calibrated, data_root, tmp_path, policy):
    out = tmp_path / 'eval.json'
    assert main(['eval', '--root', str(data_root), '--split', 'val', '--model',
                 str(calibrated), '--policy', policy, '--json', str(out), '--quiet']) == 0
    result = json.loads(out.read_text())
    assert EVAL_KEYS <= set(result)
    assert result['frames'] == 4
    assert sum(result['exit_histogram'].values()) == 4
    assert set(result['per_class_iou']) == set(CAMVID.class_names)
    if policy == 'exit:1':
        assert result['exit_histogram']['exit1'] == 4


def test_bench_json_contract(calibrated, data_root, tmp_path):
    out = tmp_path / 'bench'
    assert main(['bench', '--root', str(data_root), '--split', 'val', '--model',
                 str(calibrated), '--out', str(out), '--quiet', '--limit', '3']) == 0
    report = json.loads((out / 'bench.json').read_text())
    for key in ('full_miou', 'full_latency_ms_p50', 'speedup_at_1pp', 'gmacs_saving_at_1pp',
                'cbt_gmacs_saving_vs_global', 'static_points', 'adaptive_gain_over_static_pp'):
        assert key in report
    assert report['frames'] == 3
    assert report['speedup_at_1pp'] >= 1.0 or report['speedup_at_1pp_policy'] == 'full'
    assert {'exit:0', 'full@cap=0', 'full'} <= set(report['static_points'])
    assert (out / 'miou_vs_gmacs.png').stat().st_size > 1000
    assert (out / 'miou_vs_latency.png').stat().st_size > 1000


def test_bad_arguments_give_a_clear_error(calibrated, data_root, tmp_path, capsys):
    assert main(['eval', '--root', str(tmp_path / 'nope'), '--split', 'val', '--model',
                 str(calibrated), '--quiet']) == 2
    assert 'missing folder' in capsys.readouterr().err
    assert main(['eval', '--root', str(data_root), '--split', 'val', '--model',
                 str(calibrated), '--policy', 'fastest', '--quiet']) == 2
    assert 'cannot parse policy' in capsys.readouterr().err
    assert main(['eval', '--root', str(data_root), '--split', 'val', '--model',
                 str(tmp_path / 'nobundle'), '--quiet']) == 2
    assert 'is not a folder' in capsys.readouterr().err
