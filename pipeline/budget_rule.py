"""The budget rules a CNN - FC verdict holds under, and when it may speak of inductive bias.

``equal_epochs`` (the tune stage): each family's final training runs ``tune.final_epochs`` on the
whole training split or its own ``final_budget_minutes``, whichever ends first; cheap FC epochs
then give the FC a fraction of the CNN's minutes. ``equal_time`` (the optional equal_time
stage): the FC searches for the CNN's measured search minutes and trains for the CNN's measured
final-training minutes, with the CNN's augmentation. A gap is put down to the architecture
("inductive bias") only when the FC had at least the CNN's training time (``TIME_TOLERANCE``:
a run ends on a whole step, a little before its cap) and the same augmentation; otherwise the
verdict says what was compared.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data import store

RULES = ("equal_epochs", "equal_time")
TIME_TOLERANCE = 0.95  # the FC's share of the CNN's training seconds that counts as equal
# a time-only final training still needs an epoch count for Keras: one the clock ends first
EQUAL_TIME_EPOCH_CAP = 1000
FC = "fc"  # the family the equal_time stage trains again
STATUS = "status.json"  # the equal_time stage's record: whether it ran, with what minutes


def augmentation_of(hyperparameters: dict) -> dict:
    """The augmentation a configuration trained with (its aug_* values)."""
    return {k: v for k, v in sorted(hyperparameters.items()) if k.startswith("aug_")}


def describe_augmentation(augmentation: dict) -> str:
    parts = []
    if augmentation.get("aug_flip"):
        parts.append("alternating flip" if augmentation.get("aug_alternate_flip") else "flip")
    for key, label, unit in (("aug_crop", "pad-crop", " px"), ("aug_rotation", "rotation", "°"),
                             ("aug_erasing", "erasing", ""), ("aug_brightness", "brightness", ""),
                             ("aug_contrast", "contrast", ""),
                             ("aug_saturation", "saturation", "")):
        if augmentation.get(key):
            parts.append(f"{label} {augmentation[key]:g}{unit}")
    return ", ".join(parts) or "none"


def training_facts(best: dict) -> dict:
    """What one family's final training had (best_hparams.json): its rule, minutes, epochs,
    images seen and augmentation."""
    final = best.get("final", {})
    batch = best.get("hyperparameters", {}).get("batch_size")
    steps = final.get("steps")
    seconds = final.get("trained_seconds", final.get("seconds", 0.0))
    return {"budget_rule": best.get("budget_rule", "equal_epochs"),
            "train_seconds": round(seconds, 3),
            "train_minutes": round(seconds / 60, 2),
            "train_epochs": final.get("epochs_run"),
            "images_seen": int(steps * batch) if steps and batch else None,
            "augmentation": augmentation_of(best.get("hyperparameters", {}))}


def footing(cnn: dict, fc: dict) -> dict:
    """How even a CNN - FC comparison was (``training_facts`` of each): the FC's share of the
    CNN's training time, whether the augmentation was the same, and so whether the gap may be
    credited to the architecture."""
    # from seconds: a tiny run's minutes round to zero
    ratio = fc["train_seconds"] / cnn["train_seconds"] if cnn["train_seconds"] else 0.0
    same = cnn["augmentation"] == fc["augmentation"]
    return {"budget_rule": fc["budget_rule"], "fc_time_share": round(ratio, 3),
            "same_augmentation": same,
            "architecture_claim": bool(ratio >= TIME_TOLERANCE and same)}


def equal_time_budget(cnn_best: dict, search_minutes_fallback: float) -> dict:
    """The FC's budgets under ``equal_time``, from the CNN's tune stage (best_hparams.json):
    the CNN's measured search minutes (its budget where an older file lacks the measurement)
    and final-training minutes, and its augmentation."""
    final = cnn_best.get("final") or {}
    seconds = final.get("trained_seconds", final.get("seconds"))
    if not seconds:
        raise ValueError("the CNN's best_hparams.json has no final training time")
    search_seconds = cnn_best.get("search_seconds")
    return {"budget_minutes": search_seconds / 60 if search_seconds else
            search_minutes_fallback,
            "final_budget_minutes": seconds / 60,
            "augmentation": augmentation_of(cnn_best.get("hyperparameters", {}))}


def equal_time_model(folder: Path) -> tuple[Path, Path] | None:
    """The equal-time FC's model and best_hparams.json, when the equal_time stage trained one
    into ``folder``."""
    status_file = Path(folder) / STATUS
    if not status_file.is_file() or not store.read_json(status_file).get("ran"):
        return None
    results = Path(folder) / "results" / FC
    return Path(folder) / "models" / FC / "best.keras", results / "best_hparams.json"
