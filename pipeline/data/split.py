"""Deterministic stratified splits and per-class subsets."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, train_per_class: int | None = None,
    holdout_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, validation, holdout), the same fractions of every class in
    validation and holdout.

    Each class is shuffled with a generator seeded from ``seed``; its first share goes to
    validation, the next to the holdout, and the training subset (``train_per_class``) is taken
    from the rest, so a smaller subset is a prefix of a larger one and neither validation nor
    the holdout depends on the subset (validation does not depend on the holdout either).
    """
    rng = np.random.default_rng(seed)
    train, val, holdout = [], [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = max(1, round(len(members) * val_fraction))
        n_holdout = round(len(members) * holdout_fraction)
        val.append(members[:n_val])
        holdout.append(members[n_val:n_val + n_holdout])
        train.append(members[n_val + n_holdout:][:train_per_class])
    return tuple(np.sort(np.concatenate(part)) for part in (train, val, holdout))


def per_class_subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``per_class`` images of every class (all when None)."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == cls))[:per_class]
              for cls in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def channel_mean_std(images: np.ndarray, chunk: int = 5000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixel values scaled to [0, 1], in float64, chunk by chunk."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].reshape(-1, 3).astype(np.float64)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = len(images) * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return (mean / 255).tolist(), (std / 255).tolist()
