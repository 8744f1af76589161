"""Statistics for the test-set verdict: bootstrap intervals and the exact McNemar test."""

from __future__ import annotations

import numpy as np


def bootstrap_accuracy_ci(correct: np.ndarray, resamples: int = 2000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector (test images resampled)."""
    correct = np.asarray(correct, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = len(correct)
    means = np.empty(resamples)
    for start in range(0, resamples, 200):  # chunks keep memory small on 10k test images
        count = min(200, resamples - start)
        idx = rng.integers(0, n, size=(count, n))
        means[start:start + count] = correct[idx].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """Exact McNemar test of two classifiers on the same images (two-sided binomial test on
    the images exactly one of them gets right)."""
    from scipy.stats import binomtest

    a_correct = np.asarray(a_correct, dtype=bool)
    b_correct = np.asarray(b_correct, dtype=bool)
    only_a = int(np.sum(a_correct & ~b_correct))
    only_b = int(np.sum(~a_correct & b_correct))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_first_correct": only_a, "only_second_correct": only_b, "p_value": p_value}


def format_p(p_value: float) -> str:
    """``p = 0.012``; a p-value that underflowed to 0 reads as the bound it is."""
    return "p < 1e-300" if p_value == 0 else f"p = {p_value:.3g}"
