"""The CNN family: a stem conv, then stages of convs between max-pooling layers.

Stage s has width base_filters * filter_growth**(s+1): one conv changes the width, max-pooling
halves the resolution, then the stage's remaining convs (its block), optionally with a residual
connection around them. ``block_stages: ends`` gives blocks to the first and last stage only.
With 3 stages of 3 convs, blocks at the ends, base 16, growth 2, batch norm, a global max-pool
head and logits scaled by 0.125, this is the ResNet-9 (Myrtle) layout at width 16.
"""

from __future__ import annotations

import keras
from keras import layers

from pipeline.models.stem import input_stem
from pipeline.models.whitening import whitening_kernel
from pipeline.training import coupled_l2

CNN_DEFAULTS = {
    "stages": 3,
    "convs_per_stage": 3,
    "block_stages": "ends",  # all | ends: which stages get the convs after pooling
    "base_filters": 16,
    "filter_growth": 2.0,
    "kernel_size": 3,
    "residual": True,
    "batch_norm": True,
    "activation": "relu",  # relu | tanh | sigmoid (the vanishing-gradient lesson) | gelu
    "dropout": 0.0,
    "head": "global_max",  # flatten | global_avg | global_max
    "dense_units": 0,  # 0: straight to the classifier
    "logit_scale": 0.125,  # keeps the first losses small at high learning rates
    # a frozen 2x2 patch-whitening layer (pipeline/models/whitening.py) as the stem conv;
    # needs meta["patch_covariance"] (the search adds it from its training images)
    "whitening": False,
    # Keras' default; a search space gives nets without batch norm he_normal, which keeps a
    # ReLU stack's signal from shrinking layer by layer, so they train in a trial's few steps
    "conv_init": "glorot_uniform",
}


def _conv(x, filters: int, cfg: dict, name: str):
    x = layers.Conv2D(filters, cfg["kernel_size"], padding="same",
                      use_bias=not cfg["batch_norm"], kernel_regularizer=coupled_l2(cfg),
                      kernel_initializer=cfg.get("conv_init", "glorot_uniform"),
                      name=f"{name}_conv")(x)
    if cfg["batch_norm"]:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation(cfg["activation"], name=f"{name}_act")(x)


# head name -> the layer that turns the last feature map into a vector; the names a space
# file may use are this mapping's keys (pipeline/search/hypermodel.py checks them at load)
HEAD_LAYERS = {
    "flatten": lambda: layers.Flatten(name="flatten"),
    "global_avg": lambda: layers.GlobalAveragePooling2D(name="global_pool"),
    "global_max": lambda: layers.GlobalMaxPooling2D(name="global_pool"),
}
HEADS = tuple(HEAD_LAYERS)
BLOCK_STAGES = ("all", "ends")


def build_cnn(cfg: dict, num_classes: int, meta: dict, policy, seed=None):
    # a trial with an unknown name fails, naming the value (not a silent other layout)
    if cfg["block_stages"] not in BLOCK_STAGES:
        raise ValueError(f"block_stages must be all or ends, not {cfg['block_stages']!r}")
    if cfg["head"] not in HEAD_LAYERS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {cfg['head']!r}")
    inputs, x = input_stem(meta, policy, seed)
    whiten = None
    if cfg.get("whitening"):  # configurations saved before it existed lack the key
        if "patch_covariance" not in meta:
            raise ValueError("whitening needs the training patches' covariance "
                             "(meta['patch_covariance'])")
        kernel = whitening_kernel(meta["patch_covariance"])
        whiten = layers.Conv2D(kernel.shape[-1], 2, padding="valid", use_bias=False,
                               trainable=False, name="stem_whiten")
        x = layers.Activation(cfg["activation"], name="stem_act")(whiten(x))
    else:
        x = _conv(x, cfg["base_filters"], cfg, "stem")
    for stage in range(cfg["stages"]):
        width = int(round(cfg["base_filters"] * cfg["filter_growth"] ** (stage + 1)))
        x = _conv(x, width, cfg, f"s{stage + 1}_in")
        x = layers.MaxPooling2D(2, name=f"s{stage + 1}_pool")(x)
        has_block = cfg["block_stages"] == "all" or stage in (0, cfg["stages"] - 1)
        if cfg["convs_per_stage"] > 1 and has_block:
            y = x
            for index in range(cfg["convs_per_stage"] - 1):
                y = _conv(y, width, cfg, f"s{stage + 1}_c{index + 1}")
            x = layers.Add(name=f"s{stage + 1}_residual")([x, y]) if cfg["residual"] else y
    x = HEAD_LAYERS[cfg["head"]]()(x)
    if cfg["dropout"]:
        x = layers.Dropout(cfg["dropout"], name="head_dropout")(x)
    if cfg["dense_units"]:
        x = layers.Dense(cfg["dense_units"], activation=cfg["activation"],
                         kernel_regularizer=coupled_l2(cfg), name="head_dense")(x)
        if cfg["dropout"]:
            x = layers.Dropout(cfg["dropout"], name="dense_dropout")(x)
    # logits stay float32 under mixed precision
    x = layers.Dense(num_classes, dtype="float32", kernel_regularizer=coupled_l2(cfg),
                     name="logits")(x)
    if cfg["logit_scale"] != 1:
        x = layers.Rescaling(cfg["logit_scale"], dtype="float32", name="logit_scale")(x)
    model = keras.Model(inputs, x, name="cnn")
    if whiten is not None:
        whiten.set_weights([kernel])
    return model
