"""The report stage on generated stage outputs (no training needed to test the writing)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.report import importance_ranking, run_report
from pipeline.trials import lessons

PNG = b"\x89PNG\r\n\x1a\n"
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _trials(family: str, n: int, rng) -> list[dict]:
    rows = []
    for i in range(n):
        optimizer = ["adam", "sgd", "nesterov"][i % 3]
        row = {"trial_id": f"{i:04d}", "status": "FAILED" if i == n - 1 else "COMPLETED",
               "score": "" if i == n - 1 else
               (0.6 if optimizer == "adam" else 0.3) + rng.normal(0, 0.01),
               "epochs_run": 2 + i % 2, "trainable_params": 1000 * (i + 1),
               "hp.optimizer": optimizer, "hp.learning_rate": 10 ** rng.uniform(-3, -1),
               "hp.schedule": ["cosine", "constant"][i % 2], "hp.batch_norm": bool(i % 2),
               "hp.dropout": round(0.1 * (i % 4), 1) if i != 3 else 0.1 * 3,
               "hp.aug_flip": bool(i % 2), "hp.aug_crop": 4 * (i % 2), "hp.tuner/epochs": 2}
        if family == "cnn":
            row.update({"hp.stages": 1 + i % 3, "hp.convs_per_stage": 2,
                        "hp.block_stages": ["ends", "all"][(i // 3) % 2]})
        else:
            row.update({"hp.layers": 1 + i % 3})
        rows.append(row)
    return rows


EVEN = {"budget_rule": "equal_time", "fc_time_share": 1.0, "same_augmentation": True,
        "architecture_claim": True}
UNEVEN = {"budget_rule": "equal_epochs", "fc_time_share": 0.24, "same_augmentation": False,
          "architecture_claim": False}


def write_results(root: Path, cnn_accuracy: float, fc_accuracy: float, p_value: float,
                  trials: int = 8, footing: dict | None = None,
                  equal_time: float | None = None) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    results = root / "results"
    for family in ("cnn", "fc"):
        rows = _trials(family, trials, rng)
        _write_csv(results / family / "trials.csv", rows)
        _write_csv(results / family / "trial_history.csv",
                   [{"trial_id": r["trial_id"], "epoch": e, "val_accuracy": 0.1 * e}
                    for r in rows for e in (1, 2)])
        _write_csv(results / family / "history.csv",
                   [{"epoch": e, "accuracy": 0.2 * e, "val_accuracy": 0.15 * e} for e in (1, 2, 3)])
        # the CNN's search left 1.83 of its minutes to the final training's 14
        cap, unspent = {"cnn": (15.8333, 1.8333), "fc": (4, 0.0)}[family]
        best = {"search_score": 0.6, "hyperparameters": {"optimizer": "adam", "dropout": 0.1},
                "final": {"val_accuracy": 0.5, "epochs_run": 3, "seconds": 90.0,
                          "trainable_params": 5000, "epochs_wanted": 12, "budget_minutes": cap,
                          "minutes_from_search": unspent,
                          "ended_by": {"cnn": "time", "fc": "steps"}[family]}}
        (results / family / "best_hparams.json").write_text(json.dumps(best))
        matrix = np.diag([80] * 10) + 2
        per_class = {"class_names": NAMES, "confusion_matrix": matrix.tolist(),
                     "per_class": {n: {"f1-score": 0.8} for n in NAMES}}
        (results / "evaluation").mkdir(exist_ok=True)
        (results / "evaluation" / f"{family}_per_class.json").write_text(json.dumps(per_class))
    metrics = {"dataset": "cifar10", "comparison": {
        "accuracy_difference": round(cnn_accuracy - fc_accuracy, 4), "mcnemar_p_value": p_value,
        "only_cnn_correct": 300, "only_fc_correct": 100, "test_images": 1000,
        **(footing or EVEN)}}
    models = [("cnn", cnn_accuracy), ("fc", fc_accuracy)]
    if equal_time is not None:
        models.append(("fc_equal_time", equal_time))
        metrics["comparison_equal_time"] = {**metrics["comparison"], **EVEN,
                                            "accuracy_difference": cnn_accuracy - equal_time}
    for family, accuracy in models:
        metrics[family] = {"test_accuracy": accuracy,
                           "test_accuracy_ci95": {"low": accuracy - 0.02,
                                                  "high": accuracy + 0.02},
                           "test_loss": 1.0, "params": 5000, "images_per_second": 1000.0,
                           "augmentation": "flip" if family == "fc" else "flip, pad-crop 4 px",
                           "train_minutes": 14.0 if family != "fc" else 3.4,
                           "images_seen": 1_800_000 if family != "fc" else 540_000}
    (root / "metrics.json").write_text(json.dumps(metrics))
    return results, root / "metrics.json"


def test_report_shows_the_verdict_and_every_figure_exists(tmp_path):
    results, metrics = write_results(tmp_path, 0.8312, 0.5, 1e-40)
    report = run_report(results, metrics, tmp_path / "reports").read_text()
    assert "**83.12%** (81.12-85.12)" in report
    assert "33.12 points ahead of" in report and "p = 1e-40" in report
    assert "A clear win" in report and "inductive bias" in report
    assert "7 of 8 trials completed" in report  # the failed trial counted, not plotted
    assert ("(CNN: 12 epochs or 15.8 min (1.8 of them left unspent by its search); "
            "fully connected: 12 epochs or 4 min)") in report
    assert "| 3 epochs, 14.0 min (ended by its time cap) | 3 epochs, 3.4 min (all its epochs) |" \
        in report
    figures = [line[line.index("(") + 1:-1] for line in report.splitlines()
               if line.startswith("![")]
    assert len(figures) == 7  # accuracy, curves, effects x2, importance, size, confusion
    for figure in figures:
        assert (tmp_path / "reports" / figure).read_bytes()[:8] == PNG, figure
    # lessons table: the synthetic scores depend on the optimizer only, and it shows
    assert re.search(r"\| optimizer \| adam 59\.\d% \(n=3\), \w+ 30\.\d%", report)


def test_the_verdict_credits_the_architecture_only_at_equal_time_and_augmentation(tmp_path):
    """Equal epochs with a quarter of the CNN's time and other augmentation: the gap is not
    put down to inductive bias, and the sentence says what was compared; the equal-time
    column and its verdict appear when the equal_time stage ran."""
    results, metrics = write_results(tmp_path, 0.8312, 0.5, 1e-40, footing=UNEVEN)
    report = run_report(results, metrics, tmp_path / "reports").read_text()
    assert "inductive bias" not in report and "clear win" not in report.lower()
    assert "**Equal epochs.** The CNN is **33.12 points ahead of**" in report
    assert "0.24x the CNN's training time (4.2 times less)" in report
    assert "other augmentation (flip against the CNN's flip, pad-crop 4 px)" in report
    assert "| augmentation | flip, pad-crop 4 px | flip |" in report
    assert "| images seen in training | 1,800,000 | 540,000 |" in report
    assert "(the equal-time rule, `equal_time.run: true`, separates them)" in report

    results, metrics = write_results(tmp_path, 0.8312, 0.5, 1e-40, footing=UNEVEN,
                                     equal_time=0.62)
    report = run_report(results, metrics, tmp_path / "reports").read_text()
    assert "| | CNN | Fully connected | Fully connected, equal time |" in report
    assert "**Equal time.** The CNN is **21.12 points ahead of**" in report
    assert report.count("inductive bias") == 1  # in the equal-time verdict only
    assert "(the equal-time verdict below separates them)" in report


def test_report_does_not_claim_a_win_it_did_not_measure(tmp_path):
    results, metrics = write_results(tmp_path, 0.50, 0.52, 0.4, trials=3)
    report = run_report(results, metrics, tmp_path / "reports").read_text()
    assert "2.00 points behind" in report
    assert "not significant" in report and "clear win" not in report
    assert "Too few completed trials" in report  # 2 completed: no importance ranking


def test_lessons_map_hyperparameters_onto_the_course(tmp_path):
    rows = pd.DataFrame(_trials("cnn", 6, np.random.default_rng(1)))
    table = lessons(rows, "cnn")
    # stem + one conv per stage + a block conv in every stage ("all") or at most two ("ends")
    blocks = [s if b == "all" else min(s, 2) for s, b in zip(rows["hp.stages"],
                                                            rows["hp.block_stages"],
                                                            strict=True)]
    assert list(table["depth"]) == [1 + s + b for s, b in zip(rows["hp.stages"], blocks,
                                                                       strict=True)]
    assert list(table["depth"]) == [3, 5, 6, 3, 5, 7]
    assert list(table["augmentation"][:2]) == ["none", "flip+crop"]
    assert table["dropout"][3] == 0.3  # 0.1 * 3 rounded, one group with 0.3


def test_importance_ranks_the_hyperparameter_that_drives_the_score():
    rows = pd.DataFrame(_trials("fc", 30, np.random.default_rng(2)))
    done = rows[rows["status"] == "COMPLETED"].astype({"score": float})
    ranking = importance_ranking(done)
    assert ranking.index[0] == "optimizer"
    assert ranking.sum() == pytest.approx(1.0)
    assert importance_ranking(done.head(3)) is None


def test_report_names_a_missing_input(tmp_path):
    results, metrics = write_results(tmp_path, 0.8, 0.5, 0.001)
    (results / "fc" / "history.csv").unlink()
    done = subprocess.run([sys.executable, "-m", "pipeline", "report", "--results",
                           str(results), "--metrics", str(metrics), "--out",
                           str(tmp_path / "reports")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "fc/history.csv: not found; run the tune stages first" in done.stderr
    assert not (tmp_path / "reports" / "comparison.md").exists()
