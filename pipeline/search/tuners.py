"""Tuners that track, budget, seed and tolerate failed trials, through KerasTuner's own hooks.

KerasTuner's loop, and where this module (``*``), the oracles (``o``) and the hypermodel
(``h``) step in; callbacks passed to ``search()`` are deep-copied per trial, so state that must
outlive a trial lives in the tuner, per trial, in a ``TrialState``::

    search()                        * the chief serves trials with a deadline instead
      _populate_initial_space()     * declare the space; no discovery builds
      loop:
        oracle.create_trial()
          populate_space()          o trial cap, wall-clock budget, a trial predicted not to
                                      finish before the deadline -> STOPPED ends the loop
          _random_values()          o warm-start values first (defaults or a champion's)
            _duplicate()            o redraw what this or an earlier search tried
        on_trial_begin(trial)       * progress line: trial N of at most M, best so far, budget
        run_trial(trial)            * child run in MLflow (tagged with the configuration's
                                      digest); exceptions -> FailedTrialError;
                                      NaN loss, or cut short by the search's
                                      deadline once another trial is scored ->
                                      FailedTrialError
          _build_and_fit_model()    * seed from (search seed, trial id); add TerminateOnNaN,
                                      deadline and initial-weights callbacks; drop
                                      KerasTuner's per-epoch checkpoint (nothing reads it)
            _build_hypermodel()     * (Hyperband) no reload of a lower rung's weights
              hypermodel.build()    h space values over defaults -> compiled model
            hypermodel.fit()        h budget schedule over the trial's epochs and time cap
              on_epoch_begin/end()  * per-epoch metrics to MLflow, queued (never waits)
        on_trial_end(trial)         * trial_summary.json, final metrics and status in MLflow;
                                      then KerasTuner's own (may stop after N failures in a row)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import keras
import keras_tuner as kt
import numpy as np

from pipeline.search.hypermodel import FamilyHyperModel
from pipeline.search.oracles import config_digest, make_oracle
from pipeline.tracking import names
from pipeline.tracking.search_runs import SearchRuns
from pipeline.training import (
    Deadline,
    InitialWeights,
    current_learning_rate,
    trial_seed,
)

log = logging.getLogger(__name__)
SUMMARY_FILE = "trial_summary.json"
CUT_BY_BUDGET = "cut short by the search's wall-clock budget: not scored"


@dataclass
class TrialState:
    """What the tuner keeps about one running trial, from ``run_trial`` to ``on_trial_end``."""

    run_id: str | None  # its MLflow child run
    deadline: Deadline  # stops training when the search's budget is spent
    guard: keras.callbacks.Callback = field(default_factory=keras.callbacks.TerminateOnNaN)
    initial_weights: InitialWeights = field(default_factory=InitialWeights)
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    trainable_params: int | None = None
    epoch_started: float = 0.0

    def callbacks(self) -> list:
        return [self.guard, self.deadline, self.initial_weights]


class TrackedTunerMixin:
    """Adds MLflow tracking, a wall-clock budget, per-trial seeds and failed-trial handling to
    a KerasTuner tuner. Put it before the tuner class: ``class T(TrackedTunerMixin, kt.Tuner)``.

    ``deadline`` (a ``time.monotonic()`` value): no trial trains past it. ``role``: a
    ``pipeline.distributed.Role`` of a chief or worker, None standalone; the chief serves trials
    until ``serve_until``. ``search_seed`` with the trial id seeds each trial (on a worker the
    oracle is remote, so the seed lives here).
    """

    def __init__(self, *, runs: SearchRuns, run_tags: dict, deadline: float | None,
                 trial_cap: int | None, search_seed: int, role=None,
                 serve_until: float | None = None, **tuner_kwargs):
        self.runs, self.run_tags = runs, run_tags
        self.deadline, self.trial_cap, self.search_seed = deadline, trial_cap, search_seed
        self.role = None if role is None or role.kind == "standalone" else role
        self.serve_until = serve_until
        self.orphaned: dict[str, str] = {}  # chief only: trials out on workers at the end
        self._trials: dict[str, TrialState] = {}
        # every tuner here gets its oracle from make_tuner (kt.Hyperband's own __init__ would
        # only build another one)
        kt.Tuner.__init__(self, **tuner_kwargs)

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

    # --- one trial, in call order -------------------------------------------------------------
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
        # every value the trial trains with, not only the searched ones (KerasTuner's own
        # tuner/* values too: Hyperband's rung and epochs)
        hp = trial.hyperparameters
        resolved = {**self.hypermodel.logged_config(hp),
                    **{k: v for k, v in hp.values.items() if k.startswith("tuner/")}}
        searched = {k: v for k, v in hp.values.items()
                    if not k.startswith("tuner/") and hp.is_active(k)}
        rung = hp.values.get("tuner/epochs", kwargs.get("epochs", 1))
        run_id = self.runs.start_trial(trial_id, resolved, {
            **self.run_tags, names.CONFIG_DIGEST: config_digest(searched),
            names.SEARCHED_VALUES: json.dumps(searched, sort_keys=True, default=_item),
            names.RUNG_EPOCHS: rung})
        self._trials[trial_id] = TrialState(run_id, Deadline(self.deadline))
        started = time.monotonic()
        try:
            histories = super().run_trial(trial, *args, **kwargs)
        except (kt.errors.FatalError, kt.errors.FailedTrialError):
            raise
        except Exception as exc:  # OOM, a bad configuration, a bug in a layer...
            raise kt.errors.FailedTrialError(f"{type(exc).__name__}: {exc}") from exc
        losses = [h.history.get("loss", []) for h in histories if hasattr(h, "history")]
        if _nan_in(losses):
            raise kt.errors.FailedTrialError("NaN or infinite loss: training diverged")
        # a shorter run than its rung's never outranks a whole one; the only trial, though,
        # keeps its score (stopped_by_budget says so), or the search would end with nothing
        if self._trials[trial_id].deadline.hit and self._has_scored_trial():
            raise kt.errors.FailedTrialError(CUT_BY_BUDGET)
        if hasattr(self.oracle, "record_trial_seconds"):  # a worker's oracle is remote
            self.oracle.record_trial_seconds(time.monotonic() - started, rung)
        return histories

    def _has_scored_trial(self) -> bool:
        trials = getattr(self.oracle, "trials", None)  # a worker's oracle is remote: assume so
        if trials is None:
            return True
        return any(t.status == "COMPLETED" and t.score is not None for t in trials.values())

    def _build_and_fit_model(self, trial, *args, **kwargs):
        # Added here, after KerasTuner deep-copied the search's callbacks for this trial, so
        # these very objects watch the training and can be read afterwards.
        state = self._trials[trial.trial_id]
        # KerasTuner's SaveBestEpoch writes the weights of every improving epoch (up to 177 MB
        # for a wide FC trial); nothing here reads them: Hyperband rungs restart from scratch
        # and the final training retrains the best configuration
        callbacks = [c for c in kwargs.get("callbacks", [])
                     if type(c).__name__ != "SaveBestEpoch"]
        kwargs["callbacks"] = [*callbacks, *state.callbacks()]
        # weights and augmentation depend on the search seed and the trial only
        self.hypermodel.last_schedule = None
        seed = trial_seed(self.search_seed, trial.trial_id)
        keras.utils.set_random_seed(seed)
        self.hypermodel.seed = seed
        return super()._build_and_fit_model(trial, *args, **kwargs)

    def on_epoch_begin(self, trial, model, epoch, logs=None):
        self._trials[trial.trial_id].epoch_started = time.perf_counter()

    def on_epoch_end(self, trial, model, epoch, logs=None):
        state = self._trials[trial.trial_id]
        metrics = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        metrics["learning_rate"] = current_learning_rate(model)
        metrics["epoch_seconds"] = time.perf_counter() - state.epoch_started
        if state.trainable_params is None:
            state.trainable_params = _trainable_params(model)
        logging_started = time.perf_counter()
        self.runs.log_metrics(state.run_id, metrics, step=epoch)
        # what this epoch waited on MLflow (queued, so about nothing even in an outage)
        metrics["logging_seconds"] = time.perf_counter() - logging_started
        state.history.append({"epoch": epoch, **metrics})

    def on_trial_end(self, trial):
        state = self._trials.pop(trial.trial_id, None)
        summary = self._summary(trial, state)
        _write_json_atomically(os.path.join(self.get_trial_dir(trial.trial_id), SUMMARY_FILE),
                               summary)
        if state is not None and state.run_id:
            final = {k: v for k, v in summary.items()
                     if k in ("epochs_run", "best_epoch", "trainable_params", "seconds_per_epoch",
                              "best_val_accuracy", "best_val_loss", "compute_share",
                              "images_per_second") and v is not None}
            self.runs.log_metrics(state.run_id, final, step=summary["epochs_run"])
            self.runs.set_tags(state.run_id, {
                names.TRIAL_STATUS: summary["status"],
                names.STOPPED_BY_BUDGET: summary["stopped_by_budget"],
                **({names.TRIAL_ERROR: summary["error"]} if summary["error"] else {})})
            self.runs.end_run(state.run_id,
                              names.STATUS_OF_TRIAL.get(summary["status"], "FAILED"))
        # KerasTuner's own bookkeeping last: it may raise when too many trials failed in a row
        super().on_trial_end(trial)

    def _summary(self, trial, state: TrialState | None) -> dict:
        history = state.history if state else []
        scored = [h for h in history if _finite(h.get("val_accuracy"))]
        best = max(scored, key=lambda h: h["val_accuracy"]) if scored else None
        seconds = [h["epoch_seconds"] for h in history]
        error = (trial.message or "").strip().splitlines()[-1:] if trial.status != "COMPLETED" \
            else []
        schedule = self.hypermodel.last_schedule
        return {
            "trial_id": trial.trial_id,
            "status": str(trial.status),
            "epochs_run": len(history),
            "best_epoch": None if best is None else best["epoch"],
            "best_val_accuracy": None if best is None else best["val_accuracy"],
            "best_val_loss": None if best is None else best.get("val_loss"),
            "trainable_params": state.trainable_params if state else None,
            "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
            "seconds": float(sum(seconds)),
            "stopped_by_budget": bool(state and state.deadline.hit),
            **(schedule.summary() if schedule is not None and history else {}),
            "compute_share": round(self.hypermodel.last_compute_share, 4),
            "cost_basis": self.hypermodel.cost_basis,
            "images_per_second": self.hypermodel.last_speed,
            "initial_weights": state.initial_weights.digest if state else None,
            "error": error[0] if error else "",
            "history": history,
        }


def _item(value):
    """A NumPy scalar among a trial's values, as the Python number JSON can hold."""
    return value.item()


def _write_json_atomically(path: str, content: dict) -> None:
    """A kill mid-write leaves the previous file (or none), never half of one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(content, handle, indent=1)
    os.replace(tmp, path)


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


class TrackedTuner(TrackedTunerMixin, kt.Tuner):
    pass


class TrackedHyperband(TrackedTunerMixin, kt.Hyperband):
    """Hyperband whose higher rungs restart from scratch: each trial is a complete run with a
    schedule over its own rung's epochs, never a continuation of an already-annealed one."""

    def _build_hypermodel(self, hp):
        return kt.Tuner._build_hypermodel(self, hp)  # no reload of the lower rung's weights


def make_tuner(settings, hypermodel: FamilyHyperModel, *, directory, project_name: str,
               deadline: float | None, runs: SearchRuns, run_tags: dict,
               first_values: list[dict] | None = None, role=None,
               serve_until: float | None = None, tuner_kwargs: dict | None = None,
               tried_before: set[str] | frozenset = frozenset(), history: list[dict] = ()):
    """A tracked, budgeted tuner for ``settings`` (a family's ``TuneParams``: tuner kind, trial
    cap, epochs, seed...); resumes when the project folder exists. ``first_values``: the first
    configurations to try (default: the space's defaults); ``tried_before``: digests of
    configurations earlier searches tried, never drawn again; ``history``: their scored trials
    at this search's fidelity (SearchControlMixin)."""
    oracle = make_oracle(
        settings.tuner, max_trials=settings.max_trials, max_epochs=settings.max_epochs,
        hyperband_factor=settings.hyperband_factor, seed=settings.seed,
        max_consecutive_failures=settings.max_consecutive_failures, deadline=deadline,
        first_values=first_values if first_values is not None else [{}],
        tried_before=tried_before, sampling=settings.sampling, history=history)
    tuner_class = TrackedHyperband if settings.tuner == "hyperband" else TrackedTuner
    return tuner_class(
        oracle=oracle, hypermodel=hypermodel, directory=str(directory),
        project_name=project_name, overwrite=False, runs=runs, run_tags=run_tags,
        deadline=deadline, trial_cap=settings.max_trials, search_seed=settings.seed,
        role=role, serve_until=serve_until, **(tuner_kwargs or {}))
