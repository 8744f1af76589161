"""The publish stage: what MLflow users browse after a pipeline run.

An evaluation run (tagged with both searches' parent run ids) holds the test metrics, the report
and its figures; each family's final model is logged on it and registered as
``<dataset>-<family>`` (for example ``cifar10-cnn``) with a signature and an input example.
The alias ``champion`` is set only when the registered model has none yet: promoting a later
model is a decision (the retune job's), not a side effect of rerunning the pipeline.

The registered model is the inference graph: the training-only augmentation layers are dropped
(they are the identity at inference) and a softmax turns logits into class probabilities, so
it loads with plain Keras, without this package.
"""

from __future__ import annotations

import json
import logging
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.data import store
from pipeline.errors import UserError
from pipeline.evaluate import load_model
from pipeline.tracking import Tracker, resolve_tracking_uri

log = logging.getLogger(__name__)
FAMILIES = ("cnn", "fc")
CHAMPION = "champion"
EXAMPLE_IMAGES = 4


class TrackingUnavailable(UserError):
    """Publishing is all MLflow: without a store there is nothing this stage can do."""

    exit_code = 1


def registered_name(dataset: str, family: str) -> str:
    return f"{dataset}-{family}"


def run_publish(params: Params, models_dir: Path, results_dir: Path, metrics_path: Path,
                report_dir: Path, out_path: Path) -> dict:
    import mlflow

    metrics = store.read_json(metrics_path)
    bests = {f: store.read_json(results_dir / f / "best_hparams.json") for f in FAMILIES}
    dataset = metrics.get("dataset", "cifar10")
    uri = resolve_tracking_uri(params.tune.tracking_uri)
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

    mlflow.set_tracking_uri(uri)
    registered = {}
    for family in FAMILIES:
        model = inference_model(load_model(models_dir / family / "best.keras"))
        registered[family] = _register(model, registered_name(dataset, family), family,
                                       metrics[family], run_id, tracker.client)
    tracker.end_run(run_id, "FINISHED")
    result = {"evaluation_run": run_id, "tracking_uri": uri, "models": registered}
    store.atomic_write_bytes(out_path, (json.dumps(result, indent=2) + "\n").encode())
    for family, entry in registered.items():
        log.info("%s: registered %s version %s%s", family, entry["name"], entry["version"],
                 f" (alias {CHAMPION})" if entry["champion"] else "")
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


def inference_model(model):
    """The trained model without its training-only augmentation, with softmax outputs.

    Layers are reused (not copied), so the weights are the trained ones.
    """
    import keras

    def reuse(layer):
        if layer.name == "augmentation":
            # a Sequential, like the layer it replaces: same call signature (mask included)
            return keras.Sequential([keras.layers.Identity()], name="no_augmentation")
        return layer

    graph = keras.models.clone_model(model, clone_function=reuse)
    probabilities = keras.layers.Softmax(name="probabilities", dtype="float32")(graph.outputs[0])
    return keras.Model(graph.inputs, probabilities, name=f"{model.name}_inference")


def _register(model, name: str, family: str, test_metrics: dict, run_id: str,
              client) -> dict:
    """Save the MLflow model locally, log it on the evaluation run, register that artifact.

    (``mlflow.keras.log_model`` with an input example fails in MLflow 3.17: the Keras flavor
    writes the example before it creates the model folder; a folder made beforehand works.)
    """
    import mlflow
    from mlflow.models import infer_signature

    example = np.zeros((EXAMPLE_IMAGES, 32, 32, 3), dtype=np.uint8)
    example[:, :16] = 255  # not a blank image: half white, half black
    signature = infer_signature(example, model.predict(example, verbose=0))
    artifact = f"{family}-model"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / artifact
        folder.mkdir()
        mlflow.keras.save_model(model, str(folder), signature=signature, input_example=example,
                                pip_requirements=_requirements())
        client.log_artifacts(run_id, str(folder), artifact)
    version = mlflow.register_model(f"runs:/{run_id}/{artifact}", name,
                                    await_registration_for=60).version
    version = str(version)
    client.set_model_version_tag(name, version, "test_accuracy",
                                 str(test_metrics["test_accuracy"]))
    client.set_model_version_tag(name, version, "evaluation_run", run_id)
    champion = CHAMPION not in client.get_registered_model(name).aliases
    if champion:
        client.set_registered_model_alias(name, CHAMPION, version)
    return {"name": name, "version": version, "champion": champion,
            "model_uri": f"models:/{name}/{version}"}


def _requirements() -> list[str]:
    import keras

    backend = keras.backend.backend()
    packages = {"tensorflow": ["tensorflow"], "jax": ["jax", "jaxlib"],
                "torch": ["torch"]}.get(backend, [])
    pins = [f"keras=={keras.__version__}"]
    for package in packages:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins

