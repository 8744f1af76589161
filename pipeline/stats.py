"""Statistics for the verdicts: bootstrap intervals and the exact McNemar test (one pair of
trained models on the same images), and paired-seed intervals (a training choice, whose
effect must clear what reseeding alone moves)."""

from __future__ import annotations

import math

import numpy as np


def paired_interval(base, arm, confidence: float = 0.95) -> dict:
    """Mean of ``arm - base`` over paired seeds (the same seeds, in the same order: the same
    initial weights and data order for both arms) with its two-sided Student t interval. One
    seed bounds nothing: its interval is unbounded."""
    from scipy.stats import t as student_t

    differences = np.asarray(arm, dtype=float) - np.asarray(base, dtype=float)
    if differences.ndim != 1 or len(differences) == 0:
        raise ValueError("a paired interval needs one score per seed in each arm")
    mean, n = float(differences.mean()), len(differences)
    half = math.inf if n < 2 else float(student_t.ppf(0.5 + confidence / 2, n - 1)
                                        * differences.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": n,
            "differences": [float(d) for d in differences]}


def bootstrap_accuracy_ci(correct: np.ndarray, resamples: int = 2000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector (test images resampled),
    scipy's ``bootstrap`` in batches that keep memory small on 10k test images."""
    from scipy.stats import bootstrap

    correct = np.asarray(correct, dtype=np.float64)
    if np.all(correct == correct[0]):  # every image right (or wrong): nothing to resample
        return float(correct[0]), float(correct[0])
    found = bootstrap((correct,), np.mean, n_resamples=resamples, batch=200,
                      confidence_level=level, method="percentile",
                      rng=np.random.default_rng(seed))
    return float(found.confidence_interval.low), float(found.confidence_interval.high)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """Exact McNemar test of two classifiers on the same images (two-sided binomial test on
    the images exactly one of them gets right). ``log10_p_value`` is exact where the p-value
    itself underflows to 0 (two models thousands of images apart)."""
    from scipy.stats import binomtest

    a_correct = np.asarray(a_correct, dtype=bool)
    b_correct = np.asarray(b_correct, dtype=bool)
    only_a = int(np.sum(a_correct & ~b_correct))
    only_b = int(np.sum(~a_correct & b_correct))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_first_correct": only_a, "only_second_correct": only_b, "p_value": p_value,
            "log10_p_value": _log10_two_sided(min(only_a, only_b), discordant)}


def _log10_two_sided(fewer: int, n: int) -> float:
    """log10 of the two-sided p-value of ``fewer`` successes in ``n`` fair coin flips, summed
    in log space (scipy's logcdf underflows to -inf in these tails)."""
    from scipy.special import gammaln, logsumexp

    if n == 0 or 2 * fewer >= n:
        return 0.0
    k = np.arange(fewer + 1)
    log_terms = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) - n * np.log(2.0)
    return float(min(0.0, (np.log(2.0) + logsumexp(log_terms)) / np.log(10.0)))


def format_p(p_value: float, log10_p_value: float | None = None) -> str:
    """``p = 0.012``; a p-value too small for a float reads from its logarithm
    (``p = 2.0e-413``), or as the bound it is when that is not known."""
    if p_value > 0:
        return f"p = {p_value:.3g}"
    if log10_p_value is None or not np.isfinite(log10_p_value):
        return "p < 1e-300"
    exponent = int(np.floor(log10_p_value))
    return f"p = {10 ** (log10_p_value - exponent):.1f}e{exponent}"
