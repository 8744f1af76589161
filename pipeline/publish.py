"""The publish stage: what MLflow users browse after a pipeline run.

An evaluation run (tagged with both searches' parent run ids) holds the test metrics, the report
and its figures; each family's final model is logged on it and registered as
``<dataset>-<family>`` (for example ``cifar10-cnn``), see ``pipeline.tracking.registry``. The
alias ``champion`` is set only when the registered model has none yet: promoting a later model
is a decision (the retune job's), not a side effect of rerunning the pipeline.

Publishing is all MLflow, so a store error stops it (one line, exit 1), with the evaluation run
marked FAILED when it got that far.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.config import Params
from pipeline.data import store as files
from pipeline.evaluate import load_model
from pipeline.families import FAMILIES
from pipeline.tracking import names, registry
from pipeline.tracking.store import TrackingStore, resolve_uri

log = logging.getLogger(__name__)


def run_publish(params: Params, models_dir: Path, results_dir: Path, metrics_path: Path,
                report_dir: Path, out_path: Path) -> dict:
    store = TrackingStore.from_params(params.tracking)
    if store is None:
        log.info("tracking is off: nothing to publish")
        return _write(out_path, {"evaluation_run": None,
                                 "tracking_uri": resolve_uri(params.tracking.uri),
                                 "models": {}})
    metrics = files.read_json(metrics_path)
    bests = {f: files.read_json(results_dir / f / "best_hparams.json") for f in FAMILIES}
    dataset = metrics.get("dataset", "cifar10")
    tags = {names.ROLE: names.ROLE_EVALUATION, "dataset": dataset,
            **{names.family_search_tag(f): bests[f].get("mlflow_parent_run") or ""
               for f in FAMILIES}}
    run_id = store.create_run(names.EVALUATION_RUN, tags)
    try:
        store.log_metrics(run_id, flat_metrics(metrics))
        store.log_artifact(run_id, metrics_path)
        if report_dir.is_dir():
            store.log_artifacts(run_id, report_dir, "report")
        registered = {family: _register(store, family, dataset, run_id, metrics[family],
                                        bests[family], models_dir)
                      for family in FAMILIES}
    except BaseException:
        store.end_run(run_id, "FAILED")
        raise
    store.end_run(run_id, "FINISHED")
    for family, entry in registered.items():
        log.info("%s: registered %s version %s%s", family, entry["name"], entry["version"],
                 f" (alias {names.CHAMPION})" if entry["champion"] else "")
    return _write(out_path, {"evaluation_run": run_id, "tracking_uri": store.uri,
                             "models": registered})


def _register(store: TrackingStore, family: str, dataset: str, run_id: str, scores: dict,
              best: dict, models_dir: Path) -> dict:
    model = registry.inference_model(load_model(models_dir / family / "best.keras"))
    name = FAMILIES[family].registered_model(dataset)
    version = registry.register(store, model, name, run_id, family, {
        # what the registered (single-view) model scores, comparable with retune's numbers
        names.VERSION_TEST_ACCURACY: scores.get("test_accuracy_single_view",
                                                scores["test_accuracy"]),
        names.VERSION_REGISTERED_BY: "publish",
        names.VERSION_HYPERPARAMETERS: json.dumps(best["hyperparameters"])})
    return {"name": name, "version": version,
            "champion": registry.set_champion_if_none(store, name, version),
            "model_uri": f"models:/{name}/{version}"}


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
