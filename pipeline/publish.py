"""The publish stage: what MLflow users browse after a pipeline run.

An evaluation run (tagged with both searches' parent run ids) holds the test metrics, the report
and its figures; each family's final model is logged on it and registered as
``<dataset>-<family>`` (for example ``cifar10-cnn``), see ``pipeline.registry``. The alias
``champion`` is set only when the registered model has none yet: promoting a later model is a
decision (the retune job's), not a side effect of rerunning the pipeline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline import registry
from pipeline.config import Params
from pipeline.data import store
from pipeline.evaluate import load_model
from pipeline.tracking import TRACKING_OFF, Tracker, TrackingUnavailable, resolve_tracking_uri

log = logging.getLogger(__name__)
FAMILIES = ("cnn", "fc")



def run_publish(params: Params, models_dir: Path, results_dir: Path, metrics_path: Path,
                report_dir: Path, out_path: Path) -> dict:
    uri = resolve_tracking_uri(params.tune.tracking_uri)
    if uri == TRACKING_OFF:
        log.info("tracking is off: nothing to publish")
        result = {"evaluation_run": None, "tracking_uri": uri, "models": {}}
        store.atomic_write_bytes(out_path, (json.dumps(result, indent=2) + "\n").encode())
        return result
    metrics = store.read_json(metrics_path)
    bests = {f: store.read_json(results_dir / f / "best_hparams.json") for f in FAMILIES}
    dataset = metrics.get("dataset", "cifar10")
    tracker = Tracker(uri, params.tune.experiment)
    if tracker.experiment_id is None:
        raise TrackingUnavailable(f"MLflow store {uri}: unreachable, nothing was published")

    tags = {"role": "evaluation", "dataset": dataset,
            **{f"{f}_search_run": bests[f].get("mlflow_parent_run") or "" for f in FAMILIES}}
    run = tracker.client.create_run(tracker.experiment_id, run_name="evaluation", tags=tags)
    run_id = run.info.run_id
    tracker.log_metrics(run_id, flat_metrics(metrics))
    tracker.log_artifact(run_id, metrics_path)
    if report_dir.is_dir():
        tracker.client.log_artifacts(run_id, str(report_dir), "report")

    registered = {}
    for family in FAMILIES:
        model = registry.inference_model(load_model(models_dir / family / "best.keras"))
        name = registry.registered_name(dataset, family)
        version = registry.register(
            tracker, model, name, run_id, f"{family}-model",
            # what the registered (single-view) model scores, comparable with retune's numbers
            {"test_accuracy": metrics[family].get("test_accuracy_single_view",
                                                  metrics[family]["test_accuracy"]),
             "registered_by": "publish",
             "hyperparameters": json.dumps(bests[family]["hyperparameters"])})
        registered[family] = {"name": name, "version": version,
                              "champion": registry.set_champion_if_none(tracker.client, name,
                                                                        version),
                              "model_uri": f"models:/{name}/{version}"}
    tracker.end_run(run_id, "FINISHED")
    result = {"evaluation_run": run_id, "tracking_uri": uri, "models": registered}
    store.atomic_write_bytes(out_path, (json.dumps(result, indent=2) + "\n").encode())
    for family, entry in registered.items():
        log.info("%s: registered %s version %s%s", family, entry["name"], entry["version"],
                 f" (alias {registry.CHAMPION})" if entry["champion"] else "")
    return result


def flat_metrics(metrics: dict) -> dict:
    """metrics.json as MLflow metric names: cnn_test_accuracy, comparison_mcnemar_p_value..."""
    flat = {}
    for section, values in metrics.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, list) and len(value) == 2:  # an interval
                flat[f"{section}_{key}_low"], flat[f"{section}_{key}_high"] = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{section}_{key}"] = value
    return flat

