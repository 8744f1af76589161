"""The lessons' figures: one PNG per claim, drawn from the result its experiment wrote.

Every figure carries its claim's verdict label in the title, so a figure read alone says what
this run found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.families import FAMILY_NAMES
from pipeline.figures import _save, plt
from pipeline.lessons import CLAIMS
from pipeline.lessons.verdicts import EFFECT_MARGIN
from pipeline.stats import paired_interval


def _title(ax, claim: str, label: str) -> None:
    ax.set_title(f"{CLAIMS[claim][0]}: {label} by this run", fontsize=10)


def _smooth(curve, window: int = 10) -> np.ndarray:
    curve = np.asarray(curve, dtype=float)
    if len(curve) < window:
        return curve
    return np.convolve(curve, np.ones(window) / window, mode="valid")


def learning_rate(r: dict, label: str, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    acc = 100 * np.asarray(r["val_accuracy"])
    loss = np.asarray(r["final_loss"], dtype=float)
    left.semilogx(r["rates"], acc, "o-")
    left.set_xlabel("learning rate (plain SGD, constant)")
    left.set_ylabel("validation accuracy (%)")
    right.semilogx(r["rates"], np.where(np.isfinite(loss), loss, np.nan), "o-", color="tab:red")
    for rate, value in zip(r["rates"], loss, strict=True):
        if not np.isfinite(value):
            right.annotate("diverged", (rate, r["first_loss"]), rotation=90, ha="center")
    right.axhline(r["first_loss"], color="grey", ls="--", lw=1, label="loss at the start")
    right.set_xlabel("learning rate")
    right.set_ylabel("final training loss")
    right.legend(fontsize=8)
    _title(left, "learning_rate", label)
    return _save(fig, path)


def momentum(r: dict, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, v in r["variants"].items():
        ax.plot(v["loss_curve"], lw=0.6, alpha=0.35)
        ax.plot(_smooth(v["loss_curve"]), lw=1.6, color=ax.lines[-1].get_color(),
                label=f"{name}, lr {v['learning_rate']:g} "
                      f"({100 * np.mean(v['val_accuracy']):.1f}% val)")
    ax.set_xlabel(f"training step (first seed; constant rates; momentum {r['momentum']:g})")
    ax.set_ylabel("training loss per step")
    ax.legend(fontsize=8)
    _title(ax, "momentum", label)
    return _save(fig, path)


def batch_size(r: dict, label: str, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for size, curve in zip(r["batch_sizes"], r["loss_curves"], strict=True):
        epochs = np.linspace(0, 1, len(curve))
        left.plot(epochs, curve, lw=0.7, label=f"batch {size}")
    left.set_xlabel("share of training done (equal examples)")
    left.set_ylabel("training loss per step")
    left.legend(fontsize=8)
    sizes = np.asarray(r["batch_sizes"], dtype=float)
    right.loglog(sizes, r["gradient_noise"], "o-", label="measured, fixed weights")
    right.loglog(sizes, r["gradient_noise"][0] * sizes[0] / sizes, "k:", lw=1,
                 label="1 / batch size (sampling)")
    right.set_xlabel("batch size")
    right.set_ylabel("gradient noise (relative variance)")
    right.legend(fontsize=8)
    _title(left, "batch_size", label)
    return _save(fig, path)


def annealing(r: dict, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    names = list(r["schedules"])
    for i, name in enumerate(names):
        values = 100 * np.asarray(r["schedules"][name])
        ax.scatter(np.full(len(values), i), values, color="black", s=14, zorder=3)
        ax.bar(i, values.mean(), color="tab:grey" if name == "constant" else "tab:blue",
               alpha=0.6)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"validation accuracy (%), {r['seeds']} seeds")
    low = min(min(v) for v in r["schedules"].values())
    ax.set_ylim(max(0, 100 * low - 10), None)
    _title(ax, "annealing", label)
    return _save(fig, path)


def adam_robustness(r: dict, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name in ("sgd", "adam"):
        ax.semilogx(r["rates"], 100 * np.asarray(r[name]), "o-", label=name.upper())
    ax.set_xlabel("learning rate (constant)")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    _title(ax, "adam_robustness", label)
    return _save(fig, path)


def inductive_bias(r: dict, label: str, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for family in FAMILY_NAMES:
        name = f"{family.upper()} ({r[family]['params']:,} parameters)"
        for ax, key in ((left, "shift"), (right, "rotation")):
            amounts = r[family][key]
            ax.errorbar([int(k) for k in amounts], [100 * np.mean(v) for v in amounts.values()],
                        yerr=[100 * np.std(v) for v in amounts.values()], fmt="o-",
                        capsize=3, label=name)
    left.set_xlabel("test images shifted by (pixels)")
    right.set_xlabel("test images rotated by (degrees)")
    for ax in (left, right):
        ax.set_ylabel("test accuracy (%), mean and spread over seeds")
        ax.legend(fontsize=8)
    _title(left, "inductive_bias", label)
    return _save(fig, path)


def _intervals(ax, labels: list[str], intervals: list[dict], margins: dict[str, float],
               xlabel: str) -> None:
    """Paired differences (points) with their 95% intervals, one row each, beside zero and
    the claim's margins (label -> value); a tick for each seed's own difference."""
    for row, interval in enumerate(intervals):
        mean = 100 * interval["mean"]
        low, high = (100 * interval[k] for k in ("low", "high"))
        low, high = (v if np.isfinite(v) else mean for v in (low, high))
        ax.errorbar([mean], [row], xerr=[[mean - low], [high - mean]], fmt="o", capsize=4,
                    color="tab:blue")
        ax.scatter(100 * np.asarray(interval["differences"]), [row] * interval["seeds"],
                   marker="|", color="grey", zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    for (text, value), color in zip(margins.items(), ("tab:green", "tab:red"), strict=False):
        ax.axvline(100 * value, color=color, ls="--", lw=1, label=text)
    if margins:
        ax.legend(fontsize=8)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel(xlabel)


def regularisation_gap(r: dict, label: str, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    settings = r["settings"]
    names = list(settings)
    x = np.arange(len(names))
    for offset, key, text in ((-0.2, "train_accuracy", "training (inference mode)"),
                              (0.2, "val_accuracy", "validation")):
        left.bar(x + offset, [100 * np.mean(settings[n][key]) for n in names], 0.4,
                 yerr=[100 * np.std(settings[n][key]) for n in names], label=text)
    left.set_xticks(x, names)
    left.set_ylabel(f"accuracy (%), {r['train_images']} training images")
    left.legend(fontsize=8)
    gap = {k: np.subtract(v["train_accuracy"], v["val_accuracy"]) for k, v in settings.items()}
    rows, intervals = [], []
    for name in ("augmentation", "dropout"):
        rows += [f"{name}: gap narrowed", f"{name}: validation change"]
        intervals += [paired_interval(gap[name], gap["none"]),
                      paired_interval(settings["none"]["val_accuracy"],
                                      settings[name]["val_accuracy"])]
    _intervals(right, rows, intervals,
               {"the gap must narrow past this": EFFECT_MARGIN,
                "validation must stay above this": -EFFECT_MARGIN},
               "against no regularisation (points)")
    _title(left, "regularisation_gap", label)
    return _save(fig, path)


def early_stopping(r: dict, label: str, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    epochs = np.arange(1, len(r["val_loss"][0]) + 1)
    left.plot(epochs, r["loss"][0], "o-", label="training loss")
    left.plot(epochs, r["val_loss"][0], "o-", label="validation loss")
    best = r["best_epoch"][0]
    left.axvline(best, color="tab:green", ls="--", label=f"restored weights (epoch {best})")
    left.axvline(r["stopped_epoch"][0], color="tab:red", ls=":",
                 label=f"stopped (epoch {r['stopped_epoch'][0]} of {r['epochs_allowed']})")
    left.set_xlabel("epoch (first seed; the run to the end)")
    left.set_ylabel("loss")
    left.legend(fontsize=8)
    _intervals(right, ["restored - to the end"],
               [paired_interval(r["full_test_accuracy"], r["restored_test_accuracy"])], {},
               "test accuracy difference (points)")
    _title(left, "early_stopping", label)
    return _save(fig, path)


def vanishing_gradients(r: dict, label: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True, layout="constrained")
    for ax, when in zip(axes, ("init", "trained"), strict=True):
        for name, v in r["configs"].items():
            ax.semilogy(range(1, len(v[when]) + 1), v[when], "o-" if "bn" in name else "o--",
                        ms=3, label=name)
        ax.set_xlabel("layer (input side first)")
        ax.set_title("at initialisation" if when == "init" else f"after {r['steps']} steps",
                     fontsize=9)
    axes[0].set_ylabel("gradient RMS per kernel weight")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{CLAIMS['vanishing_gradients'][0]}: {label} by this run", fontsize=10)
    return _save(fig, path)


def batch_norm(r: dict, label: str, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    for depth, color in zip(r["depths"], ("tab:blue", "tab:orange"), strict=False):
        for arm, style in (("bn", "o-"), ("plain", "s--")):
            left.plot(r["rates"], 100 * np.asarray(r["grid"][f"{depth}/{arm}"]), style,
                      color=color, label=f"{depth} layers, {'BN' if arm == 'bn' else 'plain'}")
    left.set_xscale("log")
    left.set_xticks(r["rates"], [f"{x:g}" for x in r["rates"]])
    left.minorticks_off()
    left.set_xlabel("learning rate (momentum SGD, constant; first seed)")
    left.set_ylabel("validation accuracy (%)")
    left.legend(fontsize=7)
    acc = r["val_accuracy"]
    _intervals(right, [f"BN gain, {d} layers" for d in r["depths"]],
               [paired_interval(acc[f"{d}/plain"], acc[f"{d}/bn"]) for d in r["depths"]],
               {"margin": EFFECT_MARGIN}, "batch norm minus plain, each at its best rate "
               "(points)")
    _title(left, "batch_norm", label)
    return _save(fig, path)


def bn_landscape(r: dict, label: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    markers = dict(zip(sorted({p["depth"] for p in r["pairs"]}, key=int), "os^v",
                       strict=False))
    for ax, key, words in zip(axes, ("loss_range", "gradient_change"),
                              ("loss range along the gradient",
                               "gradient change along it (relative)"), strict=True):
        pairs = [p for p in r["pairs"] if np.isfinite([p["bn"][key], p["plain"][key]]).all()
                 and min(p["bn"][key], p["plain"][key]) > 0]
        for p in pairs:
            ax.scatter(p["plain"][key], p["bn"][key], marker=markers[p["depth"]],
                       color="tab:blue")
            ax.annotate(f"{p['depth']} layers, lr {p['rate']:g}", (p["plain"][key],
                        p["bn"][key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        values = [p[arm][key] for p in pairs for arm in ("bn", "plain")]
        if values:
            line = np.geomspace(min(values) / 2, max(values) * 2, 10)
            ax.plot(line, line, color="black", lw=0.8, label="as smooth")
            ax.plot(line, 0.8 * line, color="tab:green", ls="--", lw=1,
                    label="a fifth smoother (margin)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_xlabel(f"without batch norm: {words}")
        ax.set_ylabel(f"with batch norm: {words}")
    _title(axes[0], "bn_landscape", label)
    return _save(fig, path)


def ablations(r: dict, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    names = list(r["ablations"])
    _intervals(ax, [f"without {n}" for n in names],
               [paired_interval(r["baseline_accuracy"], r["ablations"][n]["accuracy"])
                for n in names], {"a removal must cost more than this": -EFFECT_MARGIN},
               f"test accuracy change (points; champion "
               f"{100 * np.mean(r['baseline_accuracy']):.1f}%, {r['test_images']} images, "
               f"{r['epochs']} epochs)")
    _title(ax, "ablations", label)
    return _save(fig, path)


def depth_vs_width(r: dict, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    nets = r["nets"]
    names = list(nets)
    for i, name in enumerate(names):
        values = 100 * np.asarray(nets[name]["val_accuracy"])
        ax.bar(i, values.mean(), color="tab:blue" if name == "deep" else "tab:grey", alpha=0.7)
        ax.scatter(np.full(len(values), i), values, color="black", s=14, zorder=3)
    ax.set_xticks(range(len(names)), [f"{nets[n]['layers']} x {nets[n]['units']}\n"
                                      f"{nets[n]['params'] / 1e3:.0f}k parameters"
                                      for n in names])
    low = min(min(n["val_accuracy"]) for n in nets.values())
    ax.set_ylim(max(0, 100 * low - 10), None)
    ax.set_ylabel("validation accuracy (%), per seed")
    _title(ax, "depth_vs_width", label)
    return _save(fig, path)


def robustness(r: dict, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    views = list(next(iter(r["arms"].values())))
    x = np.arange(len(views))
    for offset, (arm, scores) in zip((-0.2, 0.2), r["arms"].items(), strict=True):
        ax.bar(x + offset, [100 * np.mean(scores[v]) for v in views], 0.4,
               yerr=[100 * np.std(scores[v]) for v in views], capsize=3,
               label={"flip_crop": "flip, crop",
                      "jitter_erasing": "flip, crop, colour jitter, erasing"}.get(arm, arm))
    ax.set_xticks(x, [f"{v} test images" for v in views])
    ax.set_ylabel(f"test accuracy (%), {r['epochs']} epochs")
    ax.legend(fontsize=8)
    _title(ax, "robustness", label)
    return _save(fig, path)


def adam_generalisation(r: dict, label: str, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    for name, arm in r["arms"].items():
        curves = 100 * np.asarray(arm["val_accuracy_curve"], dtype=float)
        epochs = np.arange(1, curves.shape[1] + 1)
        left.plot(epochs, curves.mean(axis=0), "o-", label=name)
    left.set_xlabel("epoch")
    left.set_ylabel("validation accuracy (%), mean over seeds")
    left.legend(fontsize=8)
    names = list(r["arms"])
    x = np.arange(len(names))
    for offset, key, text in ((-0.2, "train_accuracy", "training (inference mode)"),
                              (0.2, "val_accuracy", "validation")):
        right.bar(x + offset, [100 * np.mean(r["arms"][n][key]) for n in names], 0.4,
                  label=text)
    right.set_xticks(x, names)
    right.set_ylabel(f"accuracy after {r['epochs']} epochs (%)")
    right.legend(fontsize=8)
    _title(left, "adam_generalisation", label)
    return _save(fig, path)


FIGURES = {name: globals()[name] for name in CLAIMS}
