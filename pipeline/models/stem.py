"""The front every model shares: uint8 pixels in, augmentation (training only), normalisation."""

from __future__ import annotations

import keras
from keras import layers

from pipeline.augment import build_augmentation


def input_stem(meta: dict, policy, seed: int | None = None):
    """Returns (inputs, x): x is the augmented (in training) and normalised image batch.
    ``meta`` may carry ``train_steps_per_epoch`` (the hypermodel adds it), which paces an
    alternating flip."""
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    x = build_augmentation(policy, seed=seed,
                           steps_per_epoch=meta.get("train_steps_per_epoch", 1))(inputs)
    mean = [255.0 * m for m in meta["mean"]]
    variance = [(255.0 * s) ** 2 for s in meta["std"]]
    x = layers.Normalization(mean=mean, variance=variance, name="normalize")(x)
    return inputs, x
