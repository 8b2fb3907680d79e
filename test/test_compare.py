"""ee-seg compare: a scored recording beside the offline replay of the same bag."""

import json

import pytest

from ee_seg_ros.cli import main as ee_seg
from ee_seg_ros.replay.compare import ReportError, Tolerances, compare_reports, load_report
from test_replay import world  # noqa: F401 - the shared module fixture: bundle and bag


@pytest.fixture(scope='module')
def reports(world, tmp_path_factory):  # noqa: F811
    """Offline replay at a fixed policy, and ee-seg score of the bag that replay wrote (the
    same masks and exit statistics the live node would have published)."""
    root = tmp_path_factory.mktemp('compare')
    offline, online = root / 'offline', root / 'online'
    assert ee_seg(['replay', str(world['bag']), '--out', str(offline), '--policy', 'full',
                   '--model', str(world['bundle']), '--quiet', '--threads', '1']) == 0
    assert ee_seg(['score', str(offline / 'output_bag'), '--labels', str(world['bag']),
                   '--out', str(online), '--model', str(world['bundle'])]) == 0
    return online, offline


def test_a_recording_of_the_same_run_matches_within_tolerance(reports, capsys):
    online, offline = reports
    assert ee_seg(['compare', str(online), str(offline)]) == 0
    out = capsys.readouterr().out
    assert 'within tolerance' in out and '**differs**' not in out
    assert '| frames received | 6 | 6 | +0 |' in out


def test_differences_beyond_tolerance_are_flagged_and_exit_1(reports, tmp_path, capsys):
    online, offline = reports
    changed = load_report(online)
    changed.update(frames_received=5, miou=changed['miou'] - 0.8,
                   deadline_hit_rate=max(0.0, changed['deadline_hit_rate'] - 0.01))
    (tmp_path / 'report.json').write_text(json.dumps(changed))
    assert ee_seg(['compare', str(tmp_path), str(offline), '--json',
                   str(tmp_path / 'cmp.json')]) == 1
    result = json.loads((tmp_path / 'cmp.json').read_text())
    assert not result['within_tolerance']
    assert set(result['flagged']) == {
        'frames received', 'mIoU (%)',
        'frames lost before the node (offline received - online received)'}
    assert 'differ beyond tolerance' in capsys.readouterr().out
    # a looser mIoU tolerance lets that row through; a 1-point hit-rate gap is within 2
    rows = compare_reports(changed, load_report(offline), Tolerances(miou_pp=1.0, frames=1))
    assert not any(r.flagged for r in rows)


def test_unreadable_reports_are_refused_in_one_line(reports, tmp_path, capsys):
    online, _ = reports
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'report.json').write_text('{not json')
    (tmp_path / 'other.json').write_text('{"a": 1}')
    for bad in (tmp_path / 'none', tmp_path / 'bad', tmp_path / 'other.json'):
        assert ee_seg(['compare', str(online), str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith('ee-seg compare: error:') and '\n' not in err
    with pytest.raises(ReportError, match='missing'):
        load_report(tmp_path / 'other.json')


def _frames(*rows):
    """Series rows (latency, output, decode, queue) at one point; total = their sum."""
    return [{'point': 'exit:1', 'latency_ms': lat, 'output_ms': out, 'decode_ms': dec,
             'wait_ms': dec + queue, 'total_ms': lat + out + dec + queue}
            for lat, out, dec, queue in rows]


def test_the_deadline_gap_is_split_into_its_parts():
    from ee_seg_ros.replay.gap import split_deadline_gap
    # offline: every frame 6.5 ms against 10; online each frame misses for one reason
    offline = {'budget_ms': 10.0, 'deadline_hit_rate': 1.0,
               'series': _frames(*[(5, 1, 0.5, 0)] * 4)}
    online = {'budget_ms': 10.0, 'deadline_hit_rate': 0.0,
              'series': _frames((9, 1, 0.5, 0),     # slower inference
                                (5, 5, 0.5, 0),     # slow publishing
                                (5, 1, 5, 0),       # slow decoding
                                (5, 1, 0.5, 6))}    # queued behind another frame
    split = split_deadline_gap(online, offline)
    assert [(p.part, p.explains_pp) for p in split.parts] == [
        ('inference', 25.0), ('outputs', 25.0), ('decoding', 25.0)]
    assert split.remainder_pp == 25.0 and split.inference_ratio == pytest.approx(1.2)


def test_compare_prints_where_the_hit_rates_part(reports, tmp_path, capsys):
    online, offline = reports
    assert ee_seg(['compare', str(online), str(offline), '--json',
                   str(tmp_path / 'cmp.json')]) == 0
    out = capsys.readouterr().out
    assert "with offline's inference" in out and 'mean inference per frame (ms)' in out
    gap = json.loads((tmp_path / 'cmp.json').read_text())['deadline_gap']
    assert [p['part'] for p in gap['parts']] == ['inference', 'outputs', 'decoding']
