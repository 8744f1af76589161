"""Where a search draws its next configuration: around a prior (the space's defaults, the known
recipe), around the best configuration found so far (the incumbent), or anywhere in the space.

A search of a dozen short trials cannot afford to learn the space from uniform draws, most of
which do not train; a good recipe is a prior worth trusting. It may also be a poor one, so a
share of uniform draws never goes away, and the weight moves from the prior to the incumbent
as the search's best trials show which of the two they resemble. This follows PriorBand
(Mallik et al., NeurIPS 2023): uniform with probability 1 / (1 + eta^r) for a bracket whose
first rung is r rungs above the lowest (low fidelity explores, high fidelity trusts the prior),
the rest split between prior and incumbent by how many of the top trials are likelier under
each. piBO (Hvarfner et al., ICLR 2022) decays a prior's weight as evidence grows; here the
incumbent's share plays that part.

Draws live in KerasTuner's unit interval of each hyperparameter (``value_to_prob`` /
``prob_to_value``): numbers take a normal step around the centre (log-spaced ones in log
space), choices keep the centre's value or move to another one uniformly.
"""

from __future__ import annotations

import math

import keras_tuner as kt
import numpy as np

UNIFORM_FLOOR = 0.2  # never fewer uniform draws than this: a poor prior is still escaped
# A draw should change a few things, not everything: with ~15 choices in a space, keeping each
# with 0.85 changes about two, so a trial reads like a variation of the recipe
SPREAD = {"prior": 0.15, "incumbent": 0.08}  # std of a numeric step, in the unit interval
KEEP = {"prior": 0.85, "incumbent": 0.9}  # chance a choice keeps the centre's value
TOP_SHARE = 1 / 3  # the top trials that vote between prior and incumbent
TOP_RUNG = 99  # the rung of a search without fidelities: every trial at the top


def _categorical(hp) -> bool:
    return isinstance(hp, (kt.engine.hyperparameters.Choice, kt.engine.hyperparameters.Boolean))


def _choices(hp) -> list:
    return [False, True] if isinstance(hp, kt.engine.hyperparameters.Boolean) else \
        list(hp.values)


def draw_around(space: list, centre: dict, kind: str, rng: np.random.Generator) -> dict:
    """One configuration near ``centre`` (a value per hyperparameter name; missing ones take
    the default), conditional hyperparameters drawn only where active."""
    hps = kt.HyperParameters()
    for hp in space:
        hps.merge([hp])
        if not hps.is_active(hp):
            continue
        value = centre.get(hp.name, hp.default)
        if isinstance(hp, kt.engine.hyperparameters.Fixed):
            hps.values[hp.name] = hp.value
        elif _categorical(hp):
            choices = _choices(hp)
            others = [c for c in choices if c != value] if value in choices else choices
            keep = value in choices and (not others or rng.random() < KEEP[kind])
            hps.values[hp.name] = value if keep else others[rng.integers(len(others))]
        else:
            unit = hp.value_to_prob(value)
            step = float(np.clip(unit + rng.normal(0.0, SPREAD[kind]), 0.0, 1.0))
            hps.values[hp.name] = hp.prob_to_value(step)
    return hps.values


def log_density(space: list, values: dict, centre: dict, kind: str) -> float:
    """How likely ``draw_around(centre, kind)`` is to land at ``values`` (up to a constant
    shared by every centre of the same kind): the vote between prior and incumbent."""
    total = 0.0
    for hp in space:
        if hp.name not in values or isinstance(hp, kt.engine.hyperparameters.Fixed):
            continue
        value, middle = values[hp.name], centre.get(hp.name, hp.default)
        if _categorical(hp):
            n = len(_choices(hp))
            total += math.log(KEEP[kind] if value == middle else
                              (1 - KEEP[kind]) / max(n - 1, 1))
        else:
            gap = hp.value_to_prob(value) - hp.value_to_prob(middle)
            total += -0.5 * (gap / SPREAD[kind]) ** 2 - math.log(SPREAD[kind])
    return total


def mixture_weights(rung: int, eta: int, space: list, prior: dict, incumbent: dict | None,
                    top: list[dict]) -> dict:
    """Probabilities of drawing uniformly, around the prior and around the incumbent, for a
    bracket whose first rung is ``rung`` (0: the lowest fidelity); ``top``: the values of the
    best trials at the incumbent's rung, best first."""
    uniform = max(UNIFORM_FLOOR, 1.0 / (1.0 + eta ** rung))
    rest = 1.0 - uniform
    if incumbent is None or not top:
        return {"uniform": uniform, "prior": rest, "incumbent": 0.0}
    voters = top[:max(1, math.ceil(len(top) * TOP_SHARE))]
    for_incumbent = sum(log_density(space, v, incumbent, "incumbent")
                        > log_density(space, v, prior, "incumbent") for v in voters)
    share = for_incumbent / len(voters)
    return {"uniform": uniform, "prior": rest * (1 - share), "incumbent": rest * share}
