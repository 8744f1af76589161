"""Bootstrap interval and exact McNemar test against hand-checkable cases."""

import numpy as np
import pytest

from pipeline.stats import bootstrap_accuracy_ci, mcnemar_exact


def test_bootstrap_interval_brackets_the_accuracy_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.random(200) < 0.8
    large = rng.random(10_000) < 0.8
    low_s, high_s = bootstrap_accuracy_ci(small, resamples=1000)
    low_l, high_l = bootstrap_accuracy_ci(large, resamples=1000)
    assert low_s < small.mean() < high_s and low_l < large.mean() < high_l
    assert (high_l - low_l) < (high_s - low_s) / 4
    # binomial standard error at n=10k: 0.004; a 95% interval spans about 0.0157
    assert high_l - low_l == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 10_000), rel=0.15)


def test_mcnemar_exact_counts_and_p_value():
    a = np.array([1] * 10 + [0] * 2 + [1] * 50 + [0] * 38, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 50 + [0] * 38, bool)
    result = mcnemar_exact(a, b)
    assert result["only_first_correct"] == 10 and result["only_second_correct"] == 2
    # two-sided exact binomial: P(X<=2 or X>=10 | n=12, p=.5) = 2 * 79/4096
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(a, a)["p_value"] == 1.0
