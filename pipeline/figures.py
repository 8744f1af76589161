"""The report's figures, one function per PNG. Each takes plain tables and writes one file.

Every figure has a title, labelled axes with units, and says which data it shows (search trials,
or the final training on the whole training split), so it reads on its own.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.stats import format_p  # noqa: E402
from pipeline.trials import FAMILY_LABELS  # noqa: E402

COLORS = {"cnn": "tab:blue", "fc": "tab:orange", "fc_equal_time": "tab:orange"}
DPI = 110


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def test_accuracy(metrics: dict, path: Path) -> Path:
    """Bar per family (and the equal-time FC where it was trained): test accuracy with its
    bootstrap 95% interval."""
    labels = {**FAMILY_LABELS, "fc_equal_time": f"{FAMILY_LABELS['fc']}\n(equal time)"}
    families = [f for f in labels if f in metrics]
    fig, ax = plt.subplots(figsize=(1.7 * len(families) + 1.6, 3.6))
    for i, family in enumerate(families):
        acc = metrics[family]["test_accuracy"]
        low, high = (metrics[family]["test_accuracy_ci95"][k] for k in ("low", "high"))
        ax.bar(i, 100 * acc, color=COLORS[family], width=0.6,
               hatch="//" if family == "fc_equal_time" else None)
        ax.errorbar(i, 100 * acc, yerr=[[100 * (acc - low)], [100 * (high - acc)]],
                    color="black", capsize=8)
        ax.annotate(f"{100 * acc:.1f}%", (i, 100 * high), textcoords="offset points",
                    xytext=(0, 4), ha="center")
    ax.set_xticks(range(len(families)), [labels[f] for f in families])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    tests = [f"{label}{format_p(c['mcnemar_p_value'], c.get('mcnemar_log10_p_value'))}"
             for key, label in (("comparison", ""), ("comparison_equal_time", "equal time: "))
             if (c := metrics.get(key, {})).get("mcnemar_p_value") is not None]
    if len(tests) == 2:
        tests[0] = f"equal epochs: {tests[0]}"
    subtitle = f"\nexact McNemar test, CNN vs FC:{chr(10) if len(tests) > 1 else ' '}" \
        f"{'; '.join(tests)}" if tests else ""
    ax.set_title(f"Test accuracy with 95% bootstrap interval{subtitle}")
    return _save(fig, path)


def seed_spread(seeds: pd.DataFrame, path: Path) -> Path:
    """Per family, one panel on its own scale: each seed's test accuracy (dots) and their mean
    (line), so a spread of tenths of a point is visible beside a gap of many points."""
    families = [f for f in FAMILY_LABELS if f in set(seeds["family"])]
    fig, axes = plt.subplots(1, len(families), figsize=(3.6 * len(families), 3.4),
                             squeeze=False, layout="constrained")
    for ax, family in zip(axes[0], families, strict=True):
        rows = seeds[seeds["family"] == family]
        values = 100 * rows["test_accuracy"].to_numpy(dtype=float)
        ax.scatter(np.zeros(len(values)), values, color=COLORS[family], zorder=3)
        for seed, value in zip(rows["seed"], values, strict=True):
            ax.annotate(f"seed {seed}", (0, value), textcoords="offset points", xytext=(8, -3),
                        fontsize=8)
        ax.axhline(values.mean(), color=COLORS[family], linestyle="--", linewidth=1)
        spread = f" +- {values.std(ddof=1):.2f}" if len(values) > 1 else ""
        ax.set_title(f"{FAMILY_LABELS[family]}\nmean {values.mean():.2f}%{spread}")
        ax.set_xticks([])
        ax.set_xlim(-0.5, 1.5)
        pad = max(0.2, (values.max() - values.min()) * 0.3)
        ax.set_ylim(values.min() - pad, values.max() + pad)
        ax.set_ylabel("test accuracy (%)")
    fig.suptitle("Test accuracy of each training of the best configuration (seeds)")
    return _save(fig, path)


def learning_curves(final: dict[str, pd.DataFrame], search: dict[str, pd.DataFrame],
                    best_trials: dict[str, list[str]], path: Path) -> Path:
    """Per family: validation accuracy of the best search trials and of the final training."""
    families = list(final)
    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 4), squeeze=False,
                             layout="constrained")
    for ax, family in zip(axes[0], families, strict=True):
        history = search.get(family)
        for rank, trial_id in enumerate(best_trials.get(family, [])):
            if history is None:
                break
            rows = history[history["trial_id"] == trial_id]
            ax.plot(rows["epoch"], 100 * rows["val_accuracy"], "--", marker=".", alpha=0.8,
                    label=f"search trial {trial_id} (#{rank + 1}), val")
        curve = final[family]
        ax.plot(curve["epoch"], 100 * curve["val_accuracy"], color="black", marker="o",
                label="final training, val")
        if "accuracy" in curve:
            ax.plot(curve["epoch"], 100 * curve["accuracy"], color="grey", marker="o",
                    alpha=0.6, label="final training, train")
        ax.set_title(f"{FAMILY_LABELS[family]}: learning curves")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.supxlabel("Search trials train for few epochs (a promoted configuration restarts), each "
                  "with a whole schedule; the final training uses the whole training split",
                  fontsize=9)
    return _save(fig, path)


def hyperparameter_effects(lessons: pd.DataFrame, scores: pd.Series, epochs: pd.Series,
                           family: str, path: Path) -> Path:
    """One panel per lesson: each trial's validation accuracy against its value.

    Colour is the epochs a trial trained (Hyperband gives most trials few), which matters as
    much as any hyperparameter, so compare points of one colour.
    """
    columns = list(lessons.columns)
    ncols = 4
    nrows = int(np.ceil(len(columns) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.6 * nrows), squeeze=False,
                             layout="constrained")
    norm = plt.Normalize(epochs.min(), max(epochs.max(), epochs.min() + 1))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(scores))
    for ax, column in zip(axes.flat, columns, strict=False):
        values = lessons[column]
        if column == "learning_rate":
            points = ax.scatter(values, 100 * scores, c=epochs, cmap="viridis", norm=norm,
                                edgecolor="black", linewidth=0.3)
            ax.set_xscale("log")
        else:
            labels = sorted(values.astype(str).unique(), key=_natural)
            position = values.astype(str).map({v: i for i, v in enumerate(labels)})
            points = ax.scatter(position + jitter, 100 * scores, c=epochs, cmap="viridis",
                                norm=norm, edgecolor="black", linewidth=0.3)
            means = (100 * scores).groupby(position).mean()
            ax.scatter(means.index, means.values, marker="_", s=600, color="red",
                       label="mean")
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(column.replace("_", " "))
        if ax in axes[:, 0]:
            ax.set_ylabel("val accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(columns):]:
        ax.axis("off")
    fig.colorbar(points, ax=axes, label="epochs trained", shrink=0.6)
    fig.suptitle(f"{FAMILY_LABELS[family]}: validation accuracy of every completed trial by "
                 "hyperparameter (red bar: mean)")
    return _save(fig, path)


def importance(rankings: dict[str, pd.Series], path: Path) -> Path:
    """Horizontal bars: random-forest importance of each hyperparameter, per family."""
    families = list(rankings)
    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 4), squeeze=False,
                             layout="constrained")
    for ax, family in zip(axes[0], families, strict=True):
        ranking = rankings[family].sort_values()
        ax.barh(ranking.index, ranking.values, color=COLORS[family])
        ax.set_xlabel("share of the forest's impurity decrease")
        ax.set_title(f"{FAMILY_LABELS[family]}: what explained val accuracy", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.supxlabel("Random forest fitted on the trials table (few trials: a hint, not a proof)",
                  fontsize=9)
    return _save(fig, path)


def accuracy_vs_params(trials: dict[str, pd.DataFrame], finals: dict[str, dict],
                       path: Path) -> Path:
    """Every completed trial (dots) and each final model (star): val accuracy against size."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for family, table in trials.items():
        ax.scatter(table["trainable_params"], 100 * table["score"], color=COLORS[family],
                   edgecolor="black", linewidth=0.3,
                   label=f"{FAMILY_LABELS[family]}: search trials")
        final = finals.get(family)
        if final and final.get("trainable_params"):
            ax.scatter(final["trainable_params"], 100 * final["val_accuracy"], marker="*",
                       s=250, color=COLORS[family], edgecolor="black",
                       label=f"{FAMILY_LABELS[family]}: final model")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("val accuracy (%)")
    ax.set_title("Accuracy against size\n(search trials: few epochs; final: whole split)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def confusion_matrices(per_class: dict[str, dict], path: Path) -> Path:
    """Row-normalised confusion matrix per family: where each true class ends up."""
    families = list(per_class)
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 5.2), squeeze=False,
                             layout="constrained")
    for ax, family in zip(axes[0], families, strict=True):
        matrix = np.asarray(per_class[family]["confusion_matrix"], dtype=float)
        names = per_class[family]["class_names"]
        share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(100 * share, cmap="Blues", vmin=0, vmax=100)
        if len(names) <= 20:
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(names)), names, fontsize=8)
            for (row, col), value in np.ndenumerate(100 * share):
                ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if value > 50 else "black")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{FAMILY_LABELS[family]}: confusion on the test split")
        fig.colorbar(image, ax=ax, label="% of the true class", shrink=0.8)
    return _save(fig, path)


def _natural(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
