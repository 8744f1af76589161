"""The tune stage of one family: search, then retrain the best configuration and save it.

Outputs: tuning/<family>/ (KerasTuner's project, so an interrupted search resumes),
models/<family>/best.keras, results/<family>/best_hparams.json and trials.csv; in MLflow a
parent run for the search with a child run per trial; the final training's curves and scores
are final_* metrics of the parent run.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.data import store
from pipeline.data.split import per_class_subset
from pipeline.errors import UserError
from pipeline.spaces import load_space
from pipeline.tracking import Tracker, resolve_tracking_uri

log = logging.getLogger(__name__)
TRIAL_COLUMNS = ["trial_id", "status", "score", "epochs_run", "best_epoch", "seconds",
                 "seconds_per_epoch", "trainable_params", "stopped_by_budget", "ended_by",
                 "schedule_progress", "steps", "trained_seconds", "initial_weights", "error"]


class SearchFailed(UserError):
    """The search produced no usable trial (every trial failed, or too many in a row)."""

    exit_code = 1


def run_tune(params: Params, family: str, space_file: Path, data_dir: Path, tuning_dir: Path,
             models_dir: Path, results_dir: Path, first_values: list[dict] | None = None,
             run_tags: dict | None = None, role=None, wait_s: float = 300,
             grace_s: float = 120) -> dict:
    """``first_values``: configurations to try first (default: the space's defaults).
    ``run_tags``: extra MLflow tags of the search run, part of its identity (a retune's id).
    ``role``: a ``pipeline.distributed.Role``; a worker only runs trials the chief hands out
    (it waits up to ``wait_s`` for the chief), the chief serves them and does the rest, and
    gives up on workers ``grace_s`` after its budget."""
    import keras

    from pipeline import devices, distributed
    from pipeline.training import early_stopping
    from pipeline.tuning import (
        SUMMARY_FILE,
        FamilyHyperModel,
        known_hyperparameters,
        make_tuner,
    )

    t = params.tune.for_family(family)
    role = role or distributed.Role("standalone")
    distributed.configure(role, rpc_timeout_s=max(wait_s, 60))
    if role.kind == "worker":
        distributed.wait_for_chief(role, wait_s)
    space = load_space(space_file, family=family, known=known_hyperparameters(family))
    meta = store.load_meta(data_dir)
    x_train, y_train = (np.asarray(a) for a in store.load_split(data_dir, "train"))
    x_val, y_val = (np.asarray(a) for a in store.load_split(data_dir, "val"))
    subset = None if t.profile == "gpu" else t.search_train_per_class
    search_idx = per_class_subset(y_train, subset, t.seed)
    keras.utils.set_random_seed(t.seed)
    parallel = devices.data_parallel(t.data_parallel)
    if t.profile == "gpu":
        # float16 compute with a loss scale (Keras adds it when compiling under this policy)
        keras.mixed_precision.set_global_policy("mixed_float16")

    data_hash = meta["outputs"]["train_images.npy"]["sha256"][:12]
    search_key = _search_key(family, space_file, t, data_hash, params.augmentation, run_tags)
    project = f"{family}-{search_key}"
    tracker = Tracker(resolve_tracking_uri(t.tracking_uri), t.experiment)
    if role.kind == "worker":
        parent = tracker.wait_for_search(search_key, wait_s)
    else:
        parent = tracker.start_search(
            search_key, f"{family}-search",
            tags={"family": family, "tuner": t.tuner, "space_file": str(space_file),
                  "git_commit": _git_commit(), "data_sha256": data_hash,
                  "dataset": meta["dataset"], "role": "search", "distributed": role.kind,
                  "keras_backend": keras.backend.backend(),
                  "data_parallel": str(bool(parallel) or
                                       keras.distribution.distribution() is not None),
                  **(run_tags or {})},
            params={**{f"tune.{k}": v for k, v in t.model_dump().items()},
                    "family": family, "space": space.summary(),
                    "train_images": len(search_idx), "val_images": len(y_val)},
        )
    started = time.monotonic()
    hypermodel = FamilyHyperModel(family, space, meta, params.augmentation,
                                  n_train=len(search_idx), seed=t.seed,
                                  seconds_per_epoch=search_epoch_cap(t, len(search_idx),
                                                                     len(y_train)))
    tuner = make_tuner(
        t.tuner, hypermodel, directory=tuning_dir, project_name=project,
        max_trials=t.max_trials, max_epochs=t.max_epochs, hyperband_factor=t.hyperband_factor,
        seed=t.seed, max_consecutive_failures=t.max_consecutive_failures,
        deadline=started + 60 * t.budget_minutes, first_values=first_values, tracker=tracker,
        parent_run=parent, fixed_tags={"family": family, "tuner_id": role.tuner_id},
        role=role, serve_until=started + 60 * t.budget_minutes + grace_s,
        tuner_kwargs=parallel,
    )
    log.info("searching %s with %s: %d training images, %d validation, budget %.1f min",
             family, t.tuner, len(search_idx), len(y_val), t.budget_minutes)
    verbose = 1 if sys.stdout.isatty() else 2
    try:
        tuner.search(x_train[search_idx], y_train[search_idx], validation_data=(x_val, y_val),
                     epochs=t.max_epochs, callbacks=[early_stopping(t.patience)],
                     verbose=verbose)
    except RuntimeError as exc:  # KerasTuner: too many consecutive failed trials
        if role.kind != "worker":
            tracker.end_search(parent, "FAILED")
        first_line = str(exc).strip().splitlines()[0]
        raise SearchFailed(f"{family} search stopped: {first_line} (see trials.csv and MLflow "
                           "for each trial's error)") from None
    except Exception as exc:
        if role.kind == "worker" and type(exc).__module__.startswith("grpc"):
            raise distributed.ChiefUnreachable(
                f"{role.tuner_id}: lost the chief at {role.address} "
                f"({type(exc).__name__}); the search goes on without this worker") from None
        raise
    if role.kind == "worker":
        log.info("%s: the chief has no more trials; done", role.tuner_id)
        return {"family": family, "role": role.tuner_id, "mlflow_parent_run": parent}

    rows, histories = _trial_rows(tuner, SUMMARY_FILE)
    _write_csv(results_dir / family / "trials.csv", rows)
    _write_csv(results_dir / family / "trial_history.csv", histories)
    if tuner.orphaned:
        tracker.end_search(parent, "KILLED")
        out = ", ".join(f"trial {trial} on {worker}" for worker, trial in
                        sorted(tuner.orphaned.items()))
        raise distributed.SearchIncomplete(
            f"{family} search: the chief's deadline passed with orphaned trials ({out}): their "
            "workers stopped reporting. Rerun the chief and those workers (same --worker-id) "
            "to finish them; completed trials are kept")
    completed = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    if not completed:
        tracker.end_search(parent, "FAILED")
        raise SearchFailed(f"{family} search: all {len(rows)} trials failed; first error: "
                           f"{rows[0]['error'] if rows else 'no trial ran'}")
    best_trial = tuner.oracle.get_best_trials(1)[0]
    best_hp = best_trial.hyperparameters
    best_config = hypermodel.config(best_hp)
    tracker.log_metrics(parent, {"best_val_accuracy": best_trial.score,
                                 "trials_completed": len(completed),
                                 "trials_failed": len(rows) - len(completed),
                                 "search_seconds": time.monotonic() - started})
    log.info("%s search: %d trials (%d failed), best val_accuracy %.4f (trial %s)", family,
             len(rows), len(rows) - len(completed), best_trial.score, best_trial.trial_id)

    strategy = parallel.get("distribution_strategy")
    with strategy.scope() if strategy else contextlib.nullcontext():
        model, final, history = _retrain_best(hypermodel, best_hp, x_train, y_train, x_val,
                                              y_val, t, verbose, tracker, parent, family)
    _write_csv(results_dir / family / "history.csv", history)
    tracker.log_params(parent, {f"best.{k}": _plain(v) for k, v in best_config.items()})
    model_path = models_dir / family / "best.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name(".best.tmp.keras")
    model.save(tmp)
    tmp.replace(model_path)
    best = {"family": family, "trial_id": best_trial.trial_id, "search_score": best_trial.score,
            "hyperparameters": {k: _plain(v) for k, v in best_config.items()},
            "final": final, "mlflow_parent_run": parent}
    best_path = results_dir / family / "best_hparams.json"
    store.atomic_write_bytes(best_path, (json.dumps(best, indent=2) + "\n").encode())
    tracker.log_artifact(parent, model_path, "model")
    for name in ("trials.csv", "trial_history.csv", "history.csv"):
        tracker.log_artifact(parent, results_dir / family / name)
    tracker.log_artifact(parent, best_path)
    tracker.end_search(parent, "FINISHED")
    if tracker.failures:
        log.warning("MLflow: %d logging call(s) failed; see the warnings above", tracker.failures)
    return best


def search_epoch_cap(t, n_search: int, n_train: int) -> float:
    """Seconds of training one search epoch may take: the final training's rate (its wall-clock
    cap over its epochs) scaled to the search subset. A configuration too slow to train
    ``final_epochs`` epochs within ``final_budget_minutes`` is cut short in the search just as
    it would be in the final training, so the search ranks what the final budget can reach."""
    return 60 * t.final_budget_minutes / t.final_epochs * n_search / n_train


def _retrain_best(hypermodel, best_hp, x_train, y_train, x_val, y_val, t, verbose, tracker,
                  parent, family):
    """Train the best configuration afresh on the whole training split, selected on val, for
    ``final_epochs`` or ``final_budget_minutes`` of training, whichever ends first (the budget
    rule both families share); its schedule ends exactly there.

    Logged on the search's parent run as final_* metrics, so its child runs are the trials.
    """
    import keras

    from pipeline.training import NaNGuard, early_stopping

    keras.backend.clear_session()
    keras.utils.set_random_seed(t.seed)
    hypermodel.n_train, hypermodel.seed = len(y_train), t.seed
    model = hypermodel.build(best_hp)
    guard = NaNGuard()

    class _Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tracker.log_metrics(parent, {f"final_{k}": float(v) for k, v in (logs or {}).items()},
                                epoch)

    log.info("final training of the best %s configuration: %d epochs or %.1f min of training, "
             "whichever ends first", family, t.final_epochs, t.final_budget_minutes)
    started = time.monotonic()
    history = hypermodel.fit(best_hp, model, x_train, y_train, validation_data=(x_val, y_val),
                             epochs=t.final_epochs, seconds=60 * t.final_budget_minutes,
                             verbose=verbose,
                             callbacks=[early_stopping(t.patience + 2), guard, _Log()])
    val_loss, val_accuracy = model.evaluate(x_val, y_val, batch_size=512, verbose=0)
    schedule = hypermodel.last_schedule.summary()
    final = {"val_accuracy": float(val_accuracy), "val_loss": float(val_loss),
             "epochs_run": len(history.history.get("loss", [])),
             "seconds": time.monotonic() - started,
             "stopped_by_budget": schedule["ended_by"] == "time",
             "ended_by": schedule["ended_by"], "steps": schedule["steps"],
             "trained_seconds": schedule["trained_seconds"],
             "epochs_wanted": t.final_epochs, "budget_minutes": t.final_budget_minutes,
             "trainable_params": int(sum(math.prod(w.shape) for w in model.trainable_weights))}
    if guard.bad_batch is not None or not math.isfinite(final["val_loss"]):
        raise SearchFailed(f"{family}: the final training of the best configuration diverged")
    tracker.log_metrics(parent, {f"final_{k}": v for k, v in final.items()
                                 if isinstance(v, (int, float))}, final["epochs_run"])
    log.info("final %s model: val_accuracy %.4f after %d epochs (%.0f s, ended by %s)", family,
             final["val_accuracy"], final["epochs_run"], final["seconds"], final["ended_by"])
    curves = history.history
    per_epoch = [{"epoch": i + 1, **{k: float(v[i]) for k, v in curves.items() if i < len(v)}}
                 for i in range(final["epochs_run"])]
    return model, final, per_epoch


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
    # the final budget stays in: it sets every trial's time cap (search_epoch_cap)
    settings = tune.model_dump(exclude={"budget_minutes", "max_trials", "tracking_uri",
                                        "per_family"})
    blob = json.dumps([family, Path(space_file).read_text(), settings, data_hash,
                       augmentation.model_dump(), run_tags or {}], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
