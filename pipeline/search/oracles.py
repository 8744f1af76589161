"""Oracles (KerasTuner's proposers of configurations) with the search's controls: a trial cap,
a wall-clock budget, warm-start trials and draws around a prior (search/prior.py), all given
at construction."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time

import keras_tuner as kt
import numpy as np

from pipeline.search import prior as priors

log = logging.getLogger(__name__)

# A trial is admitted only if its predicted seconds times this fit in what is left. A trial's
# share of its rung is its speed against the defaults' (search/cost.py), but its first steps
# train at the whole rung's pace, its validation and set-up cost seconds of their own, a FLOP-
# budgeted trial (deterministic searches) is not equal seconds (a wider draw at the same FLOPs
# took 1.34 times the defaults' in a laptop run), and the machine's own epoch times spread. The
# costs are lopsided: a trial refused gives its minutes to the final training, a trial the
# deadline cuts loses all of them; so the margin is generous.
PREDICTION_MARGIN = 1.5


class SearchControlMixin:
    """Oracle side of a search. Put it before the oracle class.

    ``populate_space`` is the oracle's documented extension point: answering STOPPED ends
    ``search()`` normally, so no new trial starts once the cap is reached or the budget
    (``deadline``, a ``time.monotonic()`` value) is spent; a trial interrupted by a kill and
    queued for a retry is not new, and still runs. ``_random_values`` is where every built-in
    oracle draws a fresh configuration; the first draws come from ``first_values`` (the space's
    defaults, or a champion's values), filled in with defaults. With ``sampling="prior"`` the
    later draws mix uniform ones with draws around the first configuration (the prior) and
    around the best trial so far (search/prior.py); ``"uniform"``: KerasTuner's own.
    ``history``: earlier searches' scored trials at this search's fidelity (``values``,
    ``score``, ``epochs``: a retune's, from MLflow), ranked with this search's own trials of
    the same rung, so the incumbent and the prior-or-incumbent vote build on earlier nights.

    A trial that cannot finish before the deadline does not start: its length is predictable,
    since trials are budgeted in compute (a rung's epochs cost about what the defaults' do),
    from ``seconds_per_epoch``, the costliest finished trial so far per epoch of its rung
    (``record_trial_seconds``), times ``PREDICTION_MARGIN``. Without that, the last trial
    would train until the deadline cut it, unscored, and its minutes would be lost.
    ``trial_epochs``: the epochs of a trial whose oracle sets none (random and Bayesian
    searches: the search's ``max_epochs``).
    """

    budget_spent = False
    seconds_per_epoch: float | None = None

    def __init__(self, *args, trial_cap: int | None = None, deadline: float | None = None,
                 first_values: list[dict] | None = None, seed: int | None = None,
                 tried_before: set[str] | frozenset = frozenset(), sampling: str = "prior",
                 trial_epochs: int | None = None, history: list[dict] = (), **kwargs):
        super().__init__(*args, seed=seed, **kwargs)
        self.trial_cap, self.deadline, self.trial_epochs = trial_cap, deadline, trial_epochs
        self.tried_before = set(tried_before)  # config_digest of every earlier search's trials
        self.history = [dict(h) for h in history]
        self.first_values = [dict(v) for v in (first_values or [])]
        self.prior = dict(self.first_values[0]) if self.first_values else {}
        self.sampling = sampling
        self.draws: dict[str, int] = {}  # how many draws of each kind (the search run logs it)
        if seed is not None:  # KerasTuner reads a seed of 0 as "draw one at random"
            self.seed = seed
            self._seed_state = uniform_stream_start(seed)

    def populate_space(self, trial_id):
        stopped = {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        if self.trial_cap is not None and len(self.trials) >= self.trial_cap:
            return stopped
        if self.deadline is not None and time.monotonic() >= self.deadline:
            if not self.budget_spent:
                log.info("budget spent: no new trial will start")
            self.budget_spent = True
            return stopped
        before = self._proposal_state()
        response = super().populate_space(trial_id)
        if response["status"] != kt.engine.trial.TrialStatus.RUNNING:
            return response
        needed, left = self._predicted_seconds(response["values"]), self._seconds_left()
        if needed is not None and left is not None and needed > left:
            # undo the proposal (Hyperband has entered it in a bracket), so that a resumed
            # search with a later deadline proposes the same trial again
            self.__dict__.update(before)
            log.info("budget: the next trial needs about %.0f s and %.0f s are left: no new "
                     "trial will start", needed, left)
            self.budget_spent = True
            return stopped
        return response

    def record_trial_seconds(self, seconds: float, epochs: int) -> None:
        """A finished trial's wall-clock seconds and its rung's epochs: the prediction keeps
        the costliest trial's seconds per epoch, so a trial it lets start is not cut."""
        per_epoch = seconds / max(epochs, 1)
        self.seconds_per_epoch = max(self.seconds_per_epoch or 0.0, per_epoch)

    def _predicted_seconds(self, values: dict) -> float | None:
        epochs = values.get("tuner/epochs", self.trial_epochs)
        if self.seconds_per_epoch is None or epochs is None:
            return None
        return PREDICTION_MARGIN * self.seconds_per_epoch * epochs

    def _seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _proposal_state(self) -> dict:
        """What proposing a trial changes in an oracle (KerasTuner's brackets and seed state,
        the warm-start queue, the draw counts), copied so that a proposal can be undone."""
        names = ("_brackets", "_current_bracket", "_current_iteration", "_seed_state",
                 "first_values", "draws")
        return {n: copy.deepcopy(self.__dict__[n]) for n in names if n in self.__dict__}

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
        kind, centre = self._draw_kind()
        if kind != "uniform":
            space = self.hyperparameters.space
            for attempt in range(20):
                values = priors.draw_around(space, centre, kind, self._rng(1, attempt))
                if not self._duplicate(values):
                    self.draws[kind] = self.draws.get(kind, 0) + 1
                    return values
        self.draws["uniform"] = self.draws.get("uniform", 0) + 1
        return super()._random_values()

    def _draw_kind(self) -> tuple[str, dict | None]:
        """Uniform, prior or incumbent, with search/prior.py's weights for this bracket, and
        the values to draw around (None for uniform)."""
        if self.sampling != "prior":
            return "uniform", None
        ranked = self.ranked_values()
        # every trial of a random or Bayesian search runs at the top fidelity
        rung, eta = priors.TOP_RUNG, getattr(self, "factor", 3)
        if hasattr(self, "_current_bracket"):  # Hyperband: bracket 0 starts at the top rung
            rung = self._get_num_brackets() - 1 - self._current_bracket
        weights = priors.mixture_weights(rung, eta, self.hyperparameters.space, self.prior,
                                         ranked[0] if ranked else None, ranked)
        kinds = list(weights)
        kind = kinds[self._rng(0, 0).choice(len(kinds), p=[weights[k] for k in kinds])]
        return kind, {"prior": self.prior, "incumbent": ranked[0] if ranked else None}.get(kind)

    def ranked_values(self) -> list[dict]:
        """The values of the scored configurations at this search's top rung, best first: its
        own trials, and the earlier searches' (``history``) at that rung whose values the
        space still admits (a space may have changed since)."""
        own = ranked_at_top_rung(self.trials.values())
        rung = (own[0].hyperparameters.values.get("tuner/epochs") if own else None) \
            or self.trial_epochs
        scored = [(t.score, t.hyperparameters.values) for t in own]
        space = {hp.name: hp for hp in self.hyperparameters.space}
        scored += [(h["score"], h["values"]) for h in self.history if h["epochs"] == rung
                   and all(_admits(space[k], v) for k, v in h["values"].items() if k in space)]
        return [values for _, values in sorted(scored, key=lambda s: s[0], reverse=True)]

    def _rng(self, purpose: int, attempt: int) -> np.random.Generator:
        """A generator for one draw: a function of the search seed and the draw's place, so a
        resumed search draws what an uninterrupted one would, and seeds 0 and 1 differ (a
        counter started at the seed would give them the same stream shifted by one)."""
        return np.random.default_rng([self.seed or 0, len(self.trials), purpose, attempt])

    def _duplicate(self, values) -> bool:
        """KerasTuner redraws a configuration this search tried; this redraws one close to a
        trial of this search or of an earlier one (config_digest rounds numbers: a retune
        explores, it does not repeat the last night with a rate 1% higher)."""
        if super()._duplicate(values):
            return True
        digest = config_digest(values)
        return digest in self.tried_before or any(
            digest == config_digest(t.hyperparameters.values) for t in self.trials.values())


def ranked_at_top_rung(trials) -> list:
    """Completed, scored trials at the highest rung (``tuner/epochs``) any of them reached,
    best first: a 1-epoch score is never ranked against a 3-epoch one."""
    done = [t for t in trials if t.status == "COMPLETED" and t.score is not None]
    if not done:
        return []
    top = max(t.hyperparameters.values.get("tuner/epochs", 0) for t in done)
    at_top = [t for t in done if t.hyperparameters.values.get("tuner/epochs", 0) == top]
    return sorted(at_top, key=lambda t: t.score, reverse=True)


def uniform_stream_start(seed: int) -> int:
    """Where KerasTuner's uniform draws start for a search seed. KerasTuner seeds each value
    it samples with a counter and adds one per value; started at the seed itself, seeds s and
    s + 1 would draw the same numbers one place apart and repeat each other's configurations.
    A number derived from the seed keeps the streams of different seeds apart."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0])


def config_digest(values: dict) -> str:
    """A configuration's identity across searches: a digest of its active searched values
    (KerasTuner's ``tuner/*`` bookkeeping left out), numbers to two significant digits, so
    that configurations this close count as the same one."""
    searched = {k: _two_digits(v) for k, v in values.items() if not k.startswith("tuner/")}
    text = json.dumps(searched, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _two_digits(value):
    if isinstance(value, float):
        return float(f"{value:.2g}")
    return value


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
                first_values: list[dict], tried_before: set[str] | frozenset = frozenset(),
                sampling: str = "prior", history: list[dict] = ()):
    """The oracle of a search of the given kind (hyperband | bayesian | random);
    ``tried_before``: digests of configurations earlier searches tried, not to be drawn;
    ``sampling``: prior | uniform; ``history``: earlier scored trials (SearchControlMixin)."""
    common = dict(objective=kt.Objective("val_accuracy", "max"), seed=seed,
                  max_consecutive_failed_trials=max_consecutive_failures,
                  max_retries_per_trial=0, trial_cap=max_trials, deadline=deadline,
                  first_values=first_values, tried_before=tried_before, sampling=sampling,
                  trial_epochs=max_epochs, history=history)
    if kind == "hyperband":
        return HyperbandOracle(max_epochs=max_epochs, factor=hyperband_factor, **common)
    if kind == "bayesian":
        return BayesianOracle(max_trials=max_trials, **common)
    return RandomOracle(max_trials=max_trials, **common)
