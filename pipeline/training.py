"""The training recipe shared by every family: optimizer, learning-rate schedule, callbacks.

Hyperparameter names below are what the space files may search or fix; anything a space leaves
out takes the default here (augmentation defaults come from params.yaml).
"""

from __future__ import annotations

import math
import time

import keras

RECIPE_DEFAULTS = {
    "optimizer": "nesterov",  # sgd | momentum | nesterov | adam | adamw | rmsprop
    "learning_rate": 0.05,  # peak learning rate
    "momentum": 0.9,  # SGD with momentum / Nesterov only
    "schedule": "warmup_cosine",  # constant | step | exponential | cosine | warmup_cosine
    "warmup_fraction": 0.2,  # share of training spent warming up (warmup_cosine)
    "batch_size": 256,
    "weight_decay": 5e-4,  # decoupled, not on biases and batch-norm parameters
}
AUGMENTATION_HPS = {  # hyperparameter name -> field of AugmentationParams
    "aug_flip": "flip", "aug_crop": "crop_padding", "aug_rotation": "rotation",
    "aug_brightness": "brightness", "aug_contrast": "contrast",
    "aug_saturation": "saturation", "aug_erasing": "erasing",
}


def make_schedule(name: str, peak: float, total_steps: int, warmup_fraction: float = 0.2):
    """A learning-rate schedule over ``total_steps`` optimizer steps (a float for constant)."""
    total_steps = max(1, int(total_steps))
    schedules = keras.optimizers.schedules
    if name == "constant":
        return peak
    if name == "step":  # divide by 10 at half and at three quarters of training
        bounds = [max(1, total_steps // 2), max(2, (3 * total_steps) // 4)]
        return schedules.PiecewiseConstantDecay(bounds, [peak, peak / 10, peak / 100])
    if name == "exponential":  # down to 1% of the peak at the end
        return schedules.ExponentialDecay(peak, decay_steps=total_steps, decay_rate=0.01)
    if name == "cosine":
        return schedules.CosineDecay(peak, decay_steps=total_steps)
    if name == "warmup_cosine":
        warmup = max(1, int(total_steps * warmup_fraction))
        return schedules.CosineDecay(0.0, decay_steps=max(1, total_steps - warmup),
                                     warmup_target=peak, warmup_steps=warmup)
    raise ValueError(f"unknown schedule {name!r}")


def make_optimizer(cfg: dict, total_steps: int):
    lr = make_schedule(cfg["schedule"], cfg["learning_rate"], total_steps,
                       cfg.get("warmup_fraction", 0.2))
    decay = cfg["weight_decay"] or None
    name = cfg["optimizer"]
    if name in ("sgd", "momentum", "nesterov"):
        momentum = 0.0 if name == "sgd" else cfg["momentum"]
        optimizer = keras.optimizers.SGD(lr, momentum=momentum, nesterov=name == "nesterov",
                                         weight_decay=decay)
    elif name == "adam":
        optimizer = keras.optimizers.Adam(lr, weight_decay=decay)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(lr, weight_decay=decay or 0.0)
    elif name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(lr, weight_decay=decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    if decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_model(model, cfg: dict, steps_per_epoch: int, epochs: int):
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch * epochs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def current_learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers it (the trial then fails)."""

    def __init__(self):
        super().__init__()
        self.bad_batch = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_batch = batch
            self.model.stop_training = True


class Deadline(keras.callbacks.Callback):
    """Ends training cleanly (after the current batch, with validation) at a wall-clock time."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline = deadline
        self.hit = False

    def on_train_batch_end(self, batch, logs=None):
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.hit = True
            self.model.stop_training = True


def early_stopping(patience: int):
    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                         restore_best_weights=True)
