"""The bench's headline figures, computed from hand-made sweep rows."""

import pytest

from ee_seg_ros.bench import analyse, cbt_vs_global


def row(policy: str, miou: float, gmacs: float, ms: float | None = None) -> dict:
    return {'policy': policy, 'miou': miou, 'gmacs_mean': gmacs,
            'latency_ms_p50': gmacs * 10 if ms is None else ms, 'latency_ms_p95': 0.0}


def test_cbt_saving_is_read_at_full_minus_one_point_on_both_curves():
    rows = [row('global:0', 50.0, 2.0), row('global:0.5', 58.0, 4.0), row('global:0.9', 60.0, 6.0),
            row('cbt:0.1,0.5', 52.0, 2.5), row('cbt:0.5,0.9', 60.0, 4.0)]
    out = cbt_vs_global(rows, full_miou=60.0)
    assert out['level_miou'] == 59.0
    assert out['global_gmacs_at_level'] == pytest.approx(5.0)
    assert out['cbt_gmacs_at_level'] == pytest.approx(2.5 + 1.5 * 7 / 8)
    assert out['saving'] == pytest.approx(1 - (2.5 + 1.5 * 7 / 8) / 5.0, abs=1e-4)
    # no stop rule is cheaper than every token stopping at the first exit (2.0 GMACs)
    assert out['floor_gmacs'] == 2.0
    assert out['max_possible_saving'] == pytest.approx(1 - 2.0 / 5.0)


def test_dominated_points_do_not_shape_the_curves():
    rows = [row('global:0', 50.0, 2.0), row('global:0.2', 49.0, 3.0), row('global:0.9', 60.0, 6.0),
            row('cbt:0.1,0.5', 50.0, 2.0), row('cbt:0.5,0.9', 60.0, 6.0)]
    out = cbt_vs_global(rows, full_miou=60.0)
    assert out['saving'] == pytest.approx(0.0)


def test_curves_that_do_not_overlap_give_no_figure():
    rows = [row('global:0.5', 50.0, 2.0), row('global:0.9', 52.0, 3.0),
            row('cbt:0.5,0.9', 58.0, 4.0), row('cbt:0.7,0.9', 60.0, 5.0)]
    out = cbt_vs_global(rows, full_miou=60.0)
    assert out['saving'] is None and out['max_possible_saving'] is None


def test_adaptive_gain_and_speedup_against_the_static_front():
    rows = [row('full', 60.0, 6.0, ms=100.0), row('exit:0', 50.0, 1.0, ms=20.0),
            row('full@cap=0', 55.0, 2.0, ms=40.0), row('global:0.5', 59.5, 3.0, ms=50.0),
            row('cbt:0.1,0.5', 57.0, 2.0, ms=39.0), row('global:0.9', 60.0, 5.0, ms=80.0)]
    out = analyse(rows, num_exits=1)
    assert out['speedup_at_1pp'] == 2.0 and out['speedup_at_1pp_policy'] == 'global:0.5'
    # cbt at 39 ms beats exit:0, the best static point at or under it, by 7 points
    # (global:0.5 beats full@cap=0 by only 4.5)
    assert out['adaptive_gain_over_static_pp'] == pytest.approx(7.0)
    assert out['adaptive_gain_pair'] == ('cbt:0.1,0.5', 'exit:0')
