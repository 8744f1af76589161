"""The fully connected baseline: the same stem and recipe, no convolution or pooling."""

from __future__ import annotations

import keras
from keras import layers

from pipeline.models.stem import input_stem
from pipeline.training import coupled_l2

FC_DEFAULTS = {
    "layers": 3,
    "units": 1024,  # width of the first hidden layer
    "shrink": 0.5,  # each following layer is this times narrower
    "batch_norm": True,
    "activation": "relu",
    "dropout": 0.1,
}


def build_fc(cfg: dict, num_classes: int, meta: dict, policy, seed=None):
    inputs, x = input_stem(meta, policy, seed)
    x = layers.Flatten(name="flatten")(x)
    width = float(cfg["units"])
    for index in range(cfg["layers"]):
        x = layers.Dense(max(8, int(round(width))), use_bias=not cfg["batch_norm"],
                         kernel_regularizer=coupled_l2(cfg), name=f"dense{index + 1}")(x)
        if cfg["batch_norm"]:
            x = layers.BatchNormalization(name=f"bn{index + 1}")(x)
        x = layers.Activation(cfg["activation"], name=f"act{index + 1}")(x)
        if cfg["dropout"]:
            x = layers.Dropout(cfg["dropout"], name=f"dropout{index + 1}")(x)
        width *= cfg["shrink"]
    # logits stay float32 under mixed precision
    x = layers.Dense(num_classes, dtype="float32", kernel_regularizer=coupled_l2(cfg),
                     name="logits")(x)
    return keras.Model(inputs, x, name="fc")
