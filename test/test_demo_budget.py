"""The demo sizes its budget from the cheapest point's latency measured on this machine."""

import json

import pytest

from ee_seg_ros.bundle import save_bundle
from ee_seg_ros.cli import main
from ee_seg_ros.data.labels import CAMVID
from ee_seg_ros.data.synthetic import SyntheticScenes, write_camvid_layout
from ee_seg_ros.replay.demo_budget import measure_budget
from ee_seg_ros.runtime import Segmenter


@pytest.fixture
def calibrated(tmp_path, tiny_model):
    root = tmp_path / 'data'
    write_camvid_layout(root, 'train', 3, seed=1, size=(96, 128))
    write_camvid_layout(root, 'val', 3, seed=2, size=(96, 128))
    bundle = save_bundle(tmp_path / 'bundle', tiny_model, CAMVID)
    assert main(['calibrate', '--model', str(bundle), '--root', str(root), '--quiet']) == 0
    return bundle


def test_budget_is_a_multiple_of_the_cheapest_points_measured_latency(calibrated, tmp_path,
                                                                      tiny_model):
    segmenter = Segmenter(str(calibrated), threads=1)
    frames = [SyntheticScenes(2, seed=5, size=(96, 128))[i][0] for i in range(2)]
    budget = measure_budget(segmenter, frames, multiple=2.5, runs=4)
    points = segmenter.bundle.profile['points']
    assert budget.cheapest_point == min(points, key=lambda p: p['latency_ms_p50'])['policy']
    assert budget.cheapest_ms > 0 and budget.timed_runs == 4
    assert budget.budget_ms == pytest.approx(2.5 * budget.cheapest_ms, abs=0.1)
    assert 'measured here' in budget.describe()
    with pytest.raises(ValueError, match='above 1'):
        measure_budget(segmenter, frames, multiple=1.0)
    bare = Segmenter(str(save_bundle(tmp_path / 'bare', tiny_model, CAMVID)))
    with pytest.raises(ValueError, match='no operating-point profile'):
        measure_budget(bare, frames)


def test_demo_prints_and_reports_the_budget_it_chose(calibrated, tmp_path, capsys):
    out = tmp_path / 'demo'
    assert main(['demo', '--out', str(out), '--frames', '4', '--model', str(calibrated),
                 '--threads', '1']) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / 'report.json').read_text())
    chosen = report['demo_budget']
    assert chosen['source'] == 'measured'
    assert report['budget_ms'] == chosen['budget_ms'] > 0
    assert f'budget {chosen["budget_ms"]:.1f} ms = 2 x' in printed
    md = (out / 'report.md').read_text()
    assert md.startswith('# Replay of') and '## What this demo measures' in md
    assert 'not among its training scenes' in md and 'Budget: budget' in md

    assert main(['demo', '--out', str(out), '--frames', '2', '--model', str(calibrated),
                 '--threads', '1', '--budget-ms', '80']) == 0
    assert 'budget 80.0 ms (given with --budget-ms)' in capsys.readouterr().out
    assert json.loads((out / 'report.json').read_text())['budget_ms'] == 80.0
    assert main(['demo', '--out', str(out), '--frames', '2', '--model', str(calibrated),
                 '--budget-ms', '-5']) == 2
    assert 'expected a positive number' in capsys.readouterr().err
