"""The seeds of a family's final trainings: which ones, and the manifest of the replicate
stage's models (``models/<family>/seeds/seeds.json``) that evaluate reads."""

from __future__ import annotations

from pathlib import Path

from pipeline.data import store
from pipeline.errors import DataError

MANIFEST = "seeds.json"


def replicate_seeds(first_seed: int, count: int) -> list[int]:
    """The seeds of the trainings after the first (which the tune stage ran)."""
    return [first_seed + i for i in range(1, count)]


def seed_models(models_dir: Path, family: str, hyperparameters: dict) -> list[tuple[int, Path]]:
    """(seed, model file) of each replicate the manifest lists (none without one); a one-line
    error when they were trained for another configuration than ``hyperparameters``."""
    folder = models_dir / family / "seeds"
    if not (folder / MANIFEST).is_file():
        return []
    manifest = store.read_json(folder / MANIFEST, "the replicate stage")
    if manifest["seeds"] and manifest.get("hyperparameters") != hyperparameters:
        raise DataError(f"{folder}: trained for another configuration than the tune stage's "
                        "best; run the replicate stage again (dvc repro)")
    return [(entry["seed"], folder / entry["model"]) for entry in manifest["seeds"]]


def first_seed(models_dir: Path, family: str) -> int | None:
    """The seed of the tune stage's final training, as the manifest records it."""
    path = models_dir / family / "seeds" / MANIFEST
    if not path.is_file():
        return None
    return store.read_json(path, "the replicate stage").get("first_seed")
