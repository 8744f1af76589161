"""The evaluate stage: each family's final model on the official test split, which neither the
search nor the final training ever saw, and a paired verdict CNN vs FC on the same images.

Outputs: ``metrics.json`` (DVC metrics: accuracy with a bootstrap 95% interval, with and
without flip test-time augmentation, loss, parameters, training time, inference throughput;
McNemar's exact p-value),
``results/evaluation/<family>_per_class.json`` (precision, recall, F1, confusion matrix) and
``results/evaluation/<family>_predictions.csv`` (actual, predicted: for ``dvc plots``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.data import store
from pipeline.errors import DataError
from pipeline.families import FAMILY_NAMES as FAMILIES
from pipeline.stats import bootstrap_accuracy_ci, mcnemar_exact

log = logging.getLogger(__name__)


def run_evaluate(params: Params, data_dir: Path, models_dir: Path, results_dir: Path,
                 metrics_path: Path) -> dict:
    e = params.evaluate
    meta = store.load_meta(data_dir)
    x_test, y_test = (np.asarray(a) for a in store.load_split(data_dir, "test"))
    names = meta["class_names"]
    out_dir = results_dir / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, correct = {}, {}
    for family in FAMILIES:
        model = load_model(models_dir / family / "best.keras")
        result, predicted = _evaluate_model(model, x_test, y_test, e.batch_size, e.flip_tta)
        correct[family] = predicted == y_test
        low, high = bootstrap_accuracy_ci(correct[family], e.bootstrap_resamples, e.seed)
        # two numbers, not a list: `dvc metrics show/diff` and `dvc exp show` show numbers only
        result["test_accuracy_ci95"] = {"low": round(low, 4), "high": round(high, 4)}
        result.update(_training_facts(results_dir / family / "best_hparams.json"))
        metrics[family] = result
        _write_per_class(out_dir / f"{family}_per_class.json", y_test, predicted, names)
        _write_predictions(out_dir / f"{family}_predictions.csv", y_test, predicted, names)
        log.info("%s: test accuracy %.4f (95%% CI %.4f-%.4f), %d parameters", family,
                 result["test_accuracy"], low, high, result["params"])
    verdict = mcnemar_exact(correct["cnn"], correct["fc"])
    metrics["dataset"] = meta["dataset"]
    metrics["comparison"] = {
        "accuracy_difference": round(metrics["cnn"]["test_accuracy"]
                                     - metrics["fc"]["test_accuracy"], 4),
        "mcnemar_p_value": verdict["p_value"],
        "only_cnn_correct": verdict["only_first_correct"],
        "only_fc_correct": verdict["only_second_correct"],
        "test_images": int(len(y_test)),
    }
    log.info("CNN - FC: %+.4f accuracy, exact McNemar p = %.3g",
             metrics["comparison"]["accuracy_difference"], verdict["p_value"])
    store.atomic_write_bytes(metrics_path, (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics


def load_model(path: Path):
    import keras

    import pipeline.augment  # noqa: F401  (registers RandomPadCrop for loading)
    import pipeline.training  # noqa: F401  (registers the loss for loading)

    if not path.is_file():
        raise DataError(f"{path}: not found; run the tune stages first (dvc repro)")
    return keras.models.load_model(path)


def _evaluate_model(model, x, y, batch_size: int, flip_tta: bool) -> tuple[dict, np.ndarray]:
    """Test metrics of one model. With ``flip_tta`` the verdict's prediction averages the class
    probabilities of each image and its mirror image (the same rule for every family); the
    single-view accuracy (what the registered model returns) is reported beside it."""
    from scipy.special import softmax

    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # warm-up (tracing)
    started = time.perf_counter()
    probabilities = softmax(model.predict(x, batch_size=batch_size, verbose=0), axis=1)
    seconds = time.perf_counter() - started
    single = np.argmax(probabilities, axis=1)
    if flip_tta:
        probabilities = (probabilities + softmax(model.predict(
            x[:, :, ::-1], batch_size=batch_size, verbose=0), axis=1)) / 2
    predicted = np.argmax(probabilities, axis=1)
    loss = -np.mean(np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-12, 1.0)))
    return {
        "test_accuracy": round(float(np.mean(predicted == y)), 4),
        "test_accuracy_single_view": round(float(np.mean(single == y)), 4),
        "flip_tta": flip_tta,
        "test_loss": round(float(loss), 4),
        "params": int(model.count_params()),
        "images_per_second": round(len(x) / seconds, 1),
    }, predicted


def _training_facts(best_hparams: Path) -> dict:
    try:
        final = json.loads(best_hparams.read_text()).get("final", {})
    except (OSError, json.JSONDecodeError):
        return {}
    return {"train_seconds": round(final.get("seconds", 0.0), 1),
            "train_epochs": final.get("epochs_run"),
            "train_ended_by": final.get("ended_by", "")}


def _write_per_class(path: Path, y, predicted, names: list[str]) -> None:
    from sklearn.metrics import classification_report, confusion_matrix

    labels = list(range(len(names)))
    report = classification_report(y, predicted, labels=labels, target_names=names,
                                   output_dict=True, zero_division=0)
    matrix = confusion_matrix(y, predicted, labels=labels).tolist()
    per_class = {name: {k: round(v, 4) for k, v in report[name].items()} for name in names}
    data = {"per_class": per_class, "confusion_matrix": matrix, "class_names": names}
    store.atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def _write_predictions(path: Path, y, predicted, names: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["actual", "predicted"])
    writer.writerows((names[a], names[p]) for a, p in zip(y, predicted, strict=True))
    store.atomic_write_bytes(path, buffer.getvalue().encode())
