"""Noise-aware selection: a challenger displaces the search's first trial (the recipe, or a
retune's champion) only when it wins on paired seeds by more than their noise.

One trial per configuration is one seed: two configurations a point apart at a short budget
are within what a different seed gives the same one. So the best challengers at the top rung
are trained again beside the first trial with the same seeds (the same data order and
augmentation draws for every configuration), and the rule, fixed here before any data, is a
one-sided paired t-test at 95%: the mean gain over the first trial must exceed
t(0.95, n - 1) x its standard error. With 2 seeds that is 6.3 standard errors, with 3 seeds
2.9: a challenger must win clearly, or the recipe stays.
"""

from __future__ import annotations

import math
import statistics

CONFIDENCE = 0.95


def paired_rule(first: list[float], challenger: list[float]) -> dict:
    """Whether ``challenger`` displaces ``first`` (scores per seed, the same seeds in the same
    order): its mean paired gain, the gain's standard error and the margin it had to clear."""
    from scipy.stats import t as student_t

    if len(first) != len(challenger) or len(first) < 2:
        raise ValueError("a paired comparison needs the same two or more seeds for both")
    gains = [c - f for f, c in zip(first, challenger, strict=True)]
    mean = statistics.fmean(gains)
    error = statistics.stdev(gains) / math.sqrt(len(gains))
    margin = float(student_t.ppf(CONFIDENCE, len(gains) - 1)) * error
    return {"gain_mean": round(mean, 4), "gain_standard_error": round(error, 4),
            "margin": round(margin, 4), "displaces": bool(mean > margin and mean > 0)}


def choose(first_id: str, paired: dict[str, list[float]]) -> dict:
    """The decision over ``paired`` (trial id -> paired scores, the first trial's among them):
    the challenger with the largest mean gain, and whether it clears the rule."""
    challengers = [trial for trial in paired if trial != first_id]
    if not challengers:
        return {"chosen": first_id, "challenger": None, "rule": RULE}
    best = max(challengers, key=lambda trial: statistics.fmean(paired[trial]))
    verdict = paired_rule(paired[first_id], paired[best])
    return {"chosen": best if verdict["displaces"] else first_id, "challenger": best,
            **verdict, "rule": RULE}


RULE = (f"a challenger replaces the first trial only if its mean paired gain exceeds the "
        f"one-sided {CONFIDENCE:.0%} t margin (t x standard error of the paired gains)")
