"""The publish stage: what MLflow users browse after a pipeline run.

An evaluation run (tagged with both searches' parent run ids) holds the test metrics, the report
and its figures; each family's final model is logged on it and registered as
``<dataset>-<family>`` (for example ``cifar10-cnn``), see ``pipeline.tracking.registry``. The
alias ``champion`` is set only when the registered model has none yet: promoting a later model
is a decision (the retune job's), not a side effect of rerunning the pipeline. A model already
registered (the same weights, as after a ``dvc exp run`` that changed only an evaluate or
report setting, or a reproducible-mode retraining) is not registered again: its version is
reported as it is.

Publishing is all MLflow, so a store error stops it (one line, exit 1), with the evaluation run
marked FAILED when it got that far. It holds the retune job's lock while it registers (waiting
up to 30 min for a running retune), so the "no champion yet" check and the alias it then sets
cannot interleave with a retune's promotion.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from pipeline.config import Params
from pipeline.data import store as files
from pipeline.evaluate import load_model
from pipeline.families import FAMILIES
from pipeline.lock import RunLock
from pipeline.tracking import names, registry
from pipeline.tracking.store import TrackingStore, resolve_uri
from pipeline.workspace import home

log = logging.getLogger(__name__)
LOCK_WAIT_S = 30 * 60  # a retune holding the lock: wait for it rather than fail the pipeline


def run_publish(params: Params, models_dir: Path, results_dir: Path, metrics_path: Path,
                report_dir: Path, out_path: Path, data_dir: Path | None = None) -> dict:
    store = TrackingStore.from_params(params.tracking)
    if store is None:
        log.info("tracking is off: nothing to publish")
        return _write(out_path, {"evaluation_run": None,
                                 "tracking_uri": resolve_uri(params.tracking.uri),
                                 "models": {}})
    # the retune job's lock: the first champion is set by one writer of the aliases at a time
    with RunLock(home(params.retune.lock_file), "publish", wait_s=LOCK_WAIT_S):
        registered, run_id = _publish(store, models_dir, results_dir, metrics_path, report_dir,
                                      data_dir)
    for family, entry in registered.items():
        log.info("%s: %s %s version %s%s", family,
                 "registered" if entry["new"] else "unchanged model, already", entry["name"],
                 entry["version"], f" (alias {names.CHAMPION})" if entry["champion"] else "")
    return _write(out_path, {"evaluation_run": run_id, "tracking_uri": store.uri,
                             "models": registered})


def _publish(store: TrackingStore, models_dir: Path, results_dir: Path, metrics_path: Path,
             report_dir: Path, data_dir: Path | None) -> tuple[dict, str]:
    metrics = files.read_json(metrics_path)
    test_data = _test_data(data_dir, metrics.get("dataset", "cifar10"))
    bests = {f: files.read_json(results_dir / f / "best_hparams.json") for f in FAMILIES}
    dataset = metrics.get("dataset", "cifar10")
    tags = {names.ROLE: names.ROLE_EVALUATION, names.DATASET: dataset,
            **{names.family_search_tag(f): bests[f].get("mlflow_parent_run") or ""
               for f in FAMILIES}}
    run_id = store.create_run(names.EVALUATION_RUN, tags)
    try:
        timings_path = metrics_path.with_name(files.TIMINGS)
        timings = files.read_json(timings_path) if timings_path.is_file() else {}
        store.log_metrics(run_id, {**flat_metrics(metrics), **flat_metrics(timings)})
        store.log_artifact(run_id, metrics_path)
        if timings:
            store.log_artifact(run_id, timings_path)
        _log_seeds(store, run_id, results_dir / "evaluation" / "seeds.csv")
        if report_dir.is_dir():
            store.log_artifacts(run_id, report_dir, "report")
        registered = {family: _register(store, family, dataset, run_id, metrics[family],
                                        bests[family], models_dir, test_data)
                      for family in FAMILIES}
    except BaseException:
        store.end_run(run_id, "FAILED")
        raise
    store.end_run(run_id, "FINISHED")
    return registered, run_id


def _register(store: TrackingStore, family: str, dataset: str, run_id: str, scores: dict,
              best: dict, models_dir: Path, test_data: tuple[str, str] | None) -> dict:
    from pipeline.training import weights_digest

    trained = load_model(models_dir / family / "best.keras")
    digest = weights_digest(trained)  # the file's bytes change with every save; weights do not
    name = FAMILIES[family].registered_model(dataset)
    version = registry.version_with_tag(store, name, names.VERSION_WEIGHTS_DIGEST, digest)
    new = version is None
    if new:
        # what the registered (single-view) model scores, comparable with retune's numbers
        single_view = scores.get("test_accuracy_single_view", scores["test_accuracy"])
        model = registry.inference_model(trained)
        version = registry.register(store, model, name, run_id, family, {
            names.VERSION_TEST_ACCURACY: single_view,
            names.VERSION_REGISTERED_BY: "publish",
            names.VERSION_WEIGHTS_DIGEST: digest,
            names.VERSION_HYPERPARAMETERS: json.dumps(best["hyperparameters"])},
            metrics={"test_accuracy": single_view}, dataset=test_data)
    return {"name": name, "version": version, "new": new,
            "champion": registry.set_champion_if_none(store, name, version),
            "model_uri": f"models:/{name}/{version}"}


def _test_data(data_dir: Path | None, dataset: str) -> tuple[str, str] | None:
    """The test split as MLflow names a dataset: (name, digest of its images)."""
    if data_dir is None or not (data_dir / "meta.json").is_file():
        return None
    digest = files.load_meta(data_dir)["outputs"]["test_images.npy"]["sha256"][:16]
    return f"{dataset}-test", digest


def _log_seeds(store: TrackingStore, run_id: str, table: Path) -> None:
    """Each training's test accuracy as <family>_seed_test_accuracy, one step per seed (the
    UI charts them), and the table itself."""
    if not table.is_file():
        return
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for family in FAMILIES:
        for step, row in enumerate(r for r in rows if r["family"] == family):
            store.log_metrics(run_id, {f"{family}_seed_test_accuracy":
                                       float(row["test_accuracy"])}, step)
    store.log_artifact(run_id, table)


def _write(out_path: Path, result: dict) -> dict:
    files.atomic_write_bytes(out_path, (json.dumps(result, indent=2) + "\n").encode())
    return result


def flat_metrics(metrics: dict) -> dict:
    """metrics.json as MLflow metric names: cnn_test_accuracy, comparison_mcnemar_p_value..."""
    flat = {}
    for section, values in metrics.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            parts = value.items() if isinstance(value, dict) else [("", value)]
            for part, number in parts:  # an interval: its low and high
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    flat[f"{section}_{key}" + (f"_{part}" if part else "")] = number
    return flat
