"""Oracles (KerasTuner's proposers of configurations) with the search's controls: a trial cap,
a wall-clock budget and warm-start trials, all given at construction."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import keras_tuner as kt

log = logging.getLogger(__name__)


class SearchControlMixin:
    """Oracle side of a search. Put it before the oracle class.

    ``populate_space`` is the oracle's documented extension point: answering STOPPED ends
    ``search()`` normally, so no new trial starts once the cap is reached or the budget
    (``deadline``, a ``time.monotonic()`` value) is spent; a trial interrupted by a kill and
    queued for a retry is not new, and still runs. ``_random_values`` is where every built-in
    oracle draws a fresh configuration; the first draws come from ``first_values`` (the space's
    defaults, or a champion's values), filled in with defaults.
    """

    budget_spent = False

    def __init__(self, *args, trial_cap: int | None = None, deadline: float | None = None,
                 first_values: list[dict] | None = None, seed: int | None = None,
                 tried_before: set[str] | frozenset = frozenset(), **kwargs):
        super().__init__(*args, seed=seed, **kwargs)
        self.trial_cap, self.deadline = trial_cap, deadline
        self.tried_before = set(tried_before)  # config_digest of every earlier search's trials
        self.first_values = [dict(v) for v in (first_values or [])]
        if seed is not None:  # KerasTuner reads a seed of 0 as "draw one at random"
            self.seed = self._seed_state = seed

    def populate_space(self, trial_id):
        stopped = {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        if self.trial_cap is not None and len(self.trials) >= self.trial_cap:
            return stopped
        if self.deadline is not None and time.monotonic() >= self.deadline:
            if not self.budget_spent:
                log.info("budget spent: no new trial will start")
            self.budget_spent = True
            return stopped
        return super().populate_space(trial_id)

    def _random_values(self):
        while self.first_values:
            wanted = self.first_values.pop(0)
            hps = kt.HyperParameters()
            for hp in self.hyperparameters.space:
                hps.merge([hp])
                if hps.is_active(hp):
                    value = wanted.get(hp.name, hp.default)
                    hps.values[hp.name] = value if _admits(hp, value) else hp.default
            if not super()._duplicate(hps.values):  # a warm start may repeat an old search
                return hps.values
        return super()._random_values()

    def _duplicate(self, values) -> bool:
        """KerasTuner redraws a configuration this search tried; this redraws one an earlier
        search tried too (a retune explores, it does not repeat the last night)."""
        return super()._duplicate(values) or config_digest(values) in self.tried_before


def config_digest(values: dict) -> str:
    """A configuration's identity across searches: a digest of its active searched values
    (KerasTuner's ``tuner/*`` bookkeeping left out)."""
    searched = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    text = json.dumps(searched, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _admits(hp, value) -> bool:
    """Whether ``value`` lies in ``hp``'s range (warm-start values may come from an older space)."""
    config = hp.get_config()
    if "values" in config:
        return value in config["values"]
    if "min_value" in config:
        return isinstance(value, (int, float)) and \
            config["min_value"] <= value <= config["max_value"]
    if "value" in config:
        return value == config["value"]
    return isinstance(value, bool)


class RandomOracle(SearchControlMixin, kt.oracles.RandomSearchOracle):
    pass


class BayesianOracle(SearchControlMixin, kt.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(SearchControlMixin, kt.oracles.HyperbandOracle):
    """Hyperband that opens with its full-fidelity bracket: the first trials (the space's
    defaults, or a champion's values) are scored at the top rung, so another configuration
    wins only by beating them at the same budget, not because they were cut at the lowest
    rung. The successive-halving brackets follow, most aggressive first, as in KerasTuner.
    Iterations never run out: the trial cap and the wall-clock budget end the search
    (KerasTuner's default, one iteration, stops a small search after a few trials)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, hyperband_iterations=10_000, **kwargs)
        self._current_bracket, self._brackets = 0, []
        self._start_new_bracket()


def make_oracle(kind: str, *, max_trials: int, max_epochs: int, hyperband_factor: int,
                seed: int, max_consecutive_failures: int, deadline: float | None,
                first_values: list[dict], tried_before: set[str] | frozenset = frozenset()):
    """The oracle of a search of the given kind (hyperband | bayesian | random);
    ``tried_before``: digests of configurations earlier searches tried, not to be drawn."""
    common = dict(objective=kt.Objective("val_accuracy", "max"), seed=seed,
                  max_consecutive_failed_trials=max_consecutive_failures,
                  max_retries_per_trial=0, trial_cap=max_trials, deadline=deadline,
                  first_values=first_values, tried_before=tried_before)
    if kind == "hyperband":
        return HyperbandOracle(max_epochs=max_epochs, factor=hyperband_factor, **common)
    if kind == "bayesian":
        return BayesianOracle(max_trials=max_trials, **common)
    return RandomOracle(max_trials=max_trials, **common)
