"""The report stage: ``reports/comparison.md`` and its PNG figures, from what earlier stages
wrote (trials tables, learning curves, test metrics, per-class results). No model is loaded and
nothing is trained, so the report reruns in seconds when only its presentation changes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline import figures
from pipeline.budget_rule import TIME_TOLERANCE
from pipeline.data import store
from pipeline.families import FAMILY_NAMES as FAMILIES
from pipeline.stats import format_p
from pipeline.trials import FAMILY_LABELS, completed, lessons, read_table

log = logging.getLogger(__name__)
TOP_TRIALS = 5
RULE_NAMES = {"equal_epochs": "equal epochs", "equal_time": "equal time"}
MIN_TRIALS_FOR_IMPORTANCE = 4


def run_report(results_dir: Path, metrics_path: Path, out_dir: Path) -> Path:
    metrics = store.read_json(metrics_path)
    timings_path = metrics_path.with_name(store.TIMINGS)
    timings = store.read_json(timings_path) if timings_path.is_file() else {}
    seeds_path = results_dir / "evaluation" / "seeds.csv"
    seeds = read_table(seeds_path) if seeds_path.is_file() else None
    per_family = {family: _family_inputs(results_dir, family) for family in FAMILIES}
    per_class = {f: store.read_json(results_dir / "evaluation" / f"{f}_per_class.json")
                 for f in FAMILIES}
    fig_dir = out_dir / "figures"
    done = {f: completed(d["trials"]) for f, d in per_family.items()}
    lesson_tables = {f: lessons(done[f], f) for f in FAMILIES}
    rankings = {f: r for f in FAMILIES if (r := importance_ranking(done[f])) is not None}

    made = {"test_accuracy": figures.test_accuracy(metrics, fig_dir / "test_accuracy.png"),
            "learning_curves": figures.learning_curves(
                {f: d["history"] for f, d in per_family.items()},
                {f: d["trial_history"] for f, d in per_family.items()},
                {f: list(done[f]["trial_id"][:3]) for f in FAMILIES},
                fig_dir / "learning_curves.png"),
            "accuracy_vs_params": figures.accuracy_vs_params(
                done, {f: d["best"].get("final", {}) for f, d in per_family.items()},
                fig_dir / "accuracy_vs_params.png"),
            "confusion": figures.confusion_matrices(per_class,
                                                    fig_dir / "confusion_matrices.png")}
    if seeds is not None and len(seeds):
        made["seeds"] = figures.seed_spread(seeds, fig_dir / "seeds.png")
    for family in FAMILIES:
        if len(done[family]):
            made[f"effects_{family}"] = figures.hyperparameter_effects(
                lesson_tables[family], done[family]["score"], done[family]["epochs_run"],
                family, fig_dir / f"hyperparameter_effects_{family}.png")
    if rankings:
        made["importance"] = figures.importance(rankings, fig_dir / "importance.png")

    text = _markdown(metrics, timings, per_family, done, lesson_tables, rankings, per_class,
                     {k: p.relative_to(out_dir).as_posix() for k, p in made.items()},
                     (out_dir / "augmentation_preview.png").is_file())
    report = out_dir / "comparison.md"
    store.atomic_write_bytes(report, text.encode())
    log.info("report: %s with %d figures", report, len(made))
    return report


def importance_ranking(done: pd.DataFrame) -> pd.Series | None:
    """Each hyperparameter's share of a random forest's impurity decrease in predicting the
    trials' validation accuracy; epochs trained is a feature too, as Hyperband varies it.
    None when there are too few trials to fit anything."""
    from sklearn.ensemble import RandomForestRegressor

    features = {c[3:]: done[c] for c in done.columns
                if c.startswith("hp.") and not c.startswith("hp.tuner/")
                and done[c].nunique(dropna=False) > 1}
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE or not features:
        return None
    features["epochs trained"] = done["epochs_run"]
    frame = pd.DataFrame(features)
    encoded, owner = [], []
    for name, column in frame.items():
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            encoded.append(column.fillna(-1).rename(name))
            owner.append(name)
        else:
            dummies = pd.get_dummies(column.astype(str), prefix=name, dtype=float)
            encoded += [dummies[c] for c in dummies.columns]
            owner += [name] * dummies.shape[1]
    x = pd.concat(encoded, axis=1).to_numpy(dtype=float)
    forest = RandomForestRegressor(n_estimators=300, random_state=0)
    forest.fit(x, done["score"].to_numpy(dtype=float))
    return pd.Series(forest.feature_importances_, index=owner).groupby(level=0).sum() \
        .sort_values(ascending=False)


def _family_inputs(results_dir: Path, family: str) -> dict:
    folder = results_dir / family
    best = store.read_json(folder / "best_hparams.json")
    return {"best": best, "trials": read_table(folder / "trials.csv"),
            "trial_history": _optional_table(folder / "trial_history.csv"),
            "history": read_table(folder / "history.csv")}


def _optional_table(path: Path) -> pd.DataFrame | None:
    return read_table(path) if path.is_file() and path.stat().st_size > 2 else None



# --- markdown ----------------------------------------------------------------------------------
def _markdown(metrics, timings, per_family, done, lesson_tables, rankings, per_class, figs,
              has_preview) -> str:
    # the clock's readings (training minutes, the FC's share of the CNN's time) are in
    # timings.json, beside what the models scored
    metrics = {k: {**v, **timings.get(k, {})} if isinstance(v, dict) else v
               for k, v in metrics.items()}
    cnn, fc, comparison = metrics["cnn"], metrics["fc"], metrics["comparison"]
    equal_time = metrics.get("fc_equal_time")
    dataset = metrics.get("dataset", "cifar10").upper().replace("CIFAR", "CIFAR-")
    out = [f"# CNN against a fully connected network on {dataset}", "",
           "Generated by the `report` stage from `metrics.json` and `results/`; rerun with "
           "`dvc repro`. Test numbers come from the official test split, which neither the "
           "search nor the final training saw.", "", "## Verdict", ""]
    rows = [("test accuracy (95% interval)", lambda m, _: f"**{100 * m['test_accuracy']:.2f}%** "
             f"({100 * m['test_accuracy_ci95']['low']:.2f}-"
             f"{100 * m['test_accuracy_ci95']['high']:.2f})"),
            ("single-view test accuracy", lambda m, _: _single_view(m)),
            ("over the seeds (mean +- std)", lambda m, _: _over_seeds(m)),
            ("test loss", lambda m, _: f"{m['test_loss']:.3f}"),
            ("parameters", lambda m, _: f"{m['params']:,}"),
            ("budget rule", lambda m, _: RULE_NAMES.get(m.get("budget_rule"), "-")),
            ("final training", lambda m, f: _final_training(m, per_family.get(f))),
            ("images seen in training", lambda m, _: _images_seen(m)),
            ("augmentation", lambda m, _: m.get("augmentation", "-")),
            ("inference", lambda _, f: _speed(timings.get(f, {}))),
            ("search", lambda _, f: _search_cell(per_family.get(f), done.get(f)))]
    columns = [("cnn", cnn, "CNN"), ("fc", fc, "Fully connected")]
    if equal_time:
        columns.append(("fc_equal_time", equal_time, "Fully connected, equal time"))
    out += ["| | " + " | ".join(c[2] for c in columns) + " |",
            "|---|" + "---|" * len(columns)]
    out += [f"| {label} | " + " | ".join(cell(m, f) for f, m, _ in columns) + " |"
            for label, cell in rows]
    out += ["", _verdict_sentence(comparison, cnn, fc, equal_time_shown=bool(equal_time))]
    if equal_time:
        out += ["", _verdict_sentence(metrics["comparison_equal_time"], cnn, equal_time)]
    out += ["", _seed_sentence(comparison, cnn, fc), "", _budget_rule(per_family, cnn), "",
            f"![Test accuracy]({figs['test_accuracy']})", ""]
    if "seeds" in figs and cnn.get("seeds", {}).get("count", 1) > 1:
        out += [f"![Seeds]({figs['seeds']})", ""]
    if has_preview:
        out += ["Training images were augmented on the fly; the policy as the models saw it:",
                "", "![Augmentation preview](augmentation_preview.png)", ""]
    out += _best_hyperparameters(per_family)
    out += _top_trials(done, lesson_tables)
    out += ["## Learning curves", "", "Validation accuracy per epoch of the three best search "
            "trials (few epochs, on a subset where the profile sets one) and of the final "
            "training of the best configuration (whole training split); the gap between train "
            "and val is overfitting, held back by augmentation, dropout and early stopping.", "",
            f"![Learning curves]({figs['learning_curves']})", ""]
    out += _effects(done, lesson_tables, figs)
    out += _importance(rankings, figs)
    out += ["## Accuracy against size", "", "Every completed search trial (dots: few epochs, "
            "on a subset where the profile sets one) and each final model (stars: whole "
            "training split). "
            f"Final models: CNN {cnn['params']:,} parameters, fully connected "
            f"{fc['params']:,} ({fc['params'] / max(cnn['params'], 1):.1f} times as many).", "",
            f"![Accuracy against parameters]({figs['accuracy_vs_params']})", ""]
    out += _per_class(per_class, figs)
    out += ["## Look further", "", "- `cifar-automl ui`, then the experiment: every search is a "
            "parent run with one child run per trial (select trials, **Compare**, "
            "parallel-coordinates chart); the evaluation run holds this report.",
            "- `dvc plots show` renders the learning curves, confusion matrices and the "
            "accuracy-size scatter; `dvc metrics show` the test numbers.", ""]
    return "\n".join(out)


def _verdict_sentence(comparison: dict, cnn: dict, fc: dict,
                      equal_time_shown: bool = False) -> str:
    """The gap, its test, and what it may be put down to: the architecture only when the FC
    had at least the CNN's training time and the same augmentation (pipeline/budget_rule.py);
    otherwise what the comparison was."""
    difference, p_value = comparison["accuracy_difference"], comparison["mcnemar_p_value"]
    p_text = format_p(p_value, comparison.get("mcnemar_log10_p_value"))
    lead = "ahead of" if difference >= 0 else "behind"
    rule = comparison.get("budget_rule", "equal_epochs")
    text = (f"**{RULE_NAMES.get(rule, rule).capitalize()}.** The CNN is "
            f"**{100 * abs(difference):.2f} points {lead}** the fully connected "
            f"network on the same {comparison['test_images']:,} test images. Exact McNemar "
            f"test: {p_text} ({comparison['only_cnn_correct']:,} images only the CNN got right, "
            f"{comparison['only_fc_correct']:,} only the fully connected one).")
    share = comparison.get("fc_time_share")
    if difference > 0 and p_value < 0.001 and comparison.get("architecture_claim"):
        text += (" A clear win, with " + ("fewer" if cnn["params"] < fc["params"] else "more")
                 + f" parameters, where the fully connected network trained for {share:.2f}x "
                 "the CNN's time with the same augmentation: the inductive bias of convolution "
                 "and pooling (local, shared filters, tolerance to small shifts) at work.")
    elif p_value >= 0.05:
        text += " The difference is not significant at the 5% level on this test split."
    if share is not None and not comparison.get("architecture_claim"):
        unequal = []
        if share < TIME_TOLERANCE:
            unequal.append(f"{share:.2f}x the CNN's training time ({1 / share:.1f} times less)"
                           if share > 0 else "no measured training time")
        if not comparison.get("same_augmentation"):
            unequal.append(f"other augmentation ({fc.get('augmentation', '?')} against the "
                           f"CNN's {cnn.get('augmentation', '?')})")
        separates = ("the equal-time verdict below" if equal_time_shown else
                     "the equal-time rule, `equal_time.run: true`,")
        text += (" The fully connected network had " + " and ".join(unequal) + ", so the gap "
                 f"mixes the architecture with the training budget ({separates} separates "
                 "them).")
    return text


def _seed_sentence(comparison: dict, cnn: dict, fc: dict) -> str:
    """The gap against the run-to-run spread of training, or plainly that it was not
    measured."""
    counts = [m.get("seeds", {}).get("count", 1) for m in (cnn, fc)]
    if min(counts) < 2:
        return ("**Seeds.** One training per family (`tune.final_seeds: 1`): the 95% interval "
                "above covers the sampling of test images only, not the variance between "
                "training runs of the same configuration. Set `tune.final_seeds` to 3 or more "
                "to measure it.")
    spreads = {f: m["seeds"]["test_accuracy_std"] for f, m in (("cnn", cnn), ("fc", fc))}
    gap = comparison["seed_mean_difference"]
    larger = max(spreads.values())
    times = f"{abs(gap) / larger:,.0f} times" if larger > 0 else "infinitely many times"
    return (f"**Seeds.** Each best configuration was trained {counts[0]} (CNN) and {counts[1]} "
            f"(fully connected) times with different seeds: CNN "
            f"{100 * cnn['seeds']['test_accuracy_mean']:.2f}% +- {100 * spreads['cnn']:.2f}, "
            f"fully connected {100 * fc['seeds']['test_accuracy_mean']:.2f}% +- "
            f"{100 * spreads['fc']:.2f} (mean +- sample standard deviation). The gap of the means, "
            f"{100 * gap:+.2f} points, is {times} the larger seed spread; Welch's t-test over "
            f"the seeds: {format_p(comparison['seed_welch_p_value'])}.")


def _over_seeds(m: dict) -> str:
    seeds = m.get("seeds", {})
    if seeds.get("count", 1) < 2:
        return "1 seed"
    return (f"{100 * seeds['test_accuracy_mean']:.2f}% +- {100 * seeds['test_accuracy_std']:.2f}"
            f" ({seeds['count']} seeds)")


def _speed(timing: dict) -> str:
    speed = timing.get("images_per_second")
    return "-" if speed is None else f"{speed:,.0f} images/s"


def _final_training(m: dict, family_inputs: dict | None) -> str:
    """Epochs and minutes of training (metrics.json; best_hparams.json where older metrics
    lack them)."""
    final = (family_inputs or {}).get("best", {}).get("final", {})
    epochs = m.get("train_epochs", final.get("epochs_run"))
    minutes = m.get("train_minutes", final.get("seconds", 0) / 60 if final else None)
    ended_by = m.get("train_ended_by", final.get("ended_by"))
    if epochs is None and minutes is None:
        return "-"
    ended = {"time": " (ended by its time cap)", "steps": " (all its epochs)"}.get(
        ended_by, " (stopped early)" if ended_by else "")
    return f"{epochs if epochs is not None else '?'} epochs, {minutes or 0:.1f} min{ended}"


def _images_seen(m: dict) -> str:
    seen = m.get("images_seen")
    return "-" if not seen else f"{seen:,}"


def _search_cell(family_inputs: dict | None, done) -> str:
    if family_inputs is None:
        return "its own search (equal_time stage)"
    return (f"{len(done)} of {len(family_inputs['trials'])} trials completed, best val "
            f"{100 * family_inputs['best']['search_score']:.1f}%")


def _single_view(m: dict) -> str:
    single = m.get("test_accuracy_single_view")
    return "-" if single is None else f"{100 * single:.2f}%"


def _budget_rule(per_family, cnn_metrics) -> str:
    """The rule both families were trained under, with this run's numbers."""
    finals = {f: d["best"].get("final", {}) for f, d in per_family.items()}
    if not all(finals.values()):
        return ""
    parts = [f"{'CNN' if f == 'cnn' else FAMILY_LABELS[f].lower()}: "
             f"{final.get('epochs_wanted', '?')} epochs or "
             f"{round(final.get('budget_minutes', 0), 1):g} min"
             + (f" ({round(final['minutes_from_search'], 1):g} of them left unspent by its "
                "search)"
                if final.get("minutes_from_search", 0) >= 0.1 else "")
             for f, final in finals.items()]
    views = [v for v, on in (("its mirror image", cnn_metrics.get("flip_tta")),
                             (f"copies moved {cnn_metrics.get('translate_tta')} pixel(s)",
                              cnn_metrics.get("translate_tta"))) if on]
    tta = (f" Test predictions average each image with {' and '.join(views)} (test-time "
           "augmentation) for both families; the single-view row is what the registered model "
           "returns.") if views else ""
    return ("**Budget rule (equal epochs).** Both families go through the same procedure: a "
            "search on the validation split whose trials are capped at the final training's "
            "time per image, then a final training of the winner on the whole training split "
            "for a set number of epochs or a wall-clock cap, whichever ends first, with a "
            f"learning-rate schedule that ends exactly there ({'; '.join(parts)}). Equal epochs "
            "are not equal minutes: an FC epoch costs a fraction of a CNN epoch. Under the "
            "equal-time rule (`equal_time.run: true`) the fully connected network searches for "
            "the CNN's measured search minutes and trains for its measured training minutes, "
            "with the CNN's augmentation." + tta)


def _best_hyperparameters(per_family) -> list[str]:
    hps = {f: d["best"]["hyperparameters"] for f, d in per_family.items()}
    names = list(dict.fromkeys([*hps["cnn"], *hps["fc"]]))
    out = ["## Best configurations", "", "Chosen on validation accuracy in the search, then "
           "retrained on the whole training split. Each search's first trial is its space's "
           "defaults; where they come from is written at the top of "
           "`search_spaces/<family>.yaml` (the fully connected network's were chosen on "
           "validation accuracy at the equal-epochs budget; no choice reads the test split).",
           "", "| hyperparameter | CNN | Fully connected |", "|---|---|---|"]
    out += [f"| {n} | {_fmt(hps['cnn'].get(n, '-'))} | {_fmt(hps['fc'].get(n, '-'))} |"
            for n in names]
    return out + [""]


def _top_trials(done, lesson_tables) -> list[str]:
    out = ["## Top trials", ""]
    for family in FAMILIES:
        top = done[family].head(TOP_TRIALS)
        table = lesson_tables[family].loc[top.index]
        columns = list(table.columns)
        out += [f"**{FAMILY_LABELS[family]}** ({len(done[family])} completed trials)", "",
                "| trial | val accuracy | epochs | parameters | " + " | ".join(
                    c.replace("_", " ") for c in columns) + " |",
                "|---" * (4 + len(columns)) + "|"]
        for index, row in top.iterrows():
            cells = [_fmt(table.at[index, c]) for c in columns]
            out.append(f"| {row['trial_id']} | {100 * row['score']:.1f}% | "
                       f"{int(row['epochs_run'])} | {int(row['trainable_params']):,} | "
                       + " | ".join(cells) + " |")
        out.append("")
    return out


def _effects(done, lesson_tables, figs) -> list[str]:
    out = ["## Hyperparameter effects", "", "Each point is a completed trial; colour is how many "
           "epochs it trained (Hyperband gives most trials few, and epochs matter as much as "
           "any choice), so compare points of one colour. Mean validation accuracy by value:",
           "", "| lesson | CNN | Fully connected |", "|---|---|---|"]
    for lesson in ("optimizer", "schedule", "batch_norm", "activation", "depth", "dropout",
                   "augmentation"):
        cells = [_group_means(done[f]["score"], lesson_tables[f].get(lesson)) for f in FAMILIES]
        out.append(f"| {lesson.replace('_', ' ')} | {cells[0]} | {cells[1]} |")
    out.append("")
    out += [f"![{FAMILY_LABELS[f]} hyperparameter effects]({figs[f'effects_{f}']})"
            for f in FAMILIES if f"effects_{f}" in figs]
    return out + [""]


def _group_means(scores: pd.Series, values: pd.Series | None) -> str:
    if values is None or scores.empty:
        return "-"
    groups = (100 * scores).groupby(values.astype(str)).agg(["mean", "size"])
    groups = groups.sort_values("mean", ascending=False)
    return ", ".join(f"{name} {row['mean']:.1f}% (n={int(row['size'])})"
                     for name, row in groups.iterrows())


def _importance(rankings, figs) -> list[str]:
    out = ["## What explained validation accuracy", ""]
    if not rankings:
        return out + [f"Too few completed trials (under {MIN_TRIALS_FOR_IMPORTANCE}) to rank "
                      "hyperparameters.", ""]
    out.append("A random forest fitted on each family's trials table (hyperparameters and "
               "epochs trained → validation accuracy); its impurity importances, summed over "
               "each hyperparameter's values. With a dozen trials this is a hint, not a proof.")
    out.append("")
    for family, ranking in rankings.items():
        top = ", ".join(f"{name} ({share:.0%})" for name, share in ranking.head(4).items())
        out.append(f"- {FAMILY_LABELS[family]}: {top}")
    return out + ["", f"![Importance]({figs['importance']})", ""]


def _per_class(per_class, figs) -> list[str]:
    names = per_class["cnn"]["class_names"]
    out = ["## Per class", "", "Row-normalised confusion matrices on the test split, and each "
           "class's F1 score.", "", f"![Confusion matrices]({figs['confusion']})", ""]
    if len(names) > 20:
        return out
    out += ["| class | CNN F1 | Fully connected F1 |", "|---|---|---|"]
    for name in names:
        scores = [per_class[f]["per_class"][name]["f1-score"] for f in FAMILIES]
        out.append(f"| {name} | {scores[0]:.3f} | {scores[1]:.3f} |")
    return out + [""]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
