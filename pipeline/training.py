"""The training recipe shared by every family: optimizer, loss, budget-driven learning-rate
schedule, callbacks.

Hyperparameter names below are what the space files may search or fix; anything a space leaves
out takes the default here (augmentation defaults come from params.yaml).

Schedules are functions of *progress*, the share of the training budget spent, not of a fixed
step count: a run's budget may be epochs, seconds or both (whichever ends first), and its
schedule always ends exactly where the run ends (Li, Yumer & Ramanan, "Budgeted Training",
ICLR 2020). A short search trial is then a complete, annealed run, so its score says what the
configuration reaches within that budget.
"""

from __future__ import annotations

import hashlib
import math
import time

import keras
import numpy as np
from keras import ops

from pipeline.config import AugmentationParams

RECIPE_DEFAULTS = {
    "optimizer": "nesterov",  # sgd | momentum | nesterov | adam | adamw | rmsprop
    "learning_rate": 0.2,  # peak learning rate
    "momentum": 0.9,  # SGD with momentum / Nesterov only
    "schedule": "one_cycle",  # see SCHEDULES
    "warmup_fraction": 0.2,  # share of the budget spent warming up (one_cycle, warmup_cosine)
    "batch_size": 256,
    # each step multiplies a weight by (1 - learning_rate_now * weight_decay): Keras' decoupled
    # decay, or for adam an L2 term (coupled_l2); biases and batch-norm scales/offsets are left out
    "weight_decay": 5e-4,
    "label_smoothing": 0.1,  # share of the target spread evenly over the classes
    # 0: off; m: the model ends (and is validated) with an exponential moving average of its
    # weights, each step average = m * average + (1 - m) * weights (Polyak averaging)
    "ema_momentum": 0.0,
    # the peak rate of batch norm's offsets (beta) over every other weight's: the fast CIFAR
    # recipes (airbench, hlb-CIFAR10) train them 64 times faster; 1: one rate for all
    "bn_bias_lr_multiplier": 1.0,
}
AUGMENTATION_HPS = {  # hyperparameter name -> field of AugmentationParams
    "aug_flip": "flip", "aug_crop": "crop_padding", "aug_rotation": "rotation",
    "aug_brightness": "brightness", "aug_contrast": "contrast",
    "aug_saturation": "saturation", "aug_erasing": "erasing",
    "aug_alternate_flip": "alternate_flip",
}
NO_DECAY = ["bias", "gamma", "beta"]  # variable names excluded from weight decay

# Units a search can draw in, the same for every optimizer (resolve_units turns them into the
# rate and decay above): a draw near 1x trains whatever the optimizer, where one rate range for
# all would give Adam SGD's rates and SGD Adam's. SGD-family reference: the CNN recipe's peak;
# Adam-family: the FC recipe's, chosen on validation (bench/README.md, "Equal care").
REFERENCE_RATES = {"sgd": 0.2, "momentum": 0.2, "nesterov": 0.2, "adam": 0.005,
                   "adamw": 0.005, "rmsprop": 0.001}
# Batch norm is what lets SGD take 0.2 (Ioffe & Szegedy 2015): without it the SGD family's
# reference is a quarter of that, the best of 0.02, 0.05 and 0.2 for the CNN without batch
# norm after one search epoch (bench/README.md, "Informative trials"); Adam's is unchanged
REFERENCE_RATES_WITHOUT_BATCH_NORM = {**REFERENCE_RATES, "sgd": 0.05, "momentum": 0.05,
                                      "nesterov": 0.05}
UNIT_HPS = {
    # peak learning rate = REFERENCE_RATES[optimizer] x lr_multiplier
    "lr_multiplier",
    # share of each weight taken away per step at the peak rate (the schedule scales it down
    # with the rate): the CNN recipe's SGD at 0.2 with weight_decay 5e-4 takes 1e-4. Through
    # the gradient for adam (L2), beside it for every other optimizer (decoupled)
    "decay_per_step",
}


def resolve_units(cfg: dict) -> dict:
    """The configuration with ``learning_rate`` and ``weight_decay`` worked out from the
    optimizer-independent units (UNIT_HPS) where it has them."""
    cfg = dict(cfg)
    if cfg.get("lr_multiplier") is not None:
        rates = (REFERENCE_RATES if cfg.get("batch_norm", True)
                 else REFERENCE_RATES_WITHOUT_BATCH_NORM)
        cfg["learning_rate"] = rates[cfg["optimizer"]] * cfg["lr_multiplier"]
    if cfg.get("decay_per_step") is not None:
        cfg["weight_decay"] = cfg["decay_per_step"] / cfg["learning_rate"]
    return cfg


def coupled_l2(cfg: dict):
    """Adam's weight decay as L2 in the loss (the gradient carries ``weight_decay`` x w, so the
    moment estimates rescale it): what "Adam with weight decay" meant before AdamW, and a
    genuinely different optimizer from it (Loshchilov & Hutter, ICLR 2019). A kernel
    regularizer for the model builders; None for every other optimizer (decoupled, in
    make_optimizer)."""
    if cfg.get("optimizer") != "adam" or not cfg.get("weight_decay"):
        return None
    return keras.regularizers.L2(cfg["weight_decay"] / 2)  # Keras's L2 is c * sum(w^2)


def augmentation_policy(cfg: dict) -> AugmentationParams:
    """The augmentation a configuration trains with: its aug_* values over the policy's
    defaults."""
    return AugmentationParams(**{field: cfg[hp] for hp, field in AUGMENTATION_HPS.items()
                                 if hp in cfg})


def _warmup_then(decay):
    def shape(progress: float, warmup: float) -> float:
        if warmup > 0 and progress < warmup:
            return progress / warmup
        return decay((progress - warmup) / (1 - warmup) if warmup < 1 else 1.0)
    return shape


# progress in [0, 1] -> share of the peak learning rate
SCHEDULES = {
    "constant": lambda p, w: 1.0,
    "linear": lambda p, w: 1.0 - p,  # linear decay to zero: Budgeted Training's default
    "step": lambda p, w: 1.0 if p < 0.5 else (0.1 if p < 0.75 else 0.01),
    "exponential": lambda p, w: 0.01 ** p,  # down to 1% of the peak at the end
    "cosine": lambda p, w: 0.5 * (1 + math.cos(math.pi * p)),
    "warmup_cosine": _warmup_then(lambda q: 0.5 * (1 + math.cos(math.pi * q))),
    "one_cycle": _warmup_then(lambda q: 1.0 - q),  # linear warm-up, linear decay to zero
}


def schedule_factor(name: str, progress: float, warmup_fraction: float = 0.2) -> float:
    """The share of the peak learning rate at ``progress`` (0: start, 1: end of the budget)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}")
    return float(SCHEDULES[name](min(max(progress, 0.0), 1.0), warmup_fraction))


def make_optimizer(cfg: dict):
    """The optimizer, starting at the schedule's first rate (BudgetSchedule moves it)."""
    lr = cfg["learning_rate"] * schedule_factor(cfg["schedule"], 0.0,
                                                cfg.get("warmup_fraction", 0.2))
    decay = cfg["weight_decay"] or None
    ema = cfg.get("ema_momentum", 0.0)
    options = {"use_ema": True, "ema_momentum": ema} if ema else {}
    name = cfg["optimizer"]
    if name in ("sgd", "momentum", "nesterov"):
        momentum = 0.0 if name == "sgd" else cfg["momentum"]
        kind, options = keras.optimizers.SGD, {**options, "momentum": momentum,
                                               "nesterov": name == "nesterov",
                                               "weight_decay": decay}
    elif name == "adam":  # its decay is coupled: coupled_l2 in the model
        kind, decay = keras.optimizers.Adam, None
    elif name == "adamw":
        kind, options = keras.optimizers.AdamW, {**options, "weight_decay": decay or 0.0}
    elif name == "rmsprop":
        kind, options = keras.optimizers.RMSprop, {**options, "weight_decay": decay}
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    offset_rate = float(cfg.get("bn_bias_lr_multiplier", 1.0))
    if offset_rate != 1.0:
        kind, options = WITH_OFFSET_RATE[kind], {**options, "offset_rate": offset_rate}
    optimizer = kind(lr, **options)
    if decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


class OffsetRateMixin:
    """An optimizer whose updates of normalisation offsets (batch norm's ``beta``) use
    ``offset_rate`` times the learning rate of every other variable. Keras optimizers have one
    rate for all variables; ``update_step`` is the per-variable step every Keras optimizer
    implements, on every backend, so scaling its rate there is the per-group rate of the fast
    CIFAR recipes, whatever the optimizer. Offsets take no weight decay here (NO_DECAY)."""

    def __init__(self, *args, offset_rate: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.offset_rate = float(offset_rate)

    def build(self, variables):
        super().build(variables)
        self._offset_keys = {self._var_key(v) for v in variables if v.name == "beta"}

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) in self._offset_keys:
            learning_rate = learning_rate * self.offset_rate
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "offset_rate": self.offset_rate}


def _with_offset_rate(kind):
    named = type(f"{kind.__name__}WithOffsetRate", (OffsetRateMixin, kind),
                 {"__doc__": f"Keras' {kind.__name__} with OffsetRateMixin."})
    return keras.saving.register_keras_serializable(package="cifar_automl")(named)


WITH_OFFSET_RATE = {kind: _with_offset_rate(kind) for kind in (
    keras.optimizers.SGD, keras.optimizers.Adam, keras.optimizers.AdamW,
    keras.optimizers.RMSprop)}


@keras.saving.register_keras_serializable(package="cifar_automl")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits against integer labels with label smoothing (Keras' sparse
    cross-entropy has none): the target puts 1 - s on the label and s / K on every class."""

    def __init__(self, label_smoothing: float = 0.0, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        labels = ops.cast(ops.reshape(y_true, (-1, 1)), "int32")
        nll = -ops.take_along_axis(log_probs, labels, axis=-1)[:, 0]
        if not self.label_smoothing:
            return nll
        return (1 - self.label_smoothing) * nll - self.label_smoothing * ops.mean(log_probs,
                                                                                  axis=-1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def compile_model(model, cfg: dict):
    model.compile(
        optimizer=make_optimizer(cfg),
        loss=SmoothedSparseCrossentropy(cfg.get("label_smoothing", 0.0)),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


class SwapAveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras's swap of the averaged weights into the model at each epoch's end, so validation,
    early stopping's best weights and KerasTuner's checkpoints all see the average. Keras keeps
    the average at the end only when a run reaches its last planned epoch; a run its budget
    ends sooner keeps it too."""

    def __init__(self):
        super().__init__(swap_on_epoch=True)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.model.stop_training and epoch != self.params["epochs"] - 1:
            self._finalize_ema_values()


def averaging_callbacks(cfg: dict) -> list:
    """The callbacks weight averaging needs; they must come before early stopping's."""
    return [SwapAveragedWeights()] if cfg.get("ema_momentum") else []


# batch norm's statistics, re-estimated before a validation on the first training images
REFRESH_IMAGES, REFRESH_BATCH = 512, 256


def batch_norm_layers(model) -> list:
    return [layer for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def refresh_batch_norm(model, images: np.ndarray) -> int:
    """Set every batch-norm layer's moving statistics to their mean over ``images`` at the
    current weights (forward passes in training mode, the running average's momentum set so
    that each batch counts equally), as SWA's batch-norm update does; returns the layers
    refreshed. Why: Keras' moving averages (momentum 0.99) keep 0.99^94 = 39% of their initial
    values after 94 steps, so inference would use statistics that match no weights the net
    had (a lesson's batch-norm net at 37% training accuracy scored 10% on validation)."""
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    kept = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(images), REFRESH_BATCH)):
            for layer in layers:  # the k-th batch weighs 1/(k+1): an equal-weight mean
                layer.momentum = k / (k + 1)
            model(np.asarray(images[start:start + REFRESH_BATCH], dtype="float32"),
                  training=True)
    finally:
        for layer, momentum in zip(layers, kept, strict=True):
            layer.momentum = momentum
    return len(layers)


class BatchNormRefresh(keras.callbacks.Callback):
    """``refresh_batch_norm`` before a fit's validations (Keras calls ``on_test_begin``
    then), so validation scores, early stopping's choice and the predictions after training
    use statistics of the weights being scored. ``stale_below``: only while the moving
    averages still hold more than this share of their initial values (momentum^steps); later
    they average far more images than the refresh's 512 and are kept. None: always."""

    def __init__(self, images: np.ndarray, stale_below: float | None = None):
        super().__init__()
        self.images, self.stale_below, self.steps = images, stale_below, 0
        self.refreshed = 0  # validations it refreshed (the tests read it)

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_test_begin(self, logs=None):
        layers = batch_norm_layers(self.model)
        if not layers or (self.stale_below is not None and
                          max(layer.momentum for layer in layers) ** self.steps
                          <= self.stale_below):
            return
        refresh_batch_norm(self.model, self.images)
        self.refreshed += 1


def current_learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class BudgetSchedule(keras.callbacks.Callback):
    """Drives the learning rate by the share of the budget spent and ends training when it is
    spent. The budget is ``steps`` optimizer steps, ``seconds`` of training, or both (whichever
    ends first). Training time starts after the first batch (graph tracing) and leaves out
    validation, so the same budget buys the same training whatever the validation set.

    The rate is set before a batch whenever it moved by more than ``tolerance`` of the peak
    (on JAX every setting syncs the model's state, so not on every step).
    """

    def __init__(self, schedule: str, peak: float, warmup_fraction: float = 0.2,
                 steps: int | None = None, seconds: float | None = None,
                 tolerance: float = 0.002):
        super().__init__()
        if steps is None and seconds is None:
            raise ValueError("a budget needs steps, seconds or both")
        self.schedule, self.peak, self.warmup = schedule, peak, warmup_fraction
        self.total_steps, self.total_seconds, self.tolerance = steps, seconds, tolerance
        self.steps, self.trained_seconds, self.ended_by = 0, 0.0, None
        self._clock = self._eval_started = None
        self._eval_seconds = 0.0
        self._lr_set = None

    @property
    def progress(self) -> float:
        by_steps = self.steps / self.total_steps if self.total_steps else 0.0
        by_time = self.trained_seconds / self.total_seconds if self.total_seconds else 0.0
        return min(1.0, max(by_steps, by_time))

    def on_train_batch_begin(self, batch, logs=None):
        lr = self.peak * schedule_factor(self.schedule, self.progress, self.warmup)
        if self._lr_set is None or abs(lr - self._lr_set) > self.tolerance * self.peak:
            self.model.optimizer.learning_rate = lr
            self._lr_set = lr

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        now = time.perf_counter()
        if self._clock is None:
            self._clock = now  # the first batch traced the graph: the clock starts after it
        self.trained_seconds = now - self._clock - self._eval_seconds
        if self.progress >= 1.0:
            by_steps = self.total_steps is not None and self.steps >= self.total_steps
            self.ended_by = "steps" if by_steps else "time"
            self.model.stop_training = True

    def on_test_begin(self, logs=None):
        self._eval_started = time.perf_counter()

    def on_test_end(self, logs=None):
        if self._eval_started is not None and self._clock is not None:
            self._eval_seconds += time.perf_counter() - self._eval_started
        self._eval_started = None

    def shorten_to(self, steps: int) -> None:
        """A step budget decided mid-run (a search trial's measured cost, search/cost.py): the
        rate's schedule goes on over the new total; never fewer steps than are done, and the
        run ends now if they fill it."""
        self.total_steps = max(self.steps, steps)
        if self.steps >= self.total_steps:
            self.ended_by = "steps"
            self.model.stop_training = True

    def summary(self) -> dict:
        return {"schedule_progress": round(self.progress, 4), "steps": self.steps,
                "trained_seconds": round(self.trained_seconds, 2),
                "ended_by": self.ended_by or "stopped early"}


def budget_schedule(cfg: dict, steps: int | None, seconds: float | None) -> BudgetSchedule:
    return BudgetSchedule(cfg["schedule"], cfg["learning_rate"],
                          cfg.get("warmup_fraction", 0.2), steps=steps, seconds=seconds)


def trial_seed(seed: int, trial_id: str) -> int:
    """The seed of one trial's weights and augmentation: a function of the search seed and the
    trial alone, so a resumed search builds every trial as an uninterrupted one would."""
    digest = hashlib.sha256(f"{seed}/{trial_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


def weights_digest(model) -> str:
    """A short fingerprint of a model's weights (the same initial weights, the same digest)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


class InitialWeights(keras.callbacks.Callback):
    """Records the digest of the weights training starts from."""

    digest: str | None = None

    def on_train_begin(self, logs=None):
        self.digest = weights_digest(self.model)


def diverged(history) -> bool:
    """Whether a ``fit`` history holds a non-finite loss: Keras's ``TerminateOnNaN`` stopped it
    mid-epoch, and that epoch's mean loss is NaN or infinite."""
    losses = getattr(history, "history", history or {}).get("loss", [])
    return any(not math.isfinite(float(v)) for v in losses)


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
    """Stops when the search's own objective, validation accuracy, stops improving."""
    return keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                         restore_best_weights=True)
