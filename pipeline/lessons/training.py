"""Training runs of the lessons: the project's model builders and recipe, one call per setting.

A lesson changes one factor of a fixed base configuration (``base_config``) and trains with
the same data, epochs and seed; the budget schedule, optimizers and loss are the pipeline's
own (pipeline/training.py), so what a lesson shows is what the search's trials do.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from pipeline.config import AugmentationParams
from pipeline.data import store
from pipeline.data.split import per_class_subset
from pipeline.families import FAMILIES
from pipeline.training import REFRESH_IMAGES, BatchNormRefresh

# The lessons' CNN: a small plain net of the CNN family (three conv stages of one conv each,
# batch norm, no residual, no augmentation), fast enough on a laptop CPU for the ~200
# trainings of two passes. 8 base filters (25,538 parameters): on 2 cores it trains at 1,250
# images/s against 664 at 16 filters (its 13-layer variant 781 against 337), and reached 40%
# on validation after 3 epochs where 16 filters reached 43% (bench/README.md, "Lessons").
LESSON_CNN = {"stages": 3, "convs_per_stage": 1, "block_stages": "all", "base_filters": 8,
              "filter_growth": 2.0, "kernel_size": 3, "residual": False, "batch_norm": True,
              "activation": "relu", "dropout": 0.0, "head": "global_max", "dense_units": 0,
              "logit_scale": 0.125}
LESSON_RECIPE = {"optimizer": "nesterov", "learning_rate": 0.1, "momentum": 0.9,
                 "schedule": "one_cycle", "warmup_fraction": 0.2, "batch_size": 64,
                 "weight_decay": 5e-4, "label_smoothing": 0.0}
NO_AUGMENTATION = AugmentationParams(flip=False, crop_padding=0)


@dataclass
class LessonData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])


def load_lesson_data(data_dir, train_per_class: int, eval_per_class: int,
                     seed: int) -> LessonData:
    """Per-class subsets of the prepared splits (the same images for every lesson)."""
    splits = {}
    for name, per_class in (("train", train_per_class), ("val", eval_per_class),
                            ("test", eval_per_class)):
        images, labels = store.load_split(data_dir, name)
        index = per_class_subset(np.asarray(labels), per_class, seed)
        splits[name] = (np.asarray(images[index]), np.asarray(labels[index]))
    return LessonData(*splits["train"], *splits["val"], *splits["test"],
                      store.load_meta(data_dir))


def base_config(family: str = "cnn", **changes) -> dict:
    """The lessons' base configuration of a family with ``changes`` applied."""
    own = LESSON_CNN if family == "cnn" else {}
    known = {**FAMILIES[family].defaults, **own, **LESSON_RECIPE}
    unknown = set(changes) - set(known)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    return {**known, **changes}


def build(cfg: dict, data: LessonData, family: str = "cnn",
          augmentation: AugmentationParams = NO_AUGMENTATION, seed: int = 0):
    from pipeline.training import compile_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = compile_model(FAMILIES[family].builder(cfg, data.num_classes, data.meta,
                                                   augmentation, seed=seed), cfg)
    # dozens of short trainings: XLA's compile per model costs more than it saves here (a
    # 4-epoch lesson run on 3,000 images took 12-20 s without, 24-27 s with it, on the CPU)
    model.jit_compile = False
    return model


def fit(cfg: dict, data: LessonData, epochs: int, family: str = "cnn",
        augmentation: AugmentationParams = NO_AUGMENTATION, seed: int = 0,
        callbacks: tuple = (), x_train=None, y_train=None,
        validate_every_epoch: bool = False) -> dict:
    """Train one setting; returns its history, per-step training losses, final scores and the
    model. Validation runs after the last epoch only (a lesson reads its final score; on the
    lessons' CNN each validation with its batch-norm refresh cost 0.3-0.4 s against 1.1-1.3 s
    for an epoch of training), after every epoch with ``validate_every_epoch``. A diverging
    run ends early (NaN guard) and is reported, not raised: it is validated where it
    stopped."""
    from pipeline.training import budget_schedule, diverged

    x = data.x_train if x_train is None else x_train
    y = data.y_train if y_train is None else y_train
    model = build(cfg, data, family, augmentation, seed)
    steps = epochs * math.ceil(len(x) / cfg["batch_size"])
    recorder = StepLosses(len(x), cfg["batch_size"])
    refresh = BatchNormRefresh(x[:REFRESH_IMAGES])  # at a lesson's budget: always
    started = time.perf_counter()
    history = model.fit(x, y, batch_size=cfg["batch_size"], epochs=epochs, verbose=0,
                        validation_data=(data.x_val, data.y_val),
                        validation_freq=1 if validate_every_epoch else epochs,
                        callbacks=[budget_schedule(cfg, steps, None),
                                   keras.callbacks.TerminateOnNaN(), recorder,
                                   refresh, *callbacks])
    curves = {k: [float(v) for v in values] for k, values in history.history.items()}
    did_diverge = diverged(history)
    if "val_accuracy" not in curves:  # stopped before its one validation
        scores = model.evaluate(data.x_val, data.y_val, batch_size=512, verbose=0,
                                return_dict=True, callbacks=[refresh])
        curves.update({f"val_{k}": [float(v)] for k, v in scores.items()})
    last = {k: v[-1] if v else math.nan for k, v in curves.items()}
    return {"model": model, "history": curves, "step_losses": recorder.losses,
            "diverged": did_diverge, "seconds": time.perf_counter() - started,
            "val_accuracy": last.get("val_accuracy", math.nan),
            "train_accuracy": last.get("accuracy", math.nan),
            "final_loss": math.nan if did_diverge else last.get("loss", math.nan),
            "params": int(model.count_params())}


class StepLosses(keras.callbacks.Callback):
    """Per-step training losses, recovered from Keras' running epoch mean (what the logs hold):
    a batch's loss is the change in (mean x images seen) over its images."""

    def __init__(self, n_train: int, batch_size: int):
        super().__init__()
        self.n_train, self.batch_size = n_train, batch_size
        self.losses: list[float] = []
        self._sum, self._seen = 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._sum, self._seen = 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        images = min(self.batch_size, self.n_train - self._seen)
        seen = self._seen + images
        total = float((logs or {}).get("loss", math.nan)) * seen
        self.losses.append((total - self._sum) / max(images, 1))
        self._sum, self._seen = total, seen


def predict_correct(model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image: is the model's top class the label? (the paired tests need it per image)"""
    logits = model.predict(images, batch_size=512, verbose=0)
    return np.argmax(logits, axis=-1) == np.asarray(labels)
