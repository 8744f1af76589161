"""The search's wall-clock budget at the oracle: a trial predicted not to finish before the
deadline does not start, and the proposal it would have been leaves no trace in Hyperband's
brackets. No training: the trials' seconds are given."""

import copy
import logging
import time

import keras_tuner as kt

from pipeline.search.oracles import HyperbandOracle, RandomOracle


def _space():
    hp = kt.HyperParameters()
    hp.Float("lr_multiplier", 0.3, 3.0, sampling="log", default=1.0)
    hp.Choice("optimizer", ["nesterov", "adam"], default="nesterov")
    return hp


def _oracle(tmp_path, kind=HyperbandOracle, **kwargs):
    oracle = kind(objective=kt.Objective("val_accuracy", "max"), seed=1, first_values=[{}],
                  trial_cap=20, deadline=time.monotonic() + 3600, **kwargs)
    oracle._set_project_dir(str(tmp_path), f"budget-{kind.__name__}")
    oracle.update_space(_space())
    return oracle


def _finish(oracle, trial, score=0.5):
    oracle.update_trial(trial.trial_id, {"val_accuracy": score})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def test_a_trial_that_cannot_finish_does_not_start_and_leaves_no_trace(tmp_path, caplog):
    oracle = _oracle(tmp_path, max_epochs=3, factor=3)
    first = oracle.create_trial("tuner0")  # no cost known yet: it starts
    assert first.status == "RUNNING" and first.hyperparameters.values["tuner/epochs"] == 3
    _finish(oracle, first)
    oracle.record_trial_seconds(180.0, 3)  # 60 s per epoch of the rung

    # the next trial (3 epochs) takes about 180 s; with the margin (1.5), it needs 270 s
    oracle.deadline = time.monotonic() + 200  # 180 s would fit; 270 do not
    brackets = copy.deepcopy(oracle._brackets)
    with caplog.at_level(logging.INFO, logger="pipeline.search.oracles"):
        refused = oracle.create_trial("tuner0")
    assert refused.status == "STOPPED"
    assert "needs about 270 s" in caplog.text and "no new trial will start" in caplog.text
    assert oracle._brackets == brackets and len(oracle.trials) == 1

    oracle.budget_spent = False
    oracle.deadline = time.monotonic() + 280  # now it fits, and it is the same proposal
    second = oracle.create_trial("tuner0")
    assert second.status == "RUNNING" and second.hyperparameters.values["tuner/epochs"] == 3
    _finish(oracle, second)
    assert [len(r) for r in oracle._brackets[0]["rounds"]] == [2]


def test_a_shorter_rung_is_predicted_from_the_seconds_per_epoch(tmp_path):
    oracle = _oracle(tmp_path, max_epochs=3, factor=3)
    for _ in range(2):  # the full-fidelity bracket: two trials of 3 epochs
        trial = oracle.create_trial("tuner0")
        _finish(oracle, trial)
    oracle.record_trial_seconds(150.0, 3)
    oracle.record_trial_seconds(90.0, 3)  # the costliest per epoch is kept: 50 s
    assert oracle.seconds_per_epoch == 50.0
    oracle.deadline = time.monotonic() + 80  # a 1-epoch trial (75 s) fits, 3 epochs would not
    low = oracle.create_trial("tuner0")
    assert low.status == "RUNNING" and low.hyperparameters.values["tuner/epochs"] == 1


def test_random_search_trials_are_predicted_at_the_searchs_epochs(tmp_path):
    oracle = _oracle(tmp_path, RandomOracle, max_trials=20, trial_epochs=4)
    _finish(oracle, oracle.create_trial("tuner0"))
    oracle.record_trial_seconds(40.0, 4)
    oracle.deadline = time.monotonic() + 55  # 4 epochs at 10 s: 40 s, 60 s with the margin
    assert oracle.create_trial("tuner0").status == "STOPPED"
    oracle.budget_spent = False
    oracle.deadline = time.monotonic() + 65
    assert oracle.create_trial("tuner0").status == "RUNNING"
