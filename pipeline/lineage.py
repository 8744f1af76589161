"""Champion lineage (``cifar-automl history``): every registered version with its date, test
accuracy, origin and aliases, and every retune decision with the numbers behind it."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from pipeline.families import FAMILIES
from pipeline.tracking import names


def versions(store, name: str) -> list[tuple]:
    """(version, its aliases) in version order. Searched versions carry no aliases in MLflow,
    so they come from the registered model."""
    found = store.model_versions(name)
    model = store.registered_model(name) if found else None
    aliases = {}
    for alias, version in (model.aliases if model else {}).items():
        aliases.setdefault(str(version), []).append(alias)
    return [(v, sorted(aliases.get(str(v.version), [])))
            for v in sorted(found, key=lambda v: int(v.version))]


def tried_configurations(store, family: str, dataset: str) -> set[str]:
    """Digests of every configuration a search of this family and dataset tried so far (the
    pipeline's and every retune's)."""
    runs = store.find_runs(f"{names.tag_is(names.FAMILY, family)} and "
                           f"{names.tag_is(names.DATASET, dataset)} and "
                           f"{names.tag_set(names.CONFIG_DIGEST)}", max_results=50_000)
    return {run.data.tags[names.CONFIG_DIGEST] for run in runs}


def earlier_trials(store, family: str, dataset: str) -> list[dict]:
    """Every scored trial of a search of this family and dataset so far, as a retune's oracle
    reads them (search/oracles.py, ``history``): its typed values, score (best validation
    accuracy), rung epochs and fidelity. Trials logged before these tags existed, and a lone
    trial the search's clock cut short, are left out."""
    runs = store.find_runs(f"{names.tag_is(names.FAMILY, family)} and "
                           f"{names.tag_is(names.DATASET, dataset)} and "
                           f"{names.tag_is(names.TRIAL_STATUS, 'COMPLETED')} and "
                           f"{names.tag_set(names.SEARCHED_VALUES)}", max_results=50_000)
    found = []
    for run in runs:
        tags, score = run.data.tags, run.data.metrics.get("best_val_accuracy")
        if score is None or not math.isfinite(score) or \
                tags.get(names.STOPPED_BY_BUDGET) == "True":
            continue
        found.append({"values": json.loads(tags[names.SEARCHED_VALUES]), "score": score,
                      "epochs": int(tags[names.RUNG_EPOCHS]),
                      "fidelity": tags.get(names.FIDELITY, "")})
    return found


def history(store, dataset: str, families: list[str]) -> str:
    lines = []
    for family in families:
        name = FAMILIES[family].registered_model(dataset)
        registered = versions(store, name)
        lines.append(f"{name}: {len(registered)} version(s)")
        lines.append(f"  {'version':>7}  {'registered':16}  {'test acc':>8}  {'by':8}  aliases")
        for v, aliases in registered:
            accuracy = v.tags.get(names.VERSION_TEST_ACCURACY)
            accuracy = f"{100 * float(accuracy):.2f}%" if accuracy else "-"
            by = v.tags.get(names.VERSION_REGISTERED_BY, "-")
            lines.append(f"  {v.version:>7}  {_date(v.creation_timestamp):16}  {accuracy:>8}  "
                         f"{by:8}  {', '.join(aliases) or '-'}")
        lines.append(f"  {family}: {len(tried_configurations(store, family, dataset))} "
                     "configurations tried in all searches (the pipeline's and the retunes')")
    runs = store.find_runs(names.tag_is(names.ROLE, names.ROLE_RETUNE),
                           order_by=["attributes.start_time ASC"])
    lines.append(f"retune runs: {len(runs)}")
    for run in runs:
        summary = (run.data.tags.get(names.NOTE)
                   or f"({run.info.status.lower()}, no decision)")
        lines.append(f"  {_date(run.info.start_time)}  {summary}")
    return "\n".join(lines)


def _date(millis: int | None) -> str:
    return datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M") if millis else "-"


def plot_history(store, dataset: str, families: list[str], path: Path) -> Path:
    """Test accuracy of every registered version over time; the champion as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for family in families:
        name = FAMILIES[family].registered_model(dataset)
        accuracy = names.VERSION_TEST_ACCURACY
        points = [(datetime.fromtimestamp(v.creation_timestamp / 1000),
                   100 * float(v.tags[accuracy]), v.version, aliases)
                  for v, aliases in versions(store, name) if v.tags.get(accuracy)]
        if not points:
            continue
        dates, accuracies, _, _ = zip(*points, strict=True)
        line, = ax.plot(dates, accuracies, marker="o", label=name)
        for date, accuracy, version, aliases in points:
            ax.annotate(f"v{version}", (date, accuracy), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
            if names.CHAMPION in aliases:
                ax.scatter([date], [accuracy], marker="*", s=300, color=line.get_color(),
                           edgecolor="black", zorder=3)
    ax.set_xlabel("registered at")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Registered versions over time (star: the current champion)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
