"""A frozen first layer that whitens 2x2 pixel patches (the airbench stem): its filters are the
eigenvectors of the training patches' covariance, scaled to unit variance, each with its
negative (so a ReLU after it keeps both signs). The network starts from decorrelated inputs
and spends none of its short budget learning them."""

from __future__ import annotations

import numpy as np

PATCH = 2  # pixels per side of a whitened patch
EPSILON = 5e-4  # added to each eigenvalue: keeps near-constant directions from blowing up


def patch_covariance(images: np.ndarray, meta: dict, limit: int = 2000) -> list[list[float]]:
    """The covariance of the normalised 2x2x3 patches of the first ``limit`` training images
    (12 x 12, as lists so it can ride in a model's meta)."""
    mean, std = np.asarray(meta["mean"], "float32"), np.asarray(meta["std"], "float32")
    x = (np.asarray(images[:limit], "float32") / 255 - mean) / std
    windows = np.lib.stride_tricks.sliding_window_view(x, (PATCH, PATCH), axis=(1, 2))
    # (n, 31, 31, 3, 2, 2) -> one row per patch, ordered (row, column, channel) like a kernel
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, PATCH * PATCH * 3)
    return np.cov(patches, rowvar=False).tolist()


def whitening_kernel(covariance) -> np.ndarray:
    """A Conv2D kernel (2, 2, 3, 24): the whitening filters and their negatives."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, "float64"))
    filters = vectors / np.sqrt(np.maximum(values, 0.0) + EPSILON)  # one filter per column
    kernel = filters.T.reshape(-1, PATCH, PATCH, 3).transpose(1, 2, 3, 0)
    return np.concatenate([kernel, -kernel], axis=-1).astype("float32")
