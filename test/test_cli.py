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


# -- bad input: one line, non-zero, never a traceback; output folders never cost a file -------

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from ee_seg_ros.outdir import MARKER  # noqa: E402
from ee_seg_ros.replay.bagio import BagWriter  # noqa: E402
from ee_seg_ros.replay.make_bag import IMAGE_TOPIC, bag_from_images  # noqa: E402


@pytest.fixture(scope='module')
def small(tmp_path_factory, tiny_config_module):
    """A tiny uncalibrated bundle, a folder of frames and a bag made from them."""
    import torch

    from ee_seg_ros.model import MultiExitSegmenter
    root = tmp_path_factory.mktemp('bad_input')
    torch.manual_seed(0)
    bundle = save_bundle(root / 'bundle', MultiExitSegmenter(tiny_config_module).eval(),
                         CAMVID)
    write_camvid_layout(root / 'data', 'val', 2, seed=2, size=(48, 64))
    bag = bag_from_images(root / 'data' / 'val', root / 'bag', root / 'data' / 'valannot',
                          rate=5)
    return {'root': root, 'bundle': bundle, 'images': root / 'data' / 'val', 'bag': bag}


@pytest.fixture(scope='module')
def tiny_config_module():
    from conftest import TINY
    from ee_seg_ros.model import ModelConfig
    return ModelConfig(**TINY)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``ee-seg ARGV`` in this process: exit status, stdout, stderr."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as done:        # argparse refusals
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_refusal(code, out, err, *words):
    assert code not in (0, None), (out, err)
    assert 'Traceback' not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('ee-seg'), err
    for word in words:
        assert word in lines[0], (word, err)


BAD_ARGUMENTS = [
    (['train', '--root', '{nope}', '--out', '{tmp}/run'], 'missing folder'),
    (['train', '--root', '{nope}', '--out', '{tmp}/run', '--threads', '0'], '--threads'),
    (['train', '--root', '{nope}', '--out', '{tmp}/run', '--minutes', 'a,b'], '--minutes'),
    (['train', '--root', '{nope}', '--out', '{tmp}/run', '--pause-range', '0.9'],
     '--pause-range'),
    (['train', '--root', '{data}', '--out', '{tmp}/run', '--split', 'val', '--val-split', '',
      '--pause-range', '0.9,0.1'], 'LOW,HIGH'),
    (['eval', '--root', '{nope}', '--split', 'val', '--model', '{bundle}'], 'missing folder'),
    (['eval', '--root', '{data}', '--split', 'val', '--threads', '0'], '--threads'),
    (['eval', '--root', '{data}', '--split', 'val', '--limit', '-3'], '--limit'),
    (['eval', '--root', '{data}', '--split', 'val', '--model', '{nope}'], 'is not a folder'),
    (['bench', '--root', '{nope}', '--split', 'val', '--model', '{bundle}'], 'missing folder'),
    (['bench', '--root', '{data}', '--split', 'val', '--threads', 'two'], '--threads'),
    (['calibrate', '--model', '{nope}', '--root', '{data}'], 'is not a folder'),
    (['calibrate', '--model', '{bundle}', '--root', '{data}', '--threads', '0'], '--threads'),
    (['export-onnx', '--model', '{nope}'], 'is not a folder'),
    (['export-onnx', '--model', '{bundle}', '--opset', '0'], '--opset'),
    (['replay', '{nope}', '--out', '{tmp}/r', '--model', '{bundle}'], 'does not exist'),
    (['replay', '{bag}', '--out', '{tmp}/r', '--threads', '0'], '--threads'),
    (['replay', '{bag}', '--out', '{tmp}/r', '--jobs', '0'], '--jobs'),
    (['replay', '{bag}', '--out', '{tmp}/r', '--budget-ms', '-5'], '--budget-ms'),
    (['replay', '{bag}', '--out', '{tmp}/r', '--budget-ms', 'nan'], '--budget-ms'),
    (['replay', '{bag}', '--out', '{tmp}/r', '--image-topic', '/nope', '--model', '{bundle}'],
     "'/nope' is not in"),
    (['replay', '{bag}', '--out', '{bag}', '--overwrite'], 'is the input'),
    (['replay', '{bag}', '--out', '{bag}/report'], 'lies inside the input'),
    (['replay', '{bag}', '--out', '.', '--overwrite'], 'is the working directory'),
    (['replay', '{bag}', '--out', '/', '--overwrite'], 'root folder'),
    (['replay', '{bag}', '--out', '{home}', '--overwrite'], 'home directory'),
    (['replay', '{bag}', '--out', '{mine}', '--overwrite'], 'not made by ee-seg'),
    (['replay', '{bag}', '--out', '{tmp}/r', '--labels-dir', '{nope}'], 'does not exist'),
    (['bag-from-images', '{nope}', '--out', '{tmp}/b'], 'not a folder of images'),
    (['bag-from-images', '{images}', '--out', '{tmp}/b', '--rate', '0'], '--rate'),
    (['bag-from-images', '{images}', '--out', '{tmp}/b', '--rate', 'fast'], '--rate'),
    (['bag-from-images', '{images}', '--out', '{tmp}/b', '--cpu-trace', 'up'],
     'cannot parse trace'),
    (['bag-from-images', '{images}', '--out', '{images}', '--overwrite'], 'is the input'),
    (['bag-from-images', '{images}', '--out', '{images}/bag'], 'lies inside the input'),
    (['bag-from-images', '{images}', '--out', '{bag}'], 'exists'),
    (['bag-from-images', '{images}', '--out', '.', '--overwrite'], 'working directory'),
    (['bag-from-images', '{images}', '--out', '{mine}', '--overwrite'], 'not made by ee-seg'),
    (['score', '{nope}', '--out', '{tmp}/s', '--model', '{bundle}'], 'does not exist'),
    (['score', '{bag}', '--out', '{tmp}/s', '--model', '{bundle}'], 'no recorded ~/mask'),
    (['score', '{bag}', '--out', '{bag}', '--overwrite'], 'is the input'),
    (['score', '{bag}', '--out', '{tmp}/s', '--budget-ms', '0'], '--budget-ms'),
    (['demo', '--frames', '0'], '--frames'),
    (['demo', '--threads', '0'], '--threads'),
    (['demo', '--rate', '-1'], '--rate'),
    (['demo', '--out', '.'], 'working directory'),
    (['demo', '--out', '{mine}'], 'not made by ee-seg'),
    ([], 'command'),
    (['fly'], 'invalid choice'),
]


@pytest.mark.parametrize('argv,words', BAD_ARGUMENTS,
                         ids=[f'{(a or ["(none)"])[0]}: {w}' for a, w in BAD_ARGUMENTS])
def test_every_command_refuses_bad_input_in_one_line(small, tmp_path, monkeypatch, capsys,
                                                      argv, words):
    mine = tmp_path / 'mine'                     # a user's folder, with their own file
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep me')
    work = tmp_path / 'work'                     # the working directory
    work.mkdir()
    (work / 'thesis.tex').write_text('keep me too')
    monkeypatch.chdir(work)
    names = {'nope': tmp_path / 'nope', 'tmp': tmp_path, 'bag': small['bag'],
             'bundle': small['bundle'], 'images': small['images'],
             'data': small['root'] / 'data', 'mine': mine, 'home': Path.home()}
    before = {p: p.stat().st_mtime_ns for p in small['root'].rglob('*')}
    code, out, err = run_cli([a.format(**names) for a in argv], capsys)
    assert_one_line_refusal(code, out, err, words)
    # nothing was touched: the inputs, the user's folders, and no output appeared
    assert {p: p.stat().st_mtime_ns for p in small['root'].rglob('*')} == before
    assert (mine / 'notes.txt').read_text() == 'keep me' and len(list(mine.iterdir())) == 1
    assert (work / 'thesis.tex').read_text() == 'keep me too' and len(list(work.iterdir())) == 1
    assert not any(p.name in ('r', 's', 'b', 'run') for p in tmp_path.iterdir())
    assert not list(tmp_path.glob('.ee-seg-tmp-*'))


def test_the_installed_command_prints_one_line_not_a_traceback(tmp_path):
    for argv in (['replay', str(tmp_path / 'nope'), '--out', str(tmp_path / 'r'),
                  '--threads', '0'],
                 ['bag-from-images', str(tmp_path), '--out', str(tmp_path / 'b')]):
        done = subprocess.run([sys.executable, '-m', 'ee_seg_ros.cli', *argv],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and 'Traceback' not in done.stderr + done.stdout
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_overwrite_replaces_our_output_only(small, tmp_path, capsys):
    bag = tmp_path / 'bag'
    assert run_cli(['bag-from-images', small['images'], '--out', bag], capsys)[0] == 0
    assert (bag / MARKER).is_file() and (bag / 'metadata.yaml').is_file()
    assert run_cli(['bag-from-images', small['images'], '--out', bag, '--overwrite',
                    '--storage', 'mcap'], capsys)[0] == 0
    assert list(bag.glob('*.mcap')) and not list(bag.glob('*.db3'))
    out = tmp_path / 'r'
    args = ['replay', bag, '--out', out, '--model', small['bundle'], '--policy', 'full',
            '--threads', '1', '--quiet']
    assert run_cli(args, capsys)[0] == 0
    (out / 'report.json').write_text('stale')
    assert run_cli(args, capsys)[0] == 2               # exists, no --overwrite
    assert run_cli(args + ['--overwrite'], capsys)[0] == 0
    assert (out / 'report.json').read_text() != 'stale' and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag', 'r']
    # a folder without the marker is never replaced, even one ee-seg once wrote
    (out / MARKER).unlink()
    code, _, err = run_cli(args + ['--overwrite'], capsys)
    assert code == 2 and 'not made by ee-seg' in err and (out / 'report.json').exists()


def _bag_with(path: Path, encoding: str, frames: int, extra_topic: bool = False) -> Path:
    w = BagWriter(path)
    t0 = 1_700_000_000_000_000_000
    if frames == 0:
        w._conn(IMAGE_TOPIC, 'sensor_msgs/msg/Image')
    for i in range(frames):
        w.image(IMAGE_TOPIC, t0 + i, w.header(t0 + i, 'cam'),
                np.zeros((48, 64, 3), np.uint8), encoding)
    if extra_topic:
        w.write('/cpu_load', 'std_msgs/msg/Float32', t0, w.ts.types['std_msgs/msg/Float32'](
            data=0.5))
    w.close()
    return path


def test_zero_work_fails_with_the_reason(small, tmp_path, capsys):
    base = ['--model', small['bundle'], '--policy', 'full', '--threads', '1', '--quiet']
    empty_topic = _bag_with(tmp_path / 'no_frames', 'rgb8', 0, extra_topic=True)
    code, out, err = run_cli(['replay', empty_topic, '--out', tmp_path / 'a',
                              '--image-topic', IMAGE_TOPIC, *base], capsys)
    assert code == 1 and 'Traceback' not in out + err
    assert err.strip() == (f"ee-seg replay: error: no frame processed: image topic "
                           f"'{IMAGE_TOPIC}' in {empty_topic} holds no messages")
    rejected = _bag_with(tmp_path / 'all_rejected', 'no_such_encoding', 3)
    code, out, err = run_cli(['replay', rejected, '--out', tmp_path / 'b', *base], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert 'all 3 frames were rejected' in err and 'no_such_encoding' in err
    # the reasons are in the terminal summary as well as in the report
    row = next(line for line in out.splitlines() if line.startswith('| rejected frames'))
    assert 'no_such_encoding' in row and '(3)' in row
    assert 'no_such_encoding' in (tmp_path / 'b' / 'report.md').read_text()


def test_bag_metadata_that_lies_or_is_empty(small, tmp_path, capsys):
    import shutil
    base = ['--model', small['bundle'], '--policy', 'full', '--threads', '1', '--quiet']
    counted_zero = tmp_path / 'counted_zero'
    shutil.copytree(small['bag'], counted_zero)
    meta = counted_zero / 'metadata.yaml'
    meta.write_text(re.sub(r'message_count: \d+', 'message_count: 0', meta.read_text()))
    assert run_cli(['replay', counted_zero, '--out', tmp_path / 'a', *base], capsys)[0] == 0
    assert json.loads((tmp_path / 'a' / 'report.json').read_text())['frames_processed'] == 2
    for text, words in (('', 'is empty'), ('{: [', 'is not YAML'), ('- 1\n', 'not rosbag2')):
        meta.write_text(text)
        code, out, err = run_cli(['replay', counted_zero, '--out', tmp_path / 'b', *base],
                                 capsys)
        assert_one_line_refusal(code, out, err, 'metadata.yaml', words, 'reindex')


def test_score_of_a_recording_without_masks_fails_with_the_reason(small, tmp_path, capsys):
    rec = tmp_path / 'recorded'
    w = BagWriter(rec)
    w._conn('/ee_segmenter/mask', 'sensor_msgs/msg/Image')
    w._conn('/ee_segmenter/exit_stats', 'diagnostic_msgs/msg/DiagnosticArray')
    w.write('/cpu_load', 'std_msgs/msg/Float32', 1, w.ts.types['std_msgs/msg/Float32'](data=0.5))
    w.close()
    code, out, err = run_cli(['score', rec, '--out', tmp_path / 's', '--model',
                              small['bundle']], capsys)
    assert code == 1 and 'Traceback' not in out + err
    assert err.strip() == (f'ee-seg score: error: no frame processed: the recording in {rec} '
                           'holds no ~/mask messages')
