"""The prior-centred oracle (pipeline/search/prior.py through oracles.py): draws near the
prior, a uniform share that never vanishes, a weight that follows the incumbent, and a search
that escapes a poor prior. Simulated objectives: no training."""

import math

import keras_tuner as kt
import numpy as np
import pytest

from pipeline.search import prior
from pipeline.search.oracles import RandomOracle, config_digest, ranked_at_top_rung


def _space():
    hp = kt.HyperParameters()
    hp.Float("lr_multiplier", 0.3, 3.0, sampling="log", default=1.0)
    hp.Choice("optimizer", ["nesterov", "momentum", "adam", "adamw"], default="nesterov")
    hp.Boolean("batch_norm", default=True)
    hp.Int("stages", 2, 4, default=3)
    return hp


def test_draws_around_the_prior_stay_near_it():
    space = _space().space
    rng = np.random.default_rng(0)
    draws = [prior.draw_around(space, {}, "prior", rng) for _ in range(600)]
    kept = np.mean([d["optimizer"] == "nesterov" for d in draws])
    assert kept == pytest.approx(prior.KEEP["prior"], abs=0.06)
    logs = np.log10([d["lr_multiplier"] for d in draws])
    # SPREAD of the unit interval (one decade here) either side, cut at the ends
    assert abs(np.median(logs)) < 0.05
    assert np.std(logs) == pytest.approx(prior.SPREAD["prior"], rel=0.25)
    assert all(0.3 <= d["lr_multiplier"] <= 3.0 for d in draws)
    # a uniform draw lands within 0.2 decades of the prior 40% of the time
    assert np.mean(np.abs(logs) < 0.2) > 0.75


def test_the_uniform_share_never_falls_below_its_floor_and_the_incumbent_wins_votes():
    space = _space().space
    assert prior.mixture_weights(0, 3, space, {}, None, [])["uniform"] == 0.5
    high = prior.mixture_weights(3, 3, space, {}, None, [])
    assert high == {"uniform": prior.UNIFORM_FLOOR, "prior": 1 - prior.UNIFORM_FLOOR,
                    "incumbent": 0.0}
    incumbent = {"lr_multiplier": 3.0, "optimizer": "adam", "batch_norm": True, "stages": 4}
    near_it = [incumbent, {**incumbent, "lr_multiplier": 2.5}, {**incumbent, "stages": 3}]
    weights = prior.mixture_weights(1, 3, space, {}, incumbent, near_it)
    assert weights["incumbent"] == pytest.approx(0.75) and weights["prior"] == 0.0
    # the best trials look like the prior: the prior keeps the weight
    defaults = {"lr_multiplier": 1.0, "optimizer": "nesterov", "batch_norm": True, "stages": 3}
    weights = prior.mixture_weights(1, 3, space, {}, incumbent, [defaults, defaults, incumbent])
    assert weights["prior"] == pytest.approx(0.75) and weights["incumbent"] == 0.0
    assert math.isclose(sum(weights.values()), 1.0)


def _simulate(tmp_path, objective, trials=30, prior_values=None, sampling="prior", seed=0):
    oracle = RandomOracle(objective=kt.Objective("val_accuracy", "max"), max_trials=trials,
                          seed=seed, first_values=[prior_values or {}], trial_cap=trials,
                          sampling=sampling)
    oracle._set_project_dir(str(tmp_path), f"sim-{sampling}-{seed}")
    oracle.update_space(_space())
    for _ in range(trials):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            break
        oracle.update_trial(trial.trial_id, {"val_accuracy": objective(trial.hyperparameters
                                                                       .values)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    return oracle


def _rate_peak(peak: float):
    """Chance (0.1) beyond half a decade from the rate ``peak``, 0.7 at it; without batch norm
    a configuration learns 0.4 of that: like a short trial, where most draws cannot train."""
    def score(values):
        gap = abs(math.log10(values["lr_multiplier"] / peak))
        return 0.1 + 0.6 * max(0.0, 1 - 2 * gap) * (1.0 if values["batch_norm"] else 0.4)
    return score


def test_with_a_good_prior_most_trials_are_informative(tmp_path):
    # the prior sits at the peak. Expected share of trials scoring at least half the
    # default's: about 0.29 for uniform draws (batch norm on, rate within 0.29 decades) and
    # about 0.7 with the prior (its draws keep both four times in five)
    objective = _rate_peak(1.0)
    shares = {}
    for sampling in ("prior", "uniform"):
        oracle = _simulate(tmp_path, objective, trials=60, sampling=sampling)
        scores = [t.score for t in oracle.trials.values()]
        shares[sampling] = np.mean([s >= 0.5 * scores[0] for s in scores[1:]])
    assert shares["prior"] >= 0.6 and shares["uniform"] <= 0.45


def test_a_poor_prior_is_escaped_through_the_uniform_share_and_the_incumbent(tmp_path):
    # the prior's rate is a decade below the peak; the search still gets near the peak
    objective = _rate_peak(3.0)
    poor = {"lr_multiplier": 0.3, "batch_norm": False}
    for seed in (0, 1, 2):
        oracle = _simulate(tmp_path, objective, prior_values=poor, seed=seed)
        best = ranked_at_top_rung(oracle.trials.values())[0]
        assert best.hyperparameters.values["lr_multiplier"] > 1.5
        assert best.score >= 0.9 * objective({"lr_multiplier": 3.0, "batch_norm": True})
        assert oracle.draws.get("uniform", 0) >= 3 and oracle.draws.get("incumbent", 0) >= 3


def test_close_configurations_count_as_tried():
    base = {"lr_multiplier": 1.0, "optimizer": "adam", "tuner/epochs": 3}
    assert config_digest(base) == config_digest({**base, "lr_multiplier": 1.004,
                                                 "tuner/epochs": 1})
    assert config_digest(base) != config_digest({**base, "lr_multiplier": 1.2})


def _oracle_with_history(tmp_path, history, name):
    oracle = RandomOracle(objective=kt.Objective("val_accuracy", "max"), max_trials=10, seed=0,
                          first_values=[{}], trial_cap=10, trial_epochs=3, history=history)
    oracle._set_project_dir(str(tmp_path), name)
    oracle.update_space(_space())
    trial = oracle.create_trial("tuner0")  # the prior (the space's defaults) first
    oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    return oracle


def test_earlier_trials_at_the_same_rung_rank_with_the_search_and_can_be_its_incumbent(
        tmp_path):
    far = {"lr_multiplier": 2.5, "optimizer": "adam", "batch_norm": True, "stages": 4}
    history = [{"values": far, "score": 0.8, "epochs": 3},
               {"values": {**far, "stages": 2}, "score": 0.3, "epochs": 3},
               # another rung's score, and a value the space no longer admits: not ranked
               {"values": {**far, "stages": 3}, "score": 0.95, "epochs": 1},
               {"values": {**far, "lr_multiplier": 10.0}, "score": 0.99, "epochs": 3}]
    oracle = _oracle_with_history(tmp_path, history, "with")
    ranked = oracle.ranked_values()
    assert [r.get("stages") for r in ranked] == [4, 3, 2]  # 0.8, the defaults' 0.5, 0.3
    assert ranked[0] == far
    # the best earlier trial is the incumbent the draws move around: configurations like it
    # (Adam, 4 stages, a high rate) come up; without the history they are rare (uniform draws)
    alone = _oracle_with_history(tmp_path, [], "without")
    assert [r.get("stages") for r in alone.ranked_values()] == [3]
    like_far = {}
    for name, searched in (("with", oracle), ("without", alone)):
        for _ in range(9):
            trial = searched.create_trial("tuner0")
            searched.update_trial(trial.trial_id, {"val_accuracy": 0.1})
            trial.status = "COMPLETED"
            searched.end_trial(trial)
        like_far[name] = sum(t.hyperparameters.values["optimizer"] == "adam"
                             and t.hyperparameters.values["stages"] == 4
                             and t.hyperparameters.values["lr_multiplier"] > 1.5
                             for t in searched.trials.values())
    assert like_far["with"] >= 3 and like_far["without"] <= 1, like_far


def test_searches_with_consecutive_seeds_draw_different_uniform_configurations(tmp_path):
    """KerasTuner seeds each sampled value with a counter; started at the search seed, seeds s
    and s + 1 drew the same numbers one place apart, and their searches repeated each other's
    configurations (bench/README.md, "A fresh seed for the informative share"). One dimension
    makes the overlap total: 29 of 30 draws shared."""
    drawn = {}
    for seed in (1, 2):
        oracle = RandomOracle(objective=kt.Objective("val_accuracy", "max"), max_trials=40,
                              seed=seed, sampling="uniform", trial_cap=40)
        oracle._set_project_dir(str(tmp_path), f"uniform-{seed}")
        hp = kt.HyperParameters()
        hp.Float("lr_multiplier", 0.3, 3.0, sampling="log", default=1.0)
        oracle.update_space(hp)
        drawn[seed] = {oracle._random_values()["lr_multiplier"] for _ in range(30)}
    assert len(drawn[1]) == len(drawn[2]) == 30
    assert not drawn[1] & drawn[2]
