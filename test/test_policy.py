import numpy as np
import pytest

from ee_seg_ros.model import ExitPolicy, cbt_thresholds, class_margins


def test_alpha_equal_beta_is_the_global_threshold():
    margins = np.array([0.9, 0.2, 0.5, 0.7], dtype=np.float32)
    th = cbt_thresholds(margins, 0.95, 0.95)
    np.testing.assert_allclose(th, 0.95)
    cbt = ExitPolicy(rule='cbt', alpha=0.95, beta=0.95).class_thresholds(margins, 4)
    glob = ExitPolicy(rule='global', threshold=0.95).class_thresholds(None, 4)
    np.testing.assert_allclose(cbt, glob)


def test_easiest_class_gets_alpha_hardest_gets_beta():
    margins = np.array([0.9, 0.2, 0.5, 0.7], dtype=np.float32)
    th = cbt_thresholds(margins, 0.6, 0.99)
    assert th[0] == pytest.approx(0.6)          # largest margin: easiest
    assert th[1] == pytest.approx(0.99)         # smallest margin: hardest
    assert 0.6 < th[3] < th[2] < 0.99           # monotone in between
    assert th[2] == pytest.approx(0.6 + (1 - (0.5 - 0.2) / 0.7) * 0.39, rel=1e-5)


def test_margins_average_exits_then_take_top1_minus_top2():
    # two exits, two classes: class 0 prototypes (0.9, 0.1) and (0.7, 0.3) average (0.8, 0.2)
    mean_probs = np.array([[[0.9, 0.1], [0.4, 0.6]], [[0.7, 0.3], [0.4, 0.6]]])
    np.testing.assert_allclose(class_margins(mean_probs), [0.6, 0.2], rtol=1e-6)


@pytest.mark.parametrize('text', ['full', 'exit:1', 'global:0.9', 'cbt:0.5,0.99',
                                  'entropy:0.2', 'cbt:0.7,0.999@ratio=0.8,out=head',
                                  'full@cap=1', 'global:0.8@ratio=0.9,cap=2'])
def test_policy_string_round_trip(text):
    policy = ExitPolicy.parse(text)
    assert ExitPolicy.parse(policy.spec()) == policy


@pytest.mark.parametrize('text', ['fast', 'global:1.5', 'cbt:0.99,0.5', 'cbt:0.5',
                                  'entropy:-1', 'global:0.9@ratio=2', 'full@speed=3',
                                  'exit:x'])
def test_bad_policies_are_refused_with_the_expected_forms(text):
    with pytest.raises(ValueError, match='cannot parse policy'):
        ExitPolicy.parse(text)
