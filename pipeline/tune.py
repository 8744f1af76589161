"""The tune stage of one family, in named steps (each logs an ``[i/n]`` line):

  [1/6] load        the prepared splits, the search subset, the search space
  [2/6] record      the MLflow parent run of the search (found again by a content key, so an
                    interrupted search resumes its run as KerasTuner resumes its project)
  [3/6] search      KerasTuner under the trial cap and wall-clock budget (``pipeline.search``)
  [4/6] tabulate    results/<family>/trials.csv and trial_history.csv; the best trial
  [5/6] final       the best configuration trained afresh on the whole training split under
                    the budget rule; its curves are final_* metrics of the parent run
  [6/6] save        models/<family>/best.keras, results/<family>/best_hparams.json and
                    history.csv, and the same files as artifacts of the parent run

A worker of a distributed search runs steps 1-3 only: the chief does the rest.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Params, TuneParams
from pipeline.data import store
from pipeline.data.split import per_class_subset
from pipeline.errors import UserError
from pipeline.spaces import SearchSpace
from pipeline.tracking import names
from pipeline.tracking.search_runs import SearchRuns

log = logging.getLogger(__name__)
TRIAL_COLUMNS = ["trial_id", "status", "score", "epochs_run", "best_epoch", "seconds",
                 "seconds_per_epoch", "trainable_params", "stopped_by_budget", "ended_by",
                 "schedule_progress", "steps", "compute_share", "cost_basis",
                 "images_per_second", "trained_seconds",
                 "initial_weights", "error"]


class SearchFailed(UserError):
    """The search produced no usable trial (every trial failed, or too many in a row)."""

    exit_code = 1


@dataclass(frozen=True)
class TuneFolders:
    tuning: Path  # KerasTuner projects, one per search key (resume)
    models: Path  # <family>/best.keras
    results: Path  # <family>/best_hparams.json, trials.csv, trial_history.csv, history.csv


@dataclass
class SearchData:
    """What step 1 loads: the splits (uint8), the search subset's indices, the space."""

    meta: dict  # meta.json of the prepared data: classes, sizes, normalisation statistics
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    search_idx: np.ndarray  # the training images the search trains on
    space: SearchSpace

    @property
    def data_hash(self) -> str:
        return self.meta["outputs"]["train_images.npy"]["sha256"][:12]


class Steps:
    """``[i/n]`` progress lines of one stage."""

    def __init__(self, total: int, prefix: str):
        self.total, self.prefix, self.done = total, prefix, 0

    def __call__(self, message: str, *args) -> None:
        self.done += 1
        log.info(f"[%d/%d] %s: {message}", self.done, self.total, self.prefix, *args)


def run_tune(params: Params, family: str, space_file: Path, data_dir: Path,
             folders: TuneFolders, first_values: list[dict] | None = None,
             run_tags: dict | None = None, role=None,
             tried_before: set[str] | frozenset = frozenset(), fixed: dict | None = None,
             budget_rule: str = "equal_epochs", history: list[dict] = ()) -> dict:
    """Search ``family`` and save its best configuration, trained; returns best_hparams.json's
    content. ``first_values``: configurations to try first (default: the space's defaults).
    ``tried_before``: digests of configurations earlier searches tried (not drawn again).
    ``history``: their scored trials (lineage.earlier_trials); those at this search's fidelity
    join its ranking (search/oracles.py). ``run_tags``: extra MLflow tags of the search run,
    part of its identity (a retune's id).
    ``role``: a ``pipeline.distributed.Role``; a worker only runs the trials the chief hands
    out, the chief serves them and does the rest. ``fixed``: hyperparameters held at these
    values (searched no more). ``budget_rule``: ``equal_time`` trains the final model by the
    clock alone (``final_epochs`` only a bound), pipeline/budget_rule.py."""
    from pipeline import distributed

    role = role or distributed.Role("standalone")
    is_worker = role.kind == "worker"
    t = params.tune.for_family(family)
    step = Steps(3 if is_worker else 6, family)

    step("loading the prepared data and the search space")
    distributed.configure(role, rpc_timeout_s=max(role.wait_s, 60))
    if is_worker:
        distributed.wait_for_chief(role, role.wait_s)
    data = load_search_data(t, family, space_file, data_dir)
    if fixed:
        data.space = data.space.with_fixed(fixed)
    precision, parallel = configure_devices(t, family, data, params.augmentation)

    search_key = _search_key(family, space_file, t, data.data_hash, params.augmentation,
                             {**(run_tags or {}), **{f"fixed.{k}": v for k, v in
                                                     (fixed or {}).items()}})
    project = f"{family}-{search_key}"
    step("opening the search's MLflow run (key %s)", search_key)
    # a spool per process: a worker's unsent writes are its own
    spool = "mlflow-spool.jsonl" if role.kind == "standalone" else \
        f"mlflow-spool-{role.tuner_id}.jsonl"
    runs = SearchRuns.open(params.tracking, spool=folders.tuning / project / spool)
    if is_worker:
        runs.join(search_key, role.wait_s)
    else:
        open_search_run(runs, search_key, family, t, space_file, data, data_dir, role,
                        parallel, precision, run_tags)

    step("searching with %s: %d training images, %d validation, at most %d trials in "
         "%.1f min", t.tuner, len(data.search_idx), len(data.y_val), t.max_trials,
         t.budget_minutes)
    started = time.monotonic()
    hypermodel, tuner = build_search(t, family, data, params.augmentation, folders.tuning,
                                     project, started, runs, role, first_values, parallel,
                                     tried_before, history)
    tensorboard = folders.tuning / project / "tensorboard" if params.tracking.tensorboard \
        else None
    search(tuner, t, data, runs, role, family, tensorboard)
    if is_worker:
        runs.finish(None)  # the chief ends the search run; this worker's writes go out
        log.info("%s: the chief has no more trials; done", role.tuner_id)
        return {"family": family, "role": role.tuner_id, "mlflow_parent_run": runs.parent_id}

    step("tabulating the trials")
    best_trial = tabulate_trials(tuner, family, folders.results, runs, started)
    best_trial, selection = confirm_pick(tuner, hypermodel, best_trial, data, t, runs,
                                         folders.results / family / "trials.csv")
    search_seconds = time.monotonic() - started
    # what the search left of its budget (it stopped because no further trial could finish,
    # or at its trial cap) is the final training's: the family's minutes are spent on training.
    # Not under equal_time, whose final budget is the CNN's measured training time itself.
    unspent = 0.0 if t.deterministic or budget_rule == "equal_time" else \
        max(0.0, 60 * t.budget_minutes - search_seconds)

    step("training the best configuration (trial %s) on all %d training images",
         best_trial.trial_id, len(data.y_train))
    strategy = parallel.get("distribution_strategy")
    with strategy.scope() if strategy else contextlib.nullcontext():
        model, final, history = train_final(hypermodel, best_trial.hyperparameters, data, t,
                                            runs, family, extra_seconds=unspent)

    step("saving the model and results")
    best = {"family": family, "trial_id": best_trial.trial_id,
            "search_score": best_trial.score,
            "hyperparameters": {k: _plain(v) for k, v in
                                hypermodel.config(best_trial.hyperparameters).items()},
            "final": final, "precision": precision, "budget_rule": budget_rule,
            "search_seconds": round(search_seconds, 1),
            "mlflow_parent_run": runs.settled_parent_id(),
            **({"selection": selection} if selection else {})}
    save_outputs(model, best, history, folders, runs)
    runs.finish("FINISHED")
    return best


def search_fidelity(data: SearchData, augmentation, cost_basis: str) -> str:
    """What a trial's score holds for besides its configuration and rung: the training images
    (digest), how many of them the search trains on, the augmentation, and how a trial's share
    of them was costed (measured or FLOPs: the same configuration gets other budgets). A
    retune's subset is drawn with its own seed; at the same size and validation split its
    scores differ from an earlier night's by noise, not by design."""
    digest = hashlib.sha256(json.dumps(augmentation.model_dump(), sort_keys=True)
                            .encode()).hexdigest()[:8]
    return (f"{data.data_hash}-{len(data.search_idx)}images-augmentation{digest}"
            f"-{cost_basis}cost")


def load_search_data(t: TuneParams, family: str, space_file: Path,
                     data_dir: Path) -> SearchData:
    from pipeline.models.whitening import patch_covariance
    from pipeline.search.hypermodel import load_family_space

    space = load_family_space(space_file, family)
    x_train, y_train = (np.asarray(a) for a in store.load_split(data_dir, "train"))
    x_val, y_val = (np.asarray(a) for a in store.load_split(data_dir, "val"))
    subset = None if t.profile == "gpu" else t.search_train_per_class
    meta = store.load_meta(data_dir)
    # a whitening stem (a CNN option) is computed from the training images' patches
    meta["patch_covariance"] = patch_covariance(x_train, meta)
    return SearchData(meta, x_train, y_train, x_val, y_val,
                      per_class_subset(y_train, subset, t.seed), space)


def configure_devices(t: TuneParams, family: str, data: SearchData, augmentation,
                      policy: str | None = None) -> tuple[str, dict]:
    """The global seed, the precision policy (``policy``, else tune.precision: named or
    measured, pipeline/precision.py) and data parallelism (the tuner's keyword arguments);
    returns the precision policy's name too."""
    import keras

    from pipeline import devices
    from pipeline import precision as precisions

    keras.utils.set_random_seed(t.seed)
    if t.deterministic:
        _enable_op_determinism()
    if policy is None:
        policy, _ = precisions.resolve(t.precision, t.profile, t.deterministic,
                                       *_calibration_inputs(family, data, augmentation))
    # mixed_float16 gets a loss scale: Keras adds it when compiling under that policy
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(t.seed)  # the calibration's models drew from the seed
    return keras.mixed_precision.global_policy().name, devices.data_parallel(t.data_parallel)


def _calibration_inputs(family: str, data: SearchData, augmentation):
    """What a precision calibration times: the family's default configuration (the space's
    defaults) on one batch of training images."""
    import keras_tuner as kt

    from pipeline.search.hypermodel import FamilyHyperModel

    hypermodel = FamilyHyperModel(family, data.space, data.meta, augmentation,
                                  n_train=len(data.y_train))
    # at most 128 images a step: the ratio is what decides, and a slow policy's steps are long
    batch = min(hypermodel.config(kt.HyperParameters())["batch_size"], 128)
    return (lambda: hypermodel.build(kt.HyperParameters()), data.x_train[:batch],
            data.y_train[:batch])


def _enable_op_determinism() -> None:
    """Same inputs, same results, at some speed: TensorFlow's deterministic kernels. JAX on CPU
    is deterministic as it is (on GPU, set XLA_FLAGS=--xla_gpu_deterministic_ops=true before
    starting)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def open_search_run(runs: SearchRuns, search_key: str, family: str, t: TuneParams,
                    space_file: Path, data: SearchData, data_dir: Path, role, parallel: dict,
                    precision: str, run_tags: dict | None) -> None:
    """The parent run: tags, every tune setting as a param, a note, the datasets it reads."""
    import keras

    distributed_over_devices = bool(parallel) or keras.distribution.distribution() is not None
    tags = {names.FAMILY: family, "tuner": t.tuner, "space_file": str(space_file),
            "data_sha256": data.data_hash,
            names.DATASET: data.meta["dataset"], names.ROLE: names.ROLE_SEARCH,
            "distributed": role.kind, "keras_backend": keras.backend.backend(),
            "data_parallel": str(distributed_over_devices), **(run_tags or {})}
    note = (f"{family} search with {t.tuner}: at most {t.max_trials} trials of at most "
            f"{t.max_epochs} epochs in {t.budget_minutes:g} min, on {len(data.search_idx)} "
            f"training images, selected on {len(data.y_val)} validation images; then the best "
            f"configuration trained for {t.final_epochs} epochs or {t.final_budget_minutes:g} "
            "min (final_* metrics). Child runs: the trials.")
    params = {**{f"tune.{k}": v for k, v in t.model_dump().items()}, "family": family,
              "space": data.space.summary(), "train_images": len(data.search_idx),
              "val_images": len(data.y_val), "precision": precision}
    parent = runs.start(search_key, names.search_run(family), tags, params, note)
    outputs = data.meta["outputs"]
    for split, context in (("train", "training"), ("val", "validation")):
        runs.log_dataset(parent, f"{data.meta['dataset']}-{split}",
                         outputs[f"{split}_images.npy"]["sha256"][:16],
                         str((data_dir / f"{split}_images.npy").resolve()), context)


def build_search(t: TuneParams, family: str, data: SearchData, policy, tuning_dir: Path,
                 project: str, started: float, runs: SearchRuns, role, first_values,
                 parallel: dict, tried_before: set[str] | frozenset = frozenset(),
                 history: list[dict] = ()):
    """The family's hypermodel and a tuner over it (resumed if its project exists). Trials are
    budgeted in compute, never by the clock (FamilyHyperModel's ``equal_compute``: each
    configuration's speed timed once against the defaults', or its FLOPs in a deterministic
    search, where no timing may decide anything); the clock bounds the search as a whole,
    and a trial it cuts short does not compete. Of ``history`` (earlier searches' scored
    trials) only those at this search's fidelity reach the oracle: their scores are
    comparable with this search's at the same rung."""
    import keras

    from pipeline.search.hypermodel import FamilyHyperModel
    from pipeline.search.tuners import make_tuner

    clock = not t.deterministic  # deterministic: counts bound the search, never the clock
    # the dtype policy configure_devices set, kept for every build: KerasTuner's clear_session
    # before each trial would reset it to float32
    hypermodel = FamilyHyperModel(
        family, data.space, data.meta, policy, n_train=len(data.search_idx), seed=t.seed,
        equal_compute=True, precision=keras.mixed_precision.global_policy().name,
        cost_basis="flops" if t.deterministic else "measured")
    deadline = started + 60 * t.budget_minutes if clock else None
    fidelity = search_fidelity(data, policy, hypermodel.cost_basis)
    comparable = [h for h in history if h["fidelity"] == fidelity]
    if history:
        log.info("%s: %d of %d earlier scored trials were trained at this search's fidelity; "
                 "they join its ranking", family, len(comparable), len(history))
        runs.log_params(runs.parent_id, {"earlier_trials": len(comparable)})
    tuner = make_tuner(t, hypermodel, directory=tuning_dir, project_name=project,
                       deadline=deadline, runs=runs,
                       run_tags={names.FAMILY: family, names.TUNER_ID: role.tuner_id,
                                 names.DATASET: data.meta["dataset"],
                                 names.FIDELITY: fidelity},
                       tried_before=tried_before, history=comparable,
                       first_values=first_values, role=role,
                       serve_until=None if deadline is None else deadline + role.grace_s,
                       tuner_kwargs=parallel)
    return hypermodel, tuner


def search(tuner, t: TuneParams, data: SearchData, runs: SearchRuns, role, family: str,
           tensorboard: Path | None = None):
    """KerasTuner's search; its "too many failed trials" and a lost chief as one-line errors.
    ``tensorboard``: a folder for TensorBoard logs, one per trial (KerasTuner adds its HParams
    dashboard on the TensorFlow backend)."""
    import keras
    import keras_tuner as kt

    from pipeline import distributed
    from pipeline.training import early_stopping

    verbose = 1 if sys.stdout.isatty() else 2
    callbacks = [early_stopping(t.patience)]
    if tensorboard is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard)))
        log.info("TensorBoard logs of every trial: tensorboard --logdir %s", tensorboard)
    try:
        tuner.search(data.x_train[data.search_idx], data.y_train[data.search_idx],
                     validation_data=(data.x_val, data.y_val), epochs=t.max_epochs,
                     callbacks=callbacks, verbose=verbose)
    except RuntimeError as exc:
        if not _too_many_failures(exc, kt):
            raise
        if role.kind != "worker":
            runs.finish("FAILED")
        first_line = str(exc).strip().splitlines()[0]
        raise SearchFailed(f"{family} search stopped: {first_line} (see trials.csv and MLflow "
                           "for each trial's error)") from None
    except Exception as exc:
        if role.kind == "worker" and type(exc).__module__.startswith("grpc"):
            raise distributed.ChiefUnreachable(
                f"{role.tuner_id}: lost the chief at {role.address} "
                f"({type(exc).__name__}); the search goes on without this worker") from None
        raise


def _too_many_failures(exc: RuntimeError, kt) -> bool:
    """KerasTuner raises a plain RuntimeError when too many trials failed in a row; anything
    else that is a RuntimeError is a bug, and keeps its traceback."""
    return "consecutive failures" in str(exc) or isinstance(exc, kt.errors.FatalError)


def tabulate_trials(tuner, family: str, results_dir: Path, runs: SearchRuns, started: float):
    """trials.csv and trial_history.csv; the best completed trial (a one-line error when there
    is none, or when trials are still out on workers that stopped reporting)."""
    from pipeline import distributed
    from pipeline.search.tuners import SUMMARY_FILE

    rows, histories = _trial_rows(tuner, SUMMARY_FILE)
    _write_csv(results_dir / family / "trials.csv", rows)
    _write_csv(results_dir / family / "trial_history.csv", histories)
    if tuner.orphaned:
        runs.finish("KILLED")
        out = ", ".join(f"trial {trial} on {worker}" for worker, trial in
                        sorted(tuner.orphaned.items()))
        raise distributed.SearchIncomplete(
            f"{family} search: the chief's deadline passed with orphaned trials ({out}): their "
            "workers stopped reporting. Rerun the chief and those workers (same --worker-id) "
            "to finish them; completed trials are kept")
    completed = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    if not completed:
        runs.finish("FAILED")
        raise SearchFailed(f"{family} search: all {len(rows)} trials failed; first error: "
                           f"{rows[0]['error'] if rows else 'no trial ran'}")
    from pipeline.search.oracles import ranked_at_top_rung

    best_trial = ranked_at_top_rung(tuner.oracle.trials.values())[0]
    runs.link_best_trial(best_trial.trial_id)
    runs.log_metrics(runs.parent, {"best_val_accuracy": best_trial.score,
                                   "trials_completed": len(completed),
                                   "trials_failed": len(rows) - len(completed),
                                   # where the oracle drew its configurations (search/prior.py)
                                   **{f"draws_{kind}": n for kind, n in
                                      getattr(tuner.oracle, "draws", {}).items()},
                                   "search_seconds": time.monotonic() - started})
    log.info("%s search: %d trials (%d failed), best val_accuracy %.4f (trial %s)", family,
             len(rows), len(rows) - len(completed), best_trial.score, best_trial.trial_id)
    return best_trial


def confirm_pick(tuner, hypermodel, best_trial, data: SearchData, t: TuneParams,
                 runs: SearchRuns, trials_csv: Path):
    """Noise-aware selection (search/selection.py): when a challenger beat the first trial and
    ``tune.confirm_seeds`` asks for it, the ``confirm_top`` best challengers at the top rung
    and the first trial train again like a top-rung trial with the same seeds, and the rule
    decides. Returns the trial to train in full and the decision (None when nothing was
    confirmed); the paired scores go to trials.csv and the search's parent run."""
    from pipeline.search.oracles import ranked_at_top_rung
    from pipeline.search.selection import choose
    from pipeline.training import trial_seed

    trials = tuner.oracle.trials
    first = trials[min(trials)]
    if t.confirm_seeds < 2 or best_trial.trial_id == first.trial_id or \
            first.status != "COMPLETED":
        return best_trial, None
    challengers = [trial for trial in ranked_at_top_rung(trials.values())
                   if trial.trial_id != first.trial_id][:t.confirm_top]
    log.info("confirming trial %s against trial %s (the first) on %d paired seeds",
             ", ".join(c.trial_id for c in challengers), first.trial_id, t.confirm_seeds)
    seeds = [trial_seed(t.seed, f"paired-{i}") for i in range(t.confirm_seeds)]
    paired = {trial.trial_id: [score_like_a_trial(hypermodel, trial.hyperparameters, data, t,
                                                  seed, t.max_epochs) for seed in seeds]
              for trial in [first, *challengers]}
    decision = {**choose(first.trial_id, paired), "paired_scores": paired}
    log.info("selection: trial %s (challenger %s: mean paired gain %+.4f, margin %.4f)",
             decision["chosen"], decision["challenger"], decision["gain_mean"],
             decision["margin"])
    runs.log_metrics(runs.parent, {"paired_gain_mean": decision["gain_mean"],
                                   "paired_margin": decision["margin"]})
    runs.log_params(runs.parent, {"selection": decision["chosen"],
                                  "selection_rule": decision["rule"]})
    _add_paired_columns(trials_csv, paired)
    return trials[decision["chosen"]], decision


def score_like_a_trial(hypermodel, hp, data: SearchData, t: TuneParams, seed: int,
                       epochs: int) -> float:
    """A configuration trained as a search trial of ``epochs`` is (search subset, compute
    share, early stopping) with ``seed``, which fixes the initial draws, data order and
    augmentation draws alike for every configuration: its best validation accuracy."""
    import keras

    from pipeline.training import early_stopping

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    hypermodel.seed = seed
    model = hypermodel.build(hp)
    history = hypermodel.fit(hp, model, data.x_train[data.search_idx],
                             data.y_train[data.search_idx], epochs=epochs,
                             validation_data=(data.x_val, data.y_val), verbose=0,
                             callbacks=[early_stopping(t.patience)])
    scores = [v for v in history.history.get("val_accuracy", []) if math.isfinite(v)]
    return round(max(scores), 4) if scores else 0.0


def _add_paired_columns(path: Path, paired: dict[str, list[float]]) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        scores = paired.get(row["trial_id"])
        row["paired_scores"] = " ".join(f"{s:.4f}" for s in scores) if scores else ""
        row["paired_mean"] = round(sum(scores) / len(scores), 4) if scores else ""
    _write_csv(path, rows)


def train_final(hypermodel, best_hp, data: SearchData, t: TuneParams, runs: SearchRuns,
                family: str, extra_seconds: float = 0.0):
    """Train the best configuration afresh on the whole training split, selected on val, for
    ``final_epochs`` or ``final_budget_minutes`` of training (plus ``extra_seconds``, what the
    search left of its budget), whichever ends first (the budget rule both families share);
    its schedule ends exactly there.

    Logged on the search's parent run as final_* metrics, so its child runs are the trials.
    Returns the model, the final scores and its per-epoch curves.
    """
    import keras

    from pipeline.training import diverged, early_stopping

    keras.backend.clear_session()
    keras.utils.set_random_seed(t.seed)
    hypermodel.n_train, hypermodel.seed = len(data.y_train), t.seed
    hypermodel.equal_compute = False  # the final training's budget is its own
    model = hypermodel.build(best_hp)

    class _Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            runs.log_metrics(runs.parent,
                             {f"final_{k}": float(v) for k, v in (logs or {}).items()}, epoch)

    budget_minutes = t.final_budget_minutes + extra_seconds / 60
    from_search = f" ({t.final_budget_minutes:g} + {extra_seconds / 60:.1f} the search left)" \
        if extra_seconds >= 6 else ""
    log.info("final training of the best %s configuration: %d epochs%s", family,
             t.final_epochs, "" if t.deterministic else
             f" or {budget_minutes:.1f} min of training{from_search}, whichever ends first")
    started = time.monotonic()
    history = hypermodel.fit(best_hp, model, data.x_train, data.y_train,
                             validation_data=(data.x_val, data.y_val), epochs=t.final_epochs,
                             seconds=None if t.deterministic else 60 * budget_minutes,
                             verbose=1 if sys.stdout.isatty() else 2,
                             callbacks=[early_stopping(t.patience + 2),
                                        keras.callbacks.TerminateOnNaN(), _Log()])
    val_loss, val_accuracy = model.evaluate(data.x_val, data.y_val, batch_size=512, verbose=0)
    schedule = hypermodel.last_schedule.summary()
    final = {"val_accuracy": float(val_accuracy), "val_loss": float(val_loss),
             "epochs_run": len(history.history.get("loss", [])),
             "seconds": time.monotonic() - started,
             "stopped_by_budget": schedule["ended_by"] == "time",
             "ended_by": schedule["ended_by"], "steps": schedule["steps"],
             "trained_seconds": schedule["trained_seconds"],
             "epochs_wanted": t.final_epochs, "budget_minutes": budget_minutes,
             "minutes_from_search": round(extra_seconds / 60, 2),
             "trainable_params": int(sum(math.prod(w.shape) for w in model.trainable_weights))}
    if diverged(history) or not math.isfinite(final["val_loss"]):
        runs.finish("FAILED")
        raise SearchFailed(f"{family}: the final training of the best configuration diverged")
    runs.log_metrics(runs.parent, {f"final_{k}": v for k, v in final.items()
                                   if isinstance(v, (int, float))}, final["epochs_run"])
    log.info("final %s model: val_accuracy %.4f after %d epochs (%.0f s, ended by %s)", family,
             final["val_accuracy"], final["epochs_run"], final["seconds"], final["ended_by"])
    curves = history.history
    per_epoch = [{"epoch": i + 1, **{k: float(v[i]) for k, v in curves.items() if i < len(v)}}
                 for i in range(final["epochs_run"])]
    return model, final, per_epoch


def save_outputs(model, best: dict, history: list[dict], folders: TuneFolders,
                 runs: SearchRuns) -> None:
    """Each file appears whole or not at all; the same files go to the parent run."""
    family = best["family"]
    results = folders.results / family
    _write_csv(results / "history.csv", history)
    runs.log_params(runs.parent, {f"best.{k}": v for k, v in best["hyperparameters"].items()})
    model_path = folders.models / family / "best.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name(".best.tmp.keras")
    model.save(tmp)
    tmp.replace(model_path)
    best_path = results / "best_hparams.json"
    store.atomic_write_bytes(best_path, (json.dumps(best, indent=2) + "\n").encode())
    runs.log_artifact(runs.parent, model_path, "model")
    for name in ("trials.csv", "trial_history.csv", "history.csv", "best_hparams.json"):
        runs.log_artifact(runs.parent, results / name)


def _trial_rows(tuner, summary_file: str) -> tuple[list[dict], list[dict]]:
    """One row per trial (trials.csv) and one per trial and epoch (trial_history.csv)."""
    rows, histories = [], []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        summary_path = Path(tuner.get_trial_dir(trial_id)) / summary_file
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        row = {"trial_id": trial_id, "status": str(trial.status),
               "score": trial.score if trial.status == "COMPLETED" else None}
        row.update({k: summary.get(k) for k in TRIAL_COLUMNS if k not in row})
        row.update({f"hp.{k}": _plain(v) for k, v in trial.hyperparameters.values.items()})
        rows.append(row)
        histories += [{"trial_id": trial_id, "epoch": h["epoch"] + 1,
                       **{k: v for k, v in h.items() if k != "epoch"}}
                      for h in summary.get("history", [])]
    return rows, histories


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(TRIAL_COLUMNS) if path.name == "trials.csv" else []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    store.atomic_write_bytes(path, buffer.getvalue().encode())


def _search_key(family, space_file: Path, tune, data_hash: str, augmentation,
                run_tags: dict | None = None) -> str:
    """Same space, settings and data: same key, so a rerun resumes instead of starting over."""
    # the final training and the seed count are not the search's business (its trials are
    # budgeted in compute; the replicate stage trains the other seeds)
    settings = tune.model_dump(exclude={"budget_minutes", "max_trials", "per_family",
                                        "final_seeds", "final_epochs",
                                        "final_budget_minutes"})
    blob = json.dumps([family, Path(space_file).read_text(), settings, data_hash,
                       augmentation.model_dump(), run_tags or {}], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
