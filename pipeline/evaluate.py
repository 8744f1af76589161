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

from pipeline.budget_rule import describe_augmentation, equal_time_model, footing, training_facts
from pipeline.config import Params
from pipeline.data import store
from pipeline.errors import DataError
from pipeline.families import FAMILY_NAMES as FAMILIES
from pipeline.seeds import first_seed, seed_models
from pipeline.stats import bootstrap_accuracy_ci, format_p, mcnemar_exact

log = logging.getLogger(__name__)
# clock readings: timings.json, so that metrics.json is the same for the same models
TIMED = ("train_seconds", "train_minutes", "images_per_second", "fc_time_share",
         "architecture_claim")


def run_evaluate(params: Params, data_dir: Path, models_dir: Path, results_dir: Path,
                 metrics_path: Path, timings_path: Path | None = None,
                 equal_time_dir: Path | None = None) -> dict:
    """Writes ``metrics_path`` (what the models score: the same for the same models) and
    ``timings_path`` (how fast this machine trained and ran them; default: timings.json beside
    the metrics). Where the equal_time stage trained an FC (``equal_time_dir``), it is tested
    too and compared with the CNN under that rule (``fc_equal_time``,
    ``comparison_equal_time``)."""
    e = params.evaluate
    meta = store.load_meta(data_dir)
    x_test, y_test = (np.asarray(a) for a in store.load_split(data_dir, "test"))
    names = meta["class_names"]
    out_dir = results_dir / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, timings, correct, seed_rows, bests = {}, {}, {}, [], {}
    for family in FAMILIES:
        model_path = require_model(models_dir / family / "best.keras")
        best = store.read_json(results_dir / family / "best_hparams.json", "the tune stage")
        bests[family] = best
        result, timings[family], predicted = _test_final_model(
            model_path, best, x_test, y_test, e)
        correct[family] = predicted == y_test
        rows = _seed_rows(family, result, models_dir, best["hyperparameters"], x_test, y_test, e)
        result["seeds"] = seed_summary([row["test_accuracy"] for row in rows])
        seed_rows += rows
        metrics[family] = result
        _write_per_class(out_dir / f"{family}_per_class.json", y_test, predicted, names)
        _write_predictions(out_dir / f"{family}_predictions.csv", y_test, predicted, names)
        log.info("%s: test accuracy %.4f (95%% CI %.4f-%.4f), %d parameters%s", family,
                 result["test_accuracy"], *result["test_accuracy_ci95"].values(),
                 result["params"], _describe_seeds(result))
    metrics["dataset"] = meta["dataset"]
    comparison, timings["comparison"] = _split_timed(_compare(metrics, correct, "fc", bests))
    metrics["comparison"] = {
        **comparison,
        **seed_comparison([r["test_accuracy"] for r in seed_rows if r["family"] == "cnn"],
                          [r["test_accuracy"] for r in seed_rows if r["family"] == "fc"]),
    }
    equal_time = equal_time_model(equal_time_dir) if equal_time_dir else None
    if equal_time:
        model_path, best_path = equal_time
        bests["fc_equal_time"] = store.read_json(best_path, "the equal_time stage")
        metrics["fc_equal_time"], timings["fc_equal_time"], predicted = _test_final_model(
            model_path, bests["fc_equal_time"], x_test, y_test, e)
        correct["fc_equal_time"] = predicted == y_test
        metrics["comparison_equal_time"], timings["comparison_equal_time"] = _split_timed(
            _compare(metrics, correct, "fc_equal_time", bests))
    _write_seed_table(out_dir / "seeds.csv", seed_rows)
    store.atomic_write_bytes(metrics_path, (json.dumps(metrics, indent=2) + "\n").encode())
    timings_path = timings_path or metrics_path.with_name(store.TIMINGS)
    store.atomic_write_bytes(timings_path, (json.dumps(timings, indent=2) + "\n").encode())
    return metrics


def _test_final_model(model_path: Path, best: dict, x_test, y_test, e):
    """One final model on the test split: its scores with a bootstrap interval and its
    training facts (for metrics.json), the clock's readings (timings.json), its predictions."""
    result, predicted = _evaluate_model(load_model(model_path), x_test, y_test, e)
    low, high = bootstrap_accuracy_ci(predicted == y_test, e.bootstrap_resamples, e.seed)
    # two numbers, not a list: `dvc metrics show/diff` and `dvc exp show` show numbers only
    result["test_accuracy_ci95"] = {"low": round(low, 4), "high": round(high, 4)}
    facts, timed = _split_timed({**_training_facts(best), **result})
    return facts, timed, predicted


def _split_timed(values: dict) -> tuple[dict, dict]:
    """What the models score and what they were trained with (metrics.json: the same for the
    same models), apart from what the clock measured (timings.json)."""
    timed = {k: v for k, v in values.items() if k in TIMED}
    return {k: v for k, v in values.items() if k not in TIMED}, timed


def _compare(metrics: dict, correct: dict, fc: str, bests: dict) -> dict:
    """The CNN against one FC model on the same test images, and how even their training was
    (pipeline/budget_rule.py)."""
    verdict = mcnemar_exact(correct["cnn"], correct[fc])
    comparison = {
        "accuracy_difference": round(metrics["cnn"]["test_accuracy"]
                                     - metrics[fc]["test_accuracy"], 4),
        # 0.0 where it underflows a float: its exact logarithm beside it
        "mcnemar_p_value": verdict["p_value"],
        "mcnemar_log10_p_value": round(verdict["log10_p_value"], 3),
        "only_cnn_correct": verdict["only_first_correct"],
        "only_fc_correct": verdict["only_second_correct"],
        "test_images": int(len(correct["cnn"])),
        **footing(training_facts(bests["cnn"]), training_facts(bests[fc])),
    }
    log.info("CNN - %s: %+.4f accuracy, exact McNemar %s (%s, FC at %.2fx the CNN's training "
             "time, %s augmentation)", fc, comparison["accuracy_difference"],
             format_p(verdict["p_value"], verdict["log10_p_value"]), comparison["budget_rule"],
             comparison["fc_time_share"],
             "the same" if comparison["same_augmentation"] else "different")
    return comparison


def _seed_rows(family: str, first: dict, models_dir: Path, hyperparameters: dict, x_test,
               y_test, e) -> list[dict]:
    """One row per training of the family's best configuration: the tune stage's model
    (already evaluated: ``first``), then each replicate's."""
    rows = [{"family": family, "seed": first_seed(models_dir, family),
             "test_accuracy": first["test_accuracy"],
             "test_accuracy_single_view": first["test_accuracy_single_view"]}]
    for seed, path in seed_models(models_dir, family, hyperparameters):
        result, _ = _evaluate_model(load_model(path), x_test, y_test, e)
        rows.append({"family": family, "seed": seed, "test_accuracy": result["test_accuracy"],
                     "test_accuracy_single_view": result["test_accuracy_single_view"]})
    return rows


def seed_summary(accuracies: list[float]) -> dict:
    """Mean and sample standard deviation of one family's test accuracy over its seeds (the
    spread needs two seeds at least)."""
    values = np.asarray(accuracies, dtype=np.float64)
    summary = {"count": len(values), "test_accuracy_mean": round(float(values.mean()), 4)}
    if len(values) > 1:
        summary.update(test_accuracy_std=round(float(values.std(ddof=1)), 4),
                       test_accuracy_min=round(float(values.min()), 4),
                       test_accuracy_max=round(float(values.max()), 4))
    return summary


def seed_comparison(cnn: list[float], fc: list[float]) -> dict:
    """The CNN - FC gap of the seed means, and Welch's t-test of it against the spread of
    training runs (two seeds per family at least; none otherwise)."""
    if len(cnn) < 2 or len(fc) < 2:
        return {}
    from scipy.stats import ttest_ind

    test = ttest_ind(cnn, fc, equal_var=False)
    p_value = float(test.pvalue) if np.isfinite(test.pvalue) else 1.0
    return {"seed_mean_difference": round(float(np.mean(cnn) - np.mean(fc)), 4),
            "seed_welch_p_value": p_value}


def _describe_seeds(result: dict) -> str:
    seeds = result["seeds"]
    if seeds["count"] < 2:
        return ""
    return (f"; over {seeds['count']} seeds {seeds['test_accuracy_mean']:.4f} "
            f"+- {seeds['test_accuracy_std']:.4f}")


def _write_seed_table(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["family", "seed", "test_accuracy",
                                                "test_accuracy_single_view"])
    writer.writeheader()
    writer.writerows(rows)
    store.atomic_write_bytes(path, buffer.getvalue().encode())


def load_model(path: Path):
    import keras

    import pipeline.augment  # noqa: F401  (registers RandomPadCrop for loading)
    import pipeline.training  # noqa: F401  (registers the loss for loading)

    return keras.models.load_model(require_model(path))


def require_model(path: Path) -> Path:
    """The model file, or the one-line error that says which stage makes it."""
    if not path.is_file():
        raise DataError(f"{path}: not found; run the tune stages first (dvc repro)")
    return path


def _evaluate_model(model, x, y, e) -> tuple[dict, np.ndarray]:
    """Test metrics of one model. With ``flip_tta`` (and ``translate_tta``) the verdict's
    prediction averages the class probabilities of each image's views (pipeline/tta.py; the
    same rule for every family); the single-view accuracy (what the registered model returns)
    is reported beside it."""
    from pipeline import tta

    batch_size = e.batch_size
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # warm-up (tracing)
    started = time.perf_counter()
    single_view = tta.probabilities(model, x, batch_size)
    seconds = time.perf_counter() - started
    single = np.argmax(single_view, axis=1)
    # the other views only: the image itself is already predicted
    others = tta.views(x, e.flip_tta, e.translate_tta)[1:]
    probabilities = np.mean([single_view] + [tta.probabilities(model, view, batch_size)
                                             for view in others], axis=0)
    predicted = np.argmax(probabilities, axis=1)
    loss = -np.mean(np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-12, 1.0)))
    return {
        "test_accuracy": round(float(np.mean(predicted == y)), 4),
        "test_accuracy_single_view": round(float(np.mean(single == y)), 4),
        "flip_tta": e.flip_tta,
        "translate_tta": e.translate_tta,
        "test_loss": round(float(loss), 4),
        "params": int(model.count_params()),
        "images_per_second": round(len(x) / seconds, 1),
    }, predicted


def _training_facts(best: dict) -> dict:
    """What best_hparams.json says of the final training (its rule, minutes, epochs, images
    seen, augmentation)."""
    facts = training_facts(best)
    return {**facts, "augmentation": describe_augmentation(facts["augmentation"]),
            "train_ended_by": best.get("final", {}).get("ended_by", "")}


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
