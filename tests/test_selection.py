"""Noise-aware selection (pipeline/search/selection.py and tune.confirm_pick): a challenger
replaces the first trial only when it wins on paired seeds by more than their noise."""

import csv
import json

import pytest

from pipeline.config import load_params
from pipeline.search.selection import choose, paired_rule
from tests.test_tuning import setup_search


def test_a_clear_paired_win_displaces_and_a_noisy_or_lost_one_does_not():
    # gains 0.05, 0.06, 0.04: mean 0.05, standard error 0.0058, margin 2.92 x that = 0.017
    clear = paired_rule([0.40, 0.42, 0.41], [0.45, 0.48, 0.45])
    assert clear["displaces"] is True and clear["gain_mean"] == pytest.approx(0.05)
    assert clear["margin"] == pytest.approx(0.0169, abs=1e-4)
    # the same mean gain, but one seed lost: within the noise
    noisy = paired_rule([0.40, 0.42, 0.41], [0.50, 0.50, 0.38])
    assert noisy["gain_mean"] == pytest.approx(0.05) and noisy["displaces"] is False
    assert paired_rule([0.40, 0.42], [0.39, 0.40])["displaces"] is False
    with pytest.raises(ValueError, match="same two or more seeds"):
        paired_rule([0.4], [0.5])
    decision = choose("0000", {"0000": [0.40, 0.42, 0.41], "0003": [0.45, 0.48, 0.45],
                               "0005": [0.41, 0.43, 0.40]})
    assert decision["challenger"] == "0003" and decision["chosen"] == "0003"
    assert choose("0000", {"0000": [0.4, 0.4]})["chosen"] == "0000"


# the first trial (the defaults) cannot learn: a rate of zero leaves its weights where they
# started; the other configuration trains, so it beats the first trial and is confirmed
FROZEN_DEFAULT_SPACE = """
family: fc
hyperparameters:
  layers: {type: fixed, value: 1}
  units: {type: fixed, value: 64}
  optimizer: {type: fixed, value: adamw}
  learning_rate: {type: choice, values: [0.0, 0.01], default: 0.0}
  batch_size: {type: fixed, value: 32}
"""


def test_a_challenger_is_confirmed_on_paired_seeds_before_it_is_trained_in_full(
        tmp_path, tiny_prepared, monkeypatch):
    from pipeline.tune import TuneFolders, run_tune

    monkeypatch.chdir(tmp_path)
    params_file, space_file = setup_search(tmp_path, FROZEN_DEFAULT_SPACE, "fc", max_trials=2,
                                           max_epochs=3, confirm_seeds=2, confirm_top=2)
    folders = TuneFolders(tmp_path / "tuning", tmp_path / "models", tmp_path / "results")
    best = run_tune(load_params(params_file), "fc", space_file, tiny_prepared, folders)
    selection = best["selection"]
    first, second = sorted(selection["paired_scores"])  # KerasTuner's ids: "0" and "1" here
    assert selection["challenger"] == second
    assert all(len(scores) == 2 for scores in selection["paired_scores"].values())
    # the decision is the rule's on the recorded scores, and the full training follows it
    again = paired_rule(selection["paired_scores"][first], selection["paired_scores"][second])
    assert selection["displaces"] == again["displaces"]
    assert best["trial_id"] == (second if again["displaces"] else first)
    assert best["hyperparameters"]["learning_rate"] == (0.01 if again["displaces"] else 0.0)
    with open(tmp_path / "results" / "fc" / "trials.csv") as handle:
        rows = {row["trial_id"]: row for row in csv.DictReader(handle)}
    assert rows[second]["paired_scores"].split() == [
        f"{s:.4f}" for s in selection["paired_scores"][second]]
    saved = json.loads((tmp_path / "results" / "fc" / "best_hparams.json").read_text())
    assert saved["selection"]["rule"].startswith("a challenger replaces the first trial")


def test_one_confirmation_seed_is_refused(tmp_path):
    from pipeline.errors import ConfigError

    params_file, _ = setup_search(tmp_path, FROZEN_DEFAULT_SPACE, "fc", confirm_seeds=1)
    with pytest.raises(ConfigError, match="tune.confirm_seeds.*at least 2"):
        load_params(params_file)
