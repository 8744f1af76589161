"""Champion lineage (``cifar-automl history``): every registered version with its date, test
accuracy, origin and aliases, and every retune decision with the numbers behind it."""

from __future__ import annotations

from datetime import datetime

from pipeline.registry import registered_name


def history(tracker, dataset: str, families: list[str]) -> str:
    lines = []
    for family in families:
        name = registered_name(dataset, family)
        versions = tracker.call("list model versions", tracker.client.search_model_versions,
                                 f"name = '{name}'") or []
        lines.append(f"{name}: {len(versions)} version(s)")
        lines.append(f"  {'version':>7}  {'registered':16}  {'test acc':>8}  {'by':8}  aliases")
        for v in sorted(versions, key=lambda v: int(v.version)):
            accuracy = v.tags.get("test_accuracy")
            accuracy = f"{100 * float(accuracy):.2f}%" if accuracy else "-"
            lines.append(f"  {v.version:>7}  {_date(v.creation_timestamp):16}  {accuracy:>8}  "
                         f"{v.tags.get('registered_by', '-'):8}  {', '.join(v.aliases) or '-'}")
    runs = tracker.call("list retune runs", tracker.client.search_runs,
                         [tracker.experiment_id], filter_string="tags.role = 'retune'",
                         order_by=["attributes.start_time ASC"]) or []
    lines.append(f"retune runs: {len(runs)}")
    for run in runs:
        summary = run.data.tags.get("summary") or f"({run.info.status.lower()}, no decision)"
        lines.append(f"  {_date(run.info.start_time)}  {summary}")
    return "\n".join(lines)


def _date(millis: int | None) -> str:
    return datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M") if millis else "-"
