"""Parse CIFAR files (original python layout) into uint8 image arrays, checking every file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.catalog import DatasetSpec
from pipeline.data.safe_pickle import load_pickle
from pipeline.errors import DataError

IMAGE_SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3


@dataclass
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8, channels last
    labels: np.ndarray  # (N,) uint8


def check_file_size(path: Path, spec: DatasetSpec) -> None:
    """Refuse a dataset file larger than a genuine one can be, before reading it into memory."""
    size, limit = path.stat().st_size, spec.max_bytes(path.name)
    if size > limit:
        raise DataError(f"{path}: {size:,} bytes, more than a {spec.title} file can hold "
                        f"({limit:,}); not read")


def load_class_names(folder: Path, spec: DatasetSpec, label_mode: str) -> list[str]:
    path = folder / spec.meta_file
    check_file_size(path, spec)
    meta = load_pickle(path)
    _, names_key = spec.label_keys[label_mode]
    names = meta.get(names_key)
    expected = spec.num_classes(label_mode)
    if not isinstance(names, list) or len(names) != expected:
        found = len(names) if isinstance(names, list) else "no list"
        raise DataError(f"{path}: '{names_key}' should list {expected} class names, found {found}")
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]


def load_files(folder: Path, names: tuple[str, ...], spec: DatasetSpec, label_mode: str) -> Split:
    """Load and concatenate batch files, in order."""
    parts = [_load_batch(folder / name, spec, label_mode) for name in names]
    return Split(
        images=np.concatenate([part.images for part in parts]),
        labels=np.concatenate([part.labels for part in parts]),
    )


def _load_batch(path: Path, spec: DatasetSpec, label_mode: str) -> Split:
    check_file_size(path, spec)
    batch = load_pickle(path)
    label_key, _ = spec.label_keys[label_mode]
    for key in ("data", label_key):
        if key not in batch:
            raise DataError(f"{path}: missing key '{key}' (is this a {spec.title} file?)")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' should be a uint8 array, found {kind}")
    if data.ndim != 2 or data.shape[1] != PIXELS:
        raise DataError(f"{path}: 'data' should have shape (N, {PIXELS}), found {data.shape}")
    labels = np.asarray(batch[label_key])
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for "
                        f"{data.shape[0]} images")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels should be integers, found {labels.dtype}")
    num_classes = spec.num_classes(label_mode)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels should lie in 0..{num_classes - 1}, found "
                        f"{labels.min()}..{labels.max()}")
    # The original layout is 1024 red, 1024 green, 1024 blue values per image, row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), labels.astype(np.uint8))


def check_class_counts(split: Split, num_classes: int, what: str, minimum: int = 1) -> np.ndarray:
    """Every class must be present (at least ``minimum`` times); returns counts per class."""
    counts = np.bincount(split.labels, minlength=num_classes)
    short = np.flatnonzero(counts < minimum)
    if short.size:
        raise DataError(
            f"{what}: class(es) {', '.join(map(str, short[:10].tolist()))} have fewer than "
            f"{minimum} images (counts {counts[short[:10]].tolist()})"
        )
    return counts
