"""The MLflow Model Registry side: registered names, model versions, the champion alias.

A registered model is the inference graph of a trained model: the training-only augmentation
layers are dropped (they are the identity at inference) and a softmax turns logits into class
probabilities, so it loads with plain Keras, without this package. Each version carries the
tags named ``VERSION_*`` in ``names`` (test accuracy, hyperparameters, run, registered by,
the digest of the trained file). Models are MLflow 3 LoggedModels: the run's Models column and
the experiment's Logged models list them, their test metrics are linked to them and to the test
data, and a registered version points at ``models:/<model id>``, not at a path on one machine.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from pipeline.tracking import names
from pipeline.tracking.names import CHAMPION, PREVIOUS

EXAMPLE_IMAGES = 4


@dataclass
class Champion:
    name: str
    version: str
    hyperparameters: dict

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


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


def register(store, model, name: str, run_id: str, family: str, tags: dict,
             metrics: dict | None = None, dataset: tuple[str, str] | None = None) -> str:
    """Log the model as a LoggedModel of ``run_id`` (signature, input example, pinned
    requirements), link ``metrics`` to it on ``dataset`` (name, digest), register it under
    ``name`` with ``tags``; returns the new version.

    (``mlflow.keras.log_model`` with an input example fails in MLflow 3.17: the Keras flavor
    writes the example before it creates the model folder; so the model is saved into a folder
    made beforehand and uploaded to a LoggedModel created through the client.)
    """
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model, infer_signature

    example = np.zeros((EXAMPLE_IMAGES, 32, 32, 3), dtype=np.uint8)
    example[:, :16] = 255  # not a blank image: half white, half black
    signature = infer_signature(example, model.predict(example, verbose=0))
    logged = store.call("create the logged model", store.client.create_logged_model,
                        store.experiment_id, name=names.model_artifact(family),
                        source_run_id=run_id, tags={names.FAMILY: family}, model_type="keras")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "model"
            folder.mkdir()
            mlflow.keras.save_model(
                model, str(folder), signature=signature, input_example=example,
                pip_requirements=_requirements(),
                mlflow_model=Model(artifact_path=logged.artifact_location,
                                   model_id=logged.model_id, run_id=run_id))
            store.call("upload the model", store.client.log_model_artifacts, logged.model_id,
                       str(folder))
        store.call("finalize the logged model", store.client.finalize_logged_model,
                   logged.model_id, LoggedModelStatus.READY)
    except BaseException:
        store.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    if metrics:
        store.log_metrics(run_id, metrics, model_id=logged.model_id, dataset=dataset)
    mlflow.set_tracking_uri(store.uri)
    version = str(store.once(f"register {name}", mlflow.register_model, logged.model_uri, name,
                             await_registration_for=60).version)
    for key, value in {**tags, names.VERSION_RUN: run_id}.items():
        store.call("tag the model version", store.client.set_model_version_tag, name, version,
                   key, str(value)[:5000])
    _describe(store, name, family, model)
    return version


def _describe(store, name: str, family: str, model) -> None:
    """A description on the registered model, written once: what goes in and comes out."""
    from pipeline.families import FAMILIES

    if store.registered_model(name).description:
        return
    classes = int(model.outputs[0].shape[-1])
    text = (f"{FAMILIES[family].label} trained by cifar-automl on {name.split('-')[0]}. Input: "
            "uint8 RGB images, shape (N, 32, 32, 3), pixel values 0-255 (normalised inside the "
            f"model). Output: probabilities of the {classes} classes, in the order of the "
            "prepared data's meta.json. The alias `champion` marks the version in use; "
            "`previous`, the one it replaced.")
    store.call("describe the registered model", store.client.update_registered_model, name,
               text)


def version_with_tag(store, name: str, key: str, value: str) -> str | None:
    """The newest version of ``name`` tagged ``key = value``; None if none is (or no such
    registered model exists yet)."""
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.store import TrackingError

    try:
        versions = store.model_versions(name)
    except TrackingError as exc:
        cause = exc.__cause__
        if isinstance(cause, MlflowException) and cause.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    found = [int(v.version) for v in versions if (v.tags or {}).get(key) == value]
    return str(max(found)) if found else None


def champion(store, name: str) -> Champion | None:
    """The version holding the champion alias; None only when the store says there is no such
    registered model or it has no champion alias yet. Any other failure (unreachable store,
    5xx, permission) raises ``TrackingError``: a caller must never take "could not ask" for
    "there is none" (fail closed)."""
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.store import TrackingError

    try:
        model = store.call("look up the registered model", store.client.get_registered_model,
                           name)
    except TrackingError as exc:
        cause = exc.__cause__
        if isinstance(cause, MlflowException) and cause.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (model.aliases or {}).get(CHAMPION)
    if version is None:
        return None
    found = store.call("read the champion version", store.client.get_model_version, name,
                       str(version))
    try:
        hyperparameters = json.loads(found.tags.get(names.VERSION_HYPERPARAMETERS, "{}"))
    except json.JSONDecodeError:
        hyperparameters = {}
    return Champion(name, str(found.version), hyperparameters)


def set_champion_if_none(store, name: str, version: str) -> bool:
    if champion(store, name) is not None:
        return False
    store.call("set the champion alias", store.client.set_registered_model_alias, name,
               CHAMPION, version)
    return True


def promote(store, name: str, version: str, old: Champion | None) -> None:
    """Move the champion alias from ``old`` (as the caller found it, under the lock) to
    ``version``; the old champion keeps its version and gets the alias ``previous``. The
    champion alias moves in one call, so a crash leaves either the old or the new champion,
    never none."""
    store.call("move the champion alias", store.client.set_registered_model_alias, name,
               CHAMPION, version)
    if old is not None:
        store.call("set the previous alias", store.client.set_registered_model_alias, name,
                   PREVIOUS, old.version)


def load_version(store, uri: str):
    """A registered model (``models:/name/version``) of the store, as a Keras model (softmax
    outputs)."""
    import mlflow

    mlflow.set_tracking_uri(store.uri)  # models:/ URIs resolve through the global store
    return mlflow.keras.load_model(uri)


def _requirements() -> list[str]:
    import keras

    packages = {"tensorflow": ["tensorflow"], "jax": ["jax", "jaxlib"],
                "torch": ["torch"]}.get(keras.backend.backend(), [])
    pins = [f"keras=={keras.__version__}"]
    for package in packages:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins
