"""Reading what the tune stages wrote, as tables the report and its figures share.

``trials.csv`` holds one row per trial with every hyperparameter as ``hp.<name>``;
``lessons`` maps those onto the course's lessons (optimizer, learning rate, schedule, batch norm,
activation, depth, dropout, augmentation), so both families line up in the same columns.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import DataError
from pipeline.families import FAMILIES

FAMILY_LABELS = {name: family.label for name, family in FAMILIES.items()}
LESSONS = ["optimizer", "learning_rate", "schedule", "batch_norm", "activation", "depth",
           "dropout", "augmentation"]


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found; run the tune stages first (dvc repro)")
    try:
        return pd.read_csv(path, dtype={"trial_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({exc})") from None


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that finished with a score, best first."""
    done = trials[(trials["status"] == "COMPLETED") & trials["score"].notna()]
    return done.sort_values("score", ascending=False)


def lessons(trials: pd.DataFrame, family: str) -> pd.DataFrame:
    """One column per lesson, derived from the hp.* columns (missing ones left out)."""
    hp = {c[3:]: trials[c] for c in trials.columns if c.startswith("hp.")}
    out = pd.DataFrame(index=trials.index)
    for name in ("optimizer", "learning_rate", "schedule", "batch_norm", "activation",
                 "dropout"):
        if name in hp:  # floats rounded: 0.1 * 3 is not 0.3 once it has been through a CSV
            out[name] = hp[name].round(6) if pd.api.types.is_float_dtype(hp[name]) \
                else hp[name]
    if family == "cnn" and {"stages", "convs_per_stage"} <= hp.keys():
        # conv layers, stem included: each stage's entry conv, plus the block convs of the
        # stages that have one (all of them, or the first and last)
        blocks = hp["stages"].clip(upper=2)
        if "block_stages" in hp:
            blocks = blocks.where(hp["block_stages"] != "all", hp["stages"])
        out["depth"] = 1 + hp["stages"] + (hp["convs_per_stage"] - 1) * blocks
    elif "layers" in hp:
        out["depth"] = hp["layers"]  # hidden dense layers
    out["augmentation"] = _augmentation_labels(hp, len(trials))
    return out[[c for c in LESSONS if c in out.columns]]


def _augmentation_labels(hp: dict, n: int) -> pd.Series:
    parts = []
    for name, label in (("aug_flip", "flip"), ("aug_crop", "crop"), ("aug_erasing", "erase"),
                        ("aug_rotation", "rotate")):
        if name in hp:
            parts.append(hp[name].map(lambda v, lab=label: lab if _is_on(v) else ""))
    if not parts:
        return pd.Series(["policy"] * n)
    joined = pd.concat(parts, axis=1).apply(lambda row: "+".join(p for p in row if p), axis=1)
    return joined.replace("", "none")


def _is_on(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "0.0", "false")
    return bool(value) and not pd.isna(value)
