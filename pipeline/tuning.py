"""KerasTuner glue: the hypermodel of a family, and tuners that track, budget and tolerate
failed trials through KerasTuner's own hooks (the tuner's ``run_trial``, ``on_epoch_end`` and
``on_trial_end``, the oracle's ``populate_space``), not callbacks, which ``search()`` deep-copies
per trial.
"""

from __future__ import annotations

import json
import logging
import math
import time

import keras
import keras_tuner as kt
import numpy as np

from pipeline.config import AugmentationParams
from pipeline.models import FAMILIES
from pipeline.spaces import SearchSpace
from pipeline.tracking import STATUS_OF_TRIAL, Tracker
from pipeline.training import (
    AUGMENTATION_HPS,
    RECIPE_DEFAULTS,
    Deadline,
    InitialWeights,
    NaNGuard,
    budget_schedule,
    compile_model,
    current_learning_rate,
    trial_seed,
)

log = logging.getLogger(__name__)
SUMMARY_FILE = "trial_summary.json"


def known_hyperparameters(family: str) -> set[str]:
    return set(RECIPE_DEFAULTS) | set(AUGMENTATION_HPS) | set(FAMILIES[family][1])


class FamilyHyperModel(kt.HyperModel):
    """Builds and compiles one family's model from a declarative space plus defaults, and
    trains it under a budget: ``epochs`` over ``n_train`` images, capped at
    ``seconds_per_epoch`` of training per epoch when set, with a schedule that ends exactly
    where the budget does."""

    def __init__(self, family: str, space: SearchSpace, meta: dict, policy: AugmentationParams,
                 n_train: int, seconds_per_epoch: float | None = None, seed: int | None = None):
        super().__init__(name=family)
        self.family, self.space, self.meta, self.seed = family, space, meta, seed
        self.n_train, self.seconds_per_epoch = n_train, seconds_per_epoch
        self.builder, family_defaults = FAMILIES[family]
        policy_defaults = {hp: getattr(policy, field) for hp, field in AUGMENTATION_HPS.items()}
        self.defaults = {**RECIPE_DEFAULTS, **policy_defaults, **family_defaults}
        self.last_schedule = None

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def config(self, hp) -> dict:
        """Every hyperparameter the builder reads: the space's values over the defaults."""
        return {**self.defaults, **self.space.declare(hp)}

    def build(self, hp):
        cfg = self.config(hp)
        policy = AugmentationParams(**{field: cfg[hp_name]
                                       for hp_name, field in AUGMENTATION_HPS.items()})
        model = self.builder(cfg, self.meta["num_classes"], self.meta, policy, seed=self.seed)
        return compile_model(model, cfg)

    def fit(self, hp, model, *args, epochs: int = 1, seconds: float | None = None,
            callbacks=(), **kwargs):
        """Trains from epoch 0 for ``epochs`` (a Hyperband rung restarts from scratch with a
        complete schedule for its own budget, so its score is that of a whole run)."""
        kwargs.pop("initial_epoch", None)
        cfg = self.config(hp)
        if seconds is None and self.seconds_per_epoch:
            seconds = self.seconds_per_epoch * epochs
        steps = math.ceil(self.n_train / cfg["batch_size"]) * epochs
        self.last_schedule = budget_schedule(cfg, steps, seconds)
        return model.fit(*args, batch_size=cfg["batch_size"], epochs=epochs,
                         callbacks=[*callbacks, self.last_schedule], **kwargs)


class TrackedTunerMixin:
    """Adds MLflow tracking, a wall-clock budget and failed-trial handling to a KerasTuner tuner.

    Put it before the tuner class: ``class T(TrackedTunerMixin, kt.Hyperband)``.
    """

    tracker: Tracker | None = None
    parent_run: str | None = None
    fixed_tags: dict = {}
    deadline: float | None = None  # time.monotonic() value: no trial runs past it
    trial_cap: int | None = None
    role = None  # a pipeline.distributed.Role; None: standalone
    serve_until: float | None = None  # chief only: when to stop waiting for workers
    orphaned: dict[str, str] = {}  # chief only: trials out on workers at the end
    search_seed: int = 0  # with the trial id, seeds each trial (a worker's oracle is remote)

    def setup_tracking(self, tracker: Tracker | None, parent_run: str | None,
                       fixed_tags: dict | None = None) -> None:
        self.tracker, self.parent_run, self.fixed_tags = tracker, parent_run, fixed_tags or {}
        self._runs: dict[str, str | None] = {}
        self._epoch_started = 0.0
        self._history: dict[str, list[dict]] = {}
        self._params: dict[str, int] = {}
        self._deadline_callbacks: dict[str, Deadline] = {}
        self._guards: dict[str, NaNGuard] = {}
        self._initial_weights: dict[str, InitialWeights] = {}

    def _populate_initial_space(self):
        # The space is declarative: declaring it registers every hyperparameter, conditional
        # ones included, so there is no need to build models to discover it (KerasTuner would
        # build one per condition, and a configuration that cannot build would stop the search
        # before it starts instead of failing its own trial).
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def search(self, *fit_args, **fit_kwargs):
        """Standalone and workers: KerasTuner's loop. The chief serves the oracle instead, with
        a deadline (KerasTuner's own chief loop waits forever for a dead worker's trial)."""
        if self.role is None or self.role.kind != "chief":
            return super().search(*fit_args, **fit_kwargs)
        from pipeline.distributed import serve

        self.save()
        self.orphaned = serve(self.oracle, self.serve_until or float("inf"))

    # --- one trial ----------------------------------------------------------------------------
    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        left = self.seconds_left()
        budget = "no" if left is None else f"{max(left, 0) / 60:.1f} min"
        if self.role is not None:  # a worker: the trials table lives on the chief
            log.info("%s: trial %s; %s of budget left", self.role.tuner_id, trial.trial_id,
                     budget)
            return
        done = [t for t in self.oracle.trials.values() if t.status == "COMPLETED"]
        best = max((t.score for t in done if t.score is not None), default=None)
        cap = f" of at most {self.trial_cap}" if self.trial_cap else ""
        log.info("trial %d%s (id %s): best %s so far %s; %s of budget left",
                 len(self.oracle.trials), cap, trial.trial_id, self.oracle.objective.name,
                 "-" if best is None else f"{best:.4f}", budget)

    def run_trial(self, trial, *args, **kwargs):
        trial_id = trial.trial_id
        values = dict(trial.hyperparameters.values)
        self._runs[trial_id] = self.tracker.start_trial(
            self.parent_run, f"trial-{trial_id}", values,
            {"trial_id": trial_id, **self.fixed_tags}) if self.tracker else None
        self._history[trial_id] = []
        try:
            histories = super().run_trial(trial, *args, **kwargs)
        except (kt.errors.FatalError, kt.errors.FailedTrialError):
            raise
        except Exception as exc:  # OOM, a bad configuration, a bug in a layer...
            raise kt.errors.FailedTrialError(f"{type(exc).__name__}: {exc}") from exc
        losses = [h.history.get("loss", []) for h in histories if hasattr(h, "history")]
        guard = self._guards.pop(trial_id, None)
        if (guard and guard.bad_batch is not None) or _nan_in(losses):
            raise kt.errors.FailedTrialError("NaN or infinite loss: training diverged")
        return histories

    def _build_and_fit_model(self, trial, *args, **kwargs):
        # Added here, after KerasTuner deep-copied the search's callbacks for this trial, so
        # these very objects watch the training and can be read afterwards.
        guard, deadline, start = NaNGuard(), Deadline(self.deadline), InitialWeights()
        self._guards[trial.trial_id] = guard
        self._deadline_callbacks[trial.trial_id] = deadline
        self._initial_weights[trial.trial_id] = start
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), guard, deadline, start]
        # weights and augmentation depend on the search seed and the trial only
        self.hypermodel.last_schedule = None
        seed = trial_seed(self.search_seed, trial.trial_id)
        keras.utils.set_random_seed(seed)
        self.hypermodel.seed = seed
        return super()._build_and_fit_model(trial, *args, **kwargs)

    def on_epoch_begin(self, trial, model, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, trial, model, epoch, logs=None):
        trial_id = trial.trial_id
        seconds = time.perf_counter() - self._epoch_started
        metrics = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        metrics["learning_rate"] = current_learning_rate(model)
        metrics["epoch_seconds"] = seconds
        self._history[trial_id].append({"epoch": epoch, **metrics})
        self._params.setdefault(trial_id, _trainable_params(model))
        if self.tracker:
            self.tracker.log_metrics(self._runs.get(trial_id), metrics, step=epoch)

    def on_trial_end(self, trial):
        trial_id = trial.trial_id
        summary = self._summary(trial)
        with open(f"{self.get_trial_dir(trial_id)}/{SUMMARY_FILE}", "w") as handle:
            json.dump(summary, handle, indent=1)
        run_id = self._runs.pop(trial_id, None)
        if self.tracker and run_id:
            final = {k: v for k, v in summary.items()
                     if k in ("epochs_run", "best_epoch", "trainable_params", "seconds_per_epoch",
                              "best_val_accuracy", "best_val_loss")}
            self.tracker.log_metrics(run_id, final, step=summary["epochs_run"])
            self.tracker.set_tags(run_id, {"status": summary["status"],
                                           "stopped_by_budget": summary["stopped_by_budget"],
                                           **({"error": summary["error"]}
                                              if summary["error"] else {})})
            self.tracker.end_run(run_id, STATUS_OF_TRIAL.get(summary["status"], "FAILED"))
        # KerasTuner's own bookkeeping last: it may raise when too many trials failed in a row
        super().on_trial_end(trial)

    def _summary(self, trial) -> dict:
        trial_id = trial.trial_id
        history = self._history.get(trial_id, [])
        scored = [h for h in history if _finite(h.get("val_accuracy"))]
        best = max(scored, key=lambda h: h["val_accuracy"]) if scored else None
        seconds = [h["epoch_seconds"] for h in history]
        error = (trial.message or "").strip().splitlines()[-1:] if trial.status != "COMPLETED" \
            else []
        deadline = self._deadline_callbacks.pop(trial_id, None)
        start = self._initial_weights.pop(trial_id, None)
        schedule = self.hypermodel.last_schedule
        return {
            "trial_id": trial_id,
            "status": str(trial.status),
            "epochs_run": len(history),
            "best_epoch": None if best is None else best["epoch"],
            "best_val_accuracy": None if best is None else best["val_accuracy"],
            "best_val_loss": None if best is None else best.get("val_loss"),
            "trainable_params": self._params.get(trial_id),
            "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
            "seconds": float(sum(seconds)),
            "stopped_by_budget": bool(deadline and deadline.hit),
            **(schedule.summary() if schedule is not None and history else {}),
            "initial_weights": start.digest if start else None,
            "error": error[0] if error else "",
            "history": history,
        }


def _nan_in(loss_lists) -> bool:
    return any(not math.isfinite(float(v)) for losses in loss_lists for v in losses)


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _trainable_params(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


class SearchControlMixin:
    """Oracle side of a search: a trial cap, a wall-clock budget and warm-start trials.

    ``populate_space`` is the oracle's documented extension point: answering STOPPED ends
    ``search()`` normally, so no new trial starts once the budget is spent (a trial interrupted
    by a kill and queued for a retry is not new, and still runs). ``_random_values`` is where
    every built-in oracle draws a fresh configuration; the first draws come from
    ``first_values`` (the space's defaults, or a champion's values), filled in with defaults.
    """

    deadline: float | None = None  # time.monotonic() value
    trial_cap: int | None = None
    first_values: list[dict] = []
    budget_spent = False

    def __init__(self, *args, seed: int | None = None, **kwargs):
        super().__init__(*args, seed=seed, **kwargs)
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
            if not self._duplicate(hps.values):
                return hps.values
        return super()._random_values()


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
    rung. The successive-halving brackets follow, most aggressive first, as in KerasTuner."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._current_bracket, self._brackets = 0, []
        self._start_new_bracket()


class TrackedTuner(TrackedTunerMixin, kt.Tuner):
    pass


class TrackedHyperband(TrackedTunerMixin, kt.Hyperband):
    """Hyperband whose higher rungs restart from scratch: each trial is a complete run with a
    schedule over its own rung's epochs, never a continuation of an already-annealed one."""

    def __init__(self, oracle, **kwargs):
        # kt.Hyperband.__init__ only builds its own oracle; ours adds the search controls.
        kt.Tuner.__init__(self, oracle=oracle, **kwargs)

    def _build_hypermodel(self, hp):
        return kt.Tuner._build_hypermodel(self, hp)  # no reload of the lower rung's weights


def make_tuner(kind: str, hypermodel: FamilyHyperModel, *, directory, project_name: str,
               max_trials: int, max_epochs: int, hyperband_factor: int, seed: int,
               max_consecutive_failures: int, deadline: float | None = None,
               first_values: list[dict] | None = None, tracker: Tracker | None = None,
               parent_run: str | None = None, fixed_tags: dict | None = None, role=None,
               serve_until: float | None = None, tuner_kwargs: dict | None = None):
    """A tracked, budgeted tuner of the given kind; resumes when the project folder exists."""
    common = dict(objective=kt.Objective("val_accuracy", "max"), seed=seed,
                  max_consecutive_failed_trials=max_consecutive_failures,
                  max_retries_per_trial=0)
    if kind == "hyperband":
        # iterations without end: the trial cap and the wall-clock budget end the search
        # (KerasTuner's default, one iteration, stops a small search after a few trials)
        oracle = HyperbandOracle(max_epochs=max_epochs, factor=hyperband_factor,
                                 hyperband_iterations=10_000, **common)
        tuner_class = TrackedHyperband
    elif kind == "bayesian":
        oracle, tuner_class = BayesianOracle(max_trials=max_trials, **common), TrackedTuner
    else:
        oracle, tuner_class = RandomOracle(max_trials=max_trials, **common), TrackedTuner
    oracle.trial_cap, oracle.deadline = max_trials, deadline
    oracle.first_values = [dict(v) for v in (first_values if first_values is not None else [{}])]
    tuner = tuner_class(oracle=oracle, hypermodel=hypermodel, directory=str(directory),
                        project_name=project_name, overwrite=False, **(tuner_kwargs or {}))
    tuner.setup_tracking(tracker, parent_run, fixed_tags)
    tuner.deadline, tuner.trial_cap, tuner.search_seed = deadline, max_trials, seed
    tuner.role = None if role is None or role.kind == "standalone" else role
    tuner.serve_until = serve_until
    return tuner
