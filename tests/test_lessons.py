"""The lessons pipeline: verdicts follow the numbers (synthetic results for and against each
claim), per-layer gradient norms agree on TensorFlow and JAX, and a tiny run end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline.lessons import CLAIM_NAMES
from pipeline.lessons.verdicts import VERDICTS
from tests.conftest import REPO, make_tiny_cifar

RATES = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]


def _curve(level: float, wiggle: float, n: int = 60) -> list[float]:
    steps = np.arange(n)
    return list(level + 1.5 * np.exp(-steps / 15) + wiggle * (-1.0) ** steps)


def _momentum_arm(end: float, rough: list[float], rate: float = 0.02) -> dict:
    """One optimizer's numbers over three seeds: end losses a little apart, roughness given."""
    return {"learning_rate": rate, "end_loss": [end, end + 0.01, end - 0.01],
            "roughness": rough, "loss_curve": _curve(end, 0.05), "val_accuracy": [0.5] * 3}


def _bn_case(chosen: dict, accuracy: dict) -> dict:
    return {"rates": [0.02, 0.1, 0.5], "depths": ["4", "13"], "chosen_rate": chosen,
            "val_accuracy": accuracy, "seeds": 3,
            "grid": {k: [0.3, 0.4, 0.5] for k in accuracy}}


def _landscape_case(ratios: list[float], plain: float = 0.4) -> dict:
    """Pairs of probe summaries over 2 depths x 3 rates: batch norm's measures are the plain
    net's times ``ratios`` (the same ratio for the loss range and the gradient change)."""
    return {"steps": [0.5, 1.0, 2.0, 4.0], "probe_images": 256, "chance": 0.1, "pairs": [
        {"depth": depth, "rate": rate,
         "bn": {"loss_range": plain * ratio, "gradient_change": 2 * plain * ratio,
                "val_accuracy": 0.4},
         "plain": {"loss_range": plain, "gradient_change": 2 * plain, "val_accuracy": 0.3}}
        for (depth, rate), ratio in zip([(d, r) for d in ("4", "13") for r in (0.02, 0.1, 0.5)],
                                        ratios, strict=True)]}


def _depth_case(small: list, wide: list, deep: list) -> dict:
    return {"nets": {
        "shallow_256": {"layers": 1, "units": 256, "params": 789_000, "val_accuracy": small},
        "shallow_1024": {"layers": 1, "units": 1024, "params": 3_157_000, "val_accuracy": wide},
        "deep": {"layers": 4, "units": 212, "params": 790_000, "val_accuracy": deep}}}


def _adam_case(first: dict, gap: dict) -> dict:
    """Three seeds per optimizer: validation after epoch 1 and at the end, the end's gap."""
    wobble = (-0.005, 0.0, 0.005)
    return {"epochs": 8, "arms": {
        name: {"val_accuracy_curve": [[first[name] + d, 0.45 + d] for d in wobble],
               "val_accuracy": [0.45 + d for d in wobble],
               "train_accuracy": [0.45 + d + gap[name] for d in wobble]}
        for name in first}}


def _robust_case(kept_with: dict, kept_without: dict) -> dict:
    """Test accuracy per seed of both arms: clean, and the shares of it each view keeps."""
    clean = [0.50, 0.52, 0.48]
    wobble = (-0.01, 0.0, 0.01)
    return {"epochs": 8, "arms": {
        arm: {"clean": clean, **{view: [c * (share + d)
                                        for c, d in zip(clean, wobble, strict=True)]
                                 for view, share in kept.items()}}
        for arm, kept in (("flip_crop", kept_without), ("jitter_erasing", kept_with))}}


def _shifted(base: float, keep: float) -> dict:
    """Accuracy per shift over three seeds (a little apart), keeping ``keep`` of it at 4 px."""
    return {str(p): [(base + d) * (1 - (1 - keep) * p / 4) for d in (-0.01, 0.0, 0.01)]
            for p in (0, 2, 4, 6, 8)}


# claim -> (numbers as the lecture expects them, numbers that contradict it)
CASES = {
    "learning_rate": (
        {"rates": RATES, "val_accuracy": [0.12, 0.3, 0.45, 0.5, 0.2, 0.1],
         "final_loss": [2.2, 1.8, 1.4, 1.3, 2.0, math.nan], "first_loss": math.log(10)},
        # only the grid's end diverges, four decades above the best rate: not "too large"
        {"rates": RATES, "val_accuracy": [0.3, 0.5, 0.45, 0.4, 0.35, 0.1],
         "final_loss": [1.8, 1.3, 1.4, 1.5, 1.6, math.nan], "first_loss": math.log(10)}),
    "momentum": (
        {"learning_rate": 0.02, "momentum": 0.9, "variants": {
            "momentum": _momentum_arm(0.6, [0.050, 0.052, 0.049]),
            "nesterov": _momentum_arm(0.5, [0.048, 0.050, 0.047]),
            "sgd_same_step": _momentum_arm(0.7, [0.068, 0.066, 0.069], rate=0.2)}},
        # the second run's numbers: momentum ends lower but zigzags as much as SGD taking
        # steps of its size (roughness 0.063-0.064 against 0.064)
        {"learning_rate": 0.02, "momentum": 0.9, "variants": {
            "momentum": _momentum_arm(0.6, [0.064, 0.063, 0.064]),
            "nesterov": _momentum_arm(0.5, [0.063, 0.063, 0.064]),
            "sgd_same_step": _momentum_arm(0.7, [0.064, 0.064, 0.065], rate=0.2)}}),
    "batch_size": (
        {"batch_sizes": [32, 128, 512], "gradient_noise": [2.1, 0.55, 0.16], "equal_steps": 96,
         "val_accuracy": [0.5, 0.48, 0.4], "val_accuracy_equal_steps": [0.4, 0.48, 0.5]},
        # batch-norm statistics of small batches dominate: the noise hardly falls
        {"batch_sizes": [32, 128, 512], "gradient_noise": [0.9, 0.7, 0.6], "equal_steps": 96,
         "val_accuracy": [0.5, 0.48, 0.4], "val_accuracy_equal_steps": [0.4, 0.48, 0.5]}),
    "annealing": (
        {"seeds": 3, "schedules": {"constant": [0.40, 0.41, 0.39], "step": [0.45, 0.46, 0.44],
                                   "cosine": [0.47, 0.46, 0.46], "linear": [0.48, 0.47, 0.47]}},
        # too few steps for decay to pay (the lessons' first run): the constant rate ahead
        {"seeds": 3, "schedules": {"constant": [0.48, 0.47, 0.49], "step": [0.45, 0.44, 0.46],
                                   "cosine": [0.46, 0.45, 0.47], "linear": [0.46, 0.45, 0.47]}}),
    "adam_robustness": (
        {"rates": RATES, "chance": 0.1, "sgd": [0.1, 0.2, 0.4, 0.5, 0.1, 0.1],
         "adam": [0.45, 0.5, 0.48, 0.3, 0.1, 0.1]},
        # SGD that never trains has no band at all, not the widest one
        {"rates": RATES, "chance": 0.1, "sgd": [0.1, 0.45, 0.48, 0.5, 0.47, 0.1],
         "adam": [0.2, 0.5, 0.3, 0.1, 0.1, 0.1]}),
    "inductive_bias": (
        {"cnn": {"params": 98000, "shift": _shifted(0.6, 0.9), "rotation": {"0": [0.6] * 3}},
         "fc": {"params": 99000, "shift": _shifted(0.4, 0.5), "rotation": {"0": [0.4] * 3}}},
        {"cnn": {"params": 98000, "shift": _shifted(0.4, 0.5), "rotation": {"0": [0.4] * 3}},
         "fc": {"params": 99000, "shift": _shifted(0.41, 0.9), "rotation": {"0": [0.41] * 3}}}),
    "regularisation_gap": (
        {"train_images": 1000, "settings": {
            "none": {"train_accuracy": [0.99, 0.98, 0.99], "val_accuracy": [0.40, 0.41, 0.39]},
            "augmentation": {"train_accuracy": [0.70, 0.72, 0.69],
                             "val_accuracy": [0.45, 0.46, 0.44]},
            "dropout": {"train_accuracy": [0.90, 0.91, 0.89], "val_accuracy": [0.42, 0.42, 0.41]},
            "both": {"train_accuracy": [0.6, 0.6, 0.6], "val_accuracy": [0.46, 0.46, 0.46]}}},
        # what too much dropout does: the gap narrows because the net underfits (training
        # accuracy falls further than validation accuracy, which falls too)
        {"train_images": 1000, "settings": {
            "none": {"train_accuracy": [0.99, 0.98, 0.99], "val_accuracy": [0.45, 0.46, 0.44]},
            "augmentation": {"train_accuracy": [0.70, 0.71, 0.69],
                             "val_accuracy": [0.47, 0.48, 0.46]},
            "dropout": {"train_accuracy": [0.55, 0.56, 0.54], "val_accuracy": [0.38, 0.39, 0.37]},
            "both": {"train_accuracy": [0.5, 0.5, 0.5], "val_accuracy": [0.36, 0.36, 0.36]}}}),
    "early_stopping": (
        {"restored_test_accuracy": [0.42, 0.43, 0.41], "full_test_accuracy": [0.38, 0.385, 0.37],
         "best_epoch": [5, 6, 5], "stopped_epoch": [7, 8, 7], "epochs_allowed": 16},
        # validation loss turned up (over-confident predictions) while accuracy still rose:
        # the weights trained to the end are the better ones
        {"restored_test_accuracy": [0.38, 0.37, 0.385], "full_test_accuracy": [0.42, 0.41, 0.43],
         "best_epoch": [5, 6, 5], "stopped_epoch": [7, 8, 7], "epochs_allowed": 16}),
    "vanishing_gradients": (
        {"steps": 50, "configs": {
            "sigmoid": {"init": [1e-6, 1e-4, 1e-2], "trained": [1e-6, 1e-4, 1e-2],
                        "val_accuracy": 0.1},
            "relu": {"init": [0.1, 0.1, 0.1], "trained": [0.1, 0.1, 0.1], "val_accuracy": 0.3},
            "sigmoid_bn": {"init": [0.05, 0.07, 0.1], "trained": [0.05, 0.07, 0.1],
                           "val_accuracy": 0.28}}},
        # the gradients vanish at initialisation, yet after the steps sigmoid trains as well
        {"steps": 50, "configs": {
            "sigmoid": {"init": [1e-6, 1e-4, 1e-2], "trained": [0.05, 0.07, 0.1],
                        "val_accuracy": 0.3},
            "relu": {"init": [0.1, 0.1, 0.1], "trained": [0.1, 0.1, 0.1], "val_accuracy": 0.3},
            "sigmoid_bn": {"init": [0.05, 0.07, 0.1], "trained": [0.05, 0.07, 0.1],
                           "val_accuracy": 0.3}}}),
    "batch_norm": (
        _bn_case({"4/bn": 0.5, "4/plain": 0.1, "13/bn": 0.5, "13/plain": 0.02},
                 {"4/bn": [0.50, 0.51, 0.49], "4/plain": [0.47, 0.48, 0.47],
                  "13/bn": [0.52, 0.53, 0.51], "13/plain": [0.30, 0.33, 0.31]}),
        # each arm at its own best rate, the plain net catches up at depth: the gain shrinks
        _bn_case({"4/bn": 0.5, "4/plain": 0.1, "13/bn": 0.5, "13/plain": 0.1},
                 {"4/bn": [0.50, 0.51, 0.49], "4/plain": [0.42, 0.43, 0.42],
                  "13/bn": [0.52, 0.53, 0.51], "13/plain": [0.50, 0.52, 0.50]})),
    "bn_landscape": (
        _landscape_case([0.3, 0.4, 0.5, 0.2, 0.3, 0.45]),
        # at a constant rate the normalised net takes larger effective steps: rougher with it
        _landscape_case([1.3, 1.5, 1.2, 1.6, 1.4, 1.25])),
    "ablations": (
        {"baseline_accuracy": [0.60, 0.61, 0.59], "test_images": 1000, "ablations": {
            "batch_norm": {"accuracy": [0.40, 0.42, 0.41]},
            "schedule": {"accuracy": [0.55, 0.56, 0.54]}}},
        # a part whose removal costs nothing beyond the seeds' noise
        {"baseline_accuracy": [0.60, 0.61, 0.59], "test_images": 1000, "ablations": {
            "batch_norm": {"accuracy": [0.40, 0.42, 0.41]},
            "schedule": {"accuracy": [0.605, 0.614, 0.596]}}}),
    "depth_vs_width": (
        _depth_case(small=[0.40, 0.41, 0.39], wide=[0.41, 0.42, 0.40], deep=[0.44, 0.45, 0.44]),
        # on few images and epochs the deeper net trains slower: the shallow one is ahead
        _depth_case(small=[0.40, 0.41, 0.39], wide=[0.42, 0.43, 0.41], deep=[0.37, 0.38, 0.37])),
    "adam_generalisation": (
        _adam_case(first={"nesterov": 0.20, "adam": 0.30, "adamw": 0.30},
                   gap={"nesterov": 0.05, "adam": 0.12, "adamw": 0.06}),
        # Adam leads early and overfits more, but decoupled decay does not close its gap
        _adam_case(first={"nesterov": 0.20, "adam": 0.30, "adamw": 0.30},
                   gap={"nesterov": 0.05, "adam": 0.12, "adamw": 0.14})),
    "robustness": (
        _robust_case(kept_with={"colour": 0.95, "occluded": 0.85},
                     kept_without={"colour": 0.80, "occluded": 0.70}),
        # the jittered net is no steadier under occlusion than the plain one
        _robust_case(kept_with={"colour": 0.95, "occluded": 0.70},
                     kept_without={"colour": 0.80, "occluded": 0.80})),
}


def test_every_claim_has_a_verdict_and_a_case():
    assert set(VERDICTS) == set(CLAIM_NAMES) == set(CASES)


@pytest.mark.parametrize("claim", CLAIM_NAMES)
def test_verdicts_follow_the_numbers(claim):
    """The same function says 'supported' to numbers that bear the claim out and 'not
    supported' to numbers that contradict it: the verdict is computed, not written."""
    supporting, contradicting = CASES[claim]
    yes, no = VERDICTS[claim](supporting), VERDICTS[claim](contradicting)
    assert yes.supported is True, yes.text
    assert no.supported is False, no.text
    assert yes.label == "supported" and no.label == "not supported"
    assert "\n" not in yes.text and "\n" not in no.text


def test_an_optimizer_that_never_trains_has_no_good_band():
    from pipeline.lessons.verdicts import good_band_decades

    assert good_band_decades(RATES, [0.1, 0.11, 0.12, 0.13, 0.1, 0.1], chance=0.1) is None
    assert good_band_decades(RATES, [0.1, 0.5, 0.45, 0.2, 0.1, 0.1], chance=0.1) == 1.0
    verdict = VERDICTS["adam_robustness"]({"rates": RATES, "chance": 0.1,
                                           "sgd": [0.1, 0.11, 0.12, 0.13, 0.1, 0.1],
                                           "adam": [0.3, 0.4, 0.2, 0.1, 0.1, 0.1]})
    assert verdict.supported is True  # SGD's band is empty, not six decades wide


def test_a_landscape_with_diverged_arms_or_mixed_ratios_is_inconclusive():
    """Diverged arms have no landscape, and an arm stuck at chance is on a plateau: with
    fewer than 3 pairs left, or ratios on both sides of the margin, the rule cannot tell."""
    from pipeline.lessons.verdicts import bn_landscape

    diverged = _landscape_case([0.3, 0.4, 0.5, 0.2, 0.3, 0.45])
    for pair in diverged["pairs"][2:4]:
        pair["plain"]["loss_range"] = math.nan
    for pair in diverged["pairs"][4:]:  # the deep plain net stuck at chance: a flat plateau
        pair["plain"]["val_accuracy"] = 0.1
    found = bn_landscape(diverged)
    assert found.supported is None and "4 pair(s) left out" in found.text
    assert bn_landscape(_landscape_case([0.3, 1.4, 0.5, 1.2, 0.3, 1.1])).supported is None


def test_the_watched_stop_is_the_stop_keras_makes_and_training_goes_on():
    """One training gives both early-stopping arms: where WatchedStopping notes its stop, and
    the weights it notes, are what Keras's own EarlyStopping stops at and restores; the
    watched run trains on to the end."""
    import keras

    from pipeline.lessons.experiments import WatchedStopping

    rng = np.random.default_rng(0)  # noise labels: validation loss turns up within epochs
    x, y = rng.standard_normal((256, 20)), rng.integers(0, 2, 256)
    xv, yv = rng.standard_normal((128, 20)), rng.integers(0, 2, 128)

    def train(callback):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"),
                                  keras.layers.Dense(2)])
        model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        history = model.fit(x, y, validation_data=(xv, yv), epochs=20, batch_size=32,
                            shuffle=False, verbose=0, callbacks=[callback])
        return model, history.history["val_loss"]

    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2,
                                            restore_best_weights=True)
    stopped, stopped_curve = train(stopper)
    watcher = WatchedStopping(monitor="val_loss", patience=2)
    full, full_curve = train(watcher)
    assert len(stopped_curve) < 20 and len(full_curve) == 20  # Keras stopped; the watch went on
    assert watcher.stop["stopped_epoch"] == len(stopped_curve)
    assert watcher.stop["best_epoch"] == int(np.argmin(stopped_curve)) + 1
    for kept, restored in zip(watcher.stop["weights"], stopped.get_weights(), strict=True):
        np.testing.assert_allclose(kept, restored, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(a, b) for a, b in zip(full.get_weights(),
                                                       stopped.get_weights(), strict=True))


def test_every_ablation_of_the_cnn_default_builds_a_valid_configuration():
    """The ablation cards take parts out of whatever the CNN space's defaults (the search's
    first trial, the usual champion) hold now: a switch added to the space must not break a
    card, and augmentation off means none at all."""
    import keras_tuner

    from pipeline.config import AugmentationParams
    from pipeline.lessons.experiments import ABLATIONS
    from pipeline.search.hypermodel import trial_defaults
    from pipeline.spaces import load_space
    from pipeline.training import augmentation_policy

    space = load_space(REPO / "search_spaces" / "cnn.yaml", "cnn")
    champion = {**trial_defaults("cnn", AugmentationParams()),
                **space.declare(keras_tuner.HyperParameters())}
    assert "aug_alternate_flip" in champion and "aug_crop" in champion
    for name, remove in ABLATIONS.items():
        changed = {**champion, **remove(champion)}
        policy = augmentation_policy(changed)
        if name == "augmentation":
            assert not any(policy.model_dump().values()), policy


def test_a_setting_two_claims_train_alike_is_trained_once():
    """A shared baseline: the same configuration, epochs, augmentation and seed on the
    lessons' data trains once, and the second claim is told it shares it; another seed, or a
    training with callbacks (a probe, a watcher), trains anew."""
    from pipeline.config import LessonsParams
    from pipeline.lessons import experiments
    from pipeline.lessons.training import LessonData, base_config

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), np.arange(40) % 10
    data = LessonData(x, y, x[:20], y[:20], x[:20], y[:20],
                      {"num_classes": 10, "mean": [127.0] * 3, "std": [64.0] * 3})
    told = []
    lab = experiments.Lab(data, LessonsParams(epochs=1),
                          lambda claim, *args, shared=False: told.append((claim, shared)))
    cfg = base_config(batch_size=20)
    first = lab.run("annealing", "linear", cfg)
    assert lab.run("adam_generalisation", "nesterov", dict(cfg)) is first
    assert lab.run("momentum", "other seed", cfg, seed=1) is not first
    stopper = experiments.WatchedStopping(monitor="val_loss", patience=2)
    assert lab.run("early_stopping", "watched", cfg, callbacks=(stopper,)) is not first
    assert stopper.stop is not None
    assert told == [("annealing", False), ("adam_generalisation", True), ("momentum", False),
                    ("early_stopping", False)]
    assert lab.reused == 1
    # a training validated after every epoch is another training (its history has curves)
    curves = lab.run("adam_generalisation", "curves", cfg, epochs=2, validate_every_epoch=True)
    assert len(curves["history"]["val_accuracy"]) == 2
    assert lab.run("annealing", "no curves", cfg, epochs=2) is not curves
    assert lab.run("momentum", "curves again", cfg, epochs=2,
                   validate_every_epoch=True) is curves


def test_a_lesson_validates_once_and_a_diverged_one_where_it_stopped():
    """A lesson's run validates after its last epoch only (its final score is what lessons
    read); one that diverges in its first epoch, before that validation, is still scored."""
    from pipeline.lessons.training import LessonData, base_config, fit

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 64).astype(np.uint8)
    data = LessonData(x, y, x[:32], y[:32], x, y, {"num_classes": 10, "mean": [120.0] * 3,
                                                   "std": [60.0] * 3})
    calm = fit(base_config(schedule="constant", learning_rate=0.01, batch_size=16), data,
               epochs=3)
    assert len(calm["history"]["loss"]) == 3 and len(calm["history"]["val_accuracy"]) == 1
    wild = fit(base_config(schedule="constant", learning_rate=1e12, batch_norm=False,
                           logit_scale=1.0, batch_size=16), data, epochs=3)
    assert wild["diverged"] and len(wild["history"]["loss"]) == 1
    assert 0.0 <= wild["val_accuracy"] <= 1.0  # scored after the stop (a NaN net: one class)


def test_early_stopping_without_a_turn_is_inconclusive():
    # validation loss never turned up: the restored weights are the last ones on every seed
    same = [0.41, 0.43, 0.40]
    verdict = VERDICTS["early_stopping"]({"restored_test_accuracy": same,
                                          "full_test_accuracy": same, "best_epoch": [16] * 3,
                                          "stopped_epoch": [16] * 3, "epochs_allowed": 16})
    assert verdict.supported is None and "no difference" in verdict.text


def test_effects_inside_the_seeds_noise_are_inconclusive():
    # an ablation that cost 6 points on one seed and gained 6 on another (the flip seen
    # between two single-seed runs): neither "counts" nor "does not count"
    noisy = {"baseline_accuracy": [0.30, 0.28, 0.31], "test_images": 1000, "ablations": {
        "augmentation": {"accuracy": [0.24, 0.34, 0.29]}}}
    verdict = VERDICTS["ablations"](noisy)
    assert verdict.supported is None and verdict.label == "inconclusive", verdict.text
    # one seed bounds nothing, however large the difference
    single = {"baseline_accuracy": [0.6], "test_images": 1000,
              "ablations": {"batch_norm": {"accuracy": [0.3]}}}
    assert VERDICTS["ablations"](single).supported is None


def test_a_run_that_did_not_diverge_reports_its_final_loss():
    # the final loss decides the learning-rate lesson's "too large diverges": it was NaN for
    # every run once (a function object tested instead of the run's flag)
    from pipeline.lessons.training import LessonData, base_config, fit

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 64).astype(np.uint8)
    data = LessonData(x, y, x, y, x, y, {"num_classes": 10, "mean": [120.0] * 3,
                                         "std": [60.0] * 3})
    calm = fit(base_config(schedule="constant", learning_rate=0.01), data, epochs=1)
    assert not calm["diverged"] and math.isfinite(calm["final_loss"])
    assert calm["final_loss"] == calm["history"]["loss"][-1]


def test_the_gradient_noise_of_real_training_falls_with_the_batch_and_feeds_the_rule():
    """The mini-batch lesson on real CIFAR-10 images (a tiny subset, 1 epoch): measured at
    fixed weights, the gradient estimate's noise falls as the batch grows, as sampling says."""
    from pipeline.config import LessonsParams
    from pipeline.lessons import experiments
    from pipeline.lessons.training import LessonData

    images, labels = _real_images(1024)
    data = LessonData(images, labels, images[:256], labels[:256], images[:256], labels[:256],
                      {"num_classes": 10, "mean": [125.3, 123.0, 113.9],
                       "std": [63.0, 62.1, 66.7]})
    lab = experiments.Lab(data, LessonsParams(epochs=1), lambda *args, **kwargs: None)
    result = experiments.batch_size(lab, draws=4)
    noise = result["gradient_noise"]
    assert noise[0] > noise[1] > noise[2] > 0, noise
    verdict = VERDICTS["batch_size"](result)
    assert verdict.supported is True, verdict.text


def _real_images(count: int):
    from tests.conftest import REAL_CIFAR10

    if not (REAL_CIFAR10 / "data_batch_1").is_file():
        pytest.skip(f"the real CIFAR-10 copy is not at {REAL_CIFAR10}")
    from pipeline.data.safe_pickle import load_pickle

    batch = load_pickle(REAL_CIFAR10 / "data_batch_1")
    images = np.asarray(batch["data"][:count]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images.astype(np.uint8), np.asarray(batch["labels"][:count], dtype=np.uint8)


def test_a_claim_whose_two_passes_disagree_is_unstable_and_inconclusive(tmp_path):
    from pipeline.lessons.report import standing, write_report
    from pipeline.lessons.verdicts import Verdict

    main = {"annealing": Verdict(True, "a"), "early_stopping": Verdict(False, "b"),
            "momentum": Verdict(None, "e")}
    again = {"annealing": Verdict(None, "c"), "early_stopping": Verdict(False, "d")}
    assert standing(main["annealing"], again["annealing"]) is None
    assert standing(main["early_stopping"], again["early_stopping"]) is False
    figure = tmp_path / "lessons" / "f.png"
    figure.parent.mkdir()
    figure.write_bytes(b"png")
    setup = {"claims": list(main), "train_images": 10, "val_images": 10, "test_images": 10,
             "dataset": "CIFAR-10", "epochs": 1, "seed": 0, "seeds": 3, "confirm_seed": 10,
             "backend": "tensorflow", "runs": 4, "minutes": 0.1}
    text = write_report(tmp_path / "lessons.md", main, {k: figure for k in main}, {}, setup,
                        confirmation=again).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert "| inconclusive (**unstable**) | supported | inconclusive |" in rows[0], rows[0]
    assert "| **not supported** | not supported | not supported |" in rows[1], rows[1]
    assert "| inconclusive | inconclusive | not rerun |" in rows[2], rows[2]


def test_the_robustness_views_change_colour_and_hide_a_square():
    from pipeline.lessons.experiments import occlude, recolour

    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    hidden = occlude(images, size=12, seed=3)
    changed = np.any(hidden != images, axis=3)
    assert hidden.dtype == np.uint8 and np.all(hidden[changed] == 128)
    assert all(changed[i].sum() <= 144 for i in range(5))  # one 12 x 12 square each
    assert np.array_equal(occlude(images, 12, 3), hidden)  # fixed by its seed
    grey = np.full((1, 32, 32, 3), 100, dtype=np.uint8)
    assert np.all(recolour(grey) == 120)  # a flat grey image only gets brighter
    colourful = recolour(images).astype(int)
    assert colourful.std() < images.astype(int).std()  # less contrast and saturation


def test_the_paired_interval_is_the_paired_t_interval():
    from scipy.stats import ttest_rel

    from pipeline.stats import paired_interval

    base, arm = [0.40, 0.43, 0.41, 0.45], [0.44, 0.45, 0.46, 0.47]
    interval = paired_interval(base, arm)
    expected = ttest_rel(arm, base).confidence_interval(0.95)
    assert interval["low"] == pytest.approx(expected.low)
    assert interval["high"] == pytest.approx(expected.high)
    assert interval["mean"] == pytest.approx(0.0325) and interval["seeds"] == 4


GRADIENTS = """
import json, sys
import numpy as np
import keras
from pipeline.lessons.gradients import kernel_gradient_rms, loss_along_gradient
from pipeline.lessons.training import base_config, build, LessonData
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, 32).astype(np.uint8)
meta = {"num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3}
data = LessonData(x, y, x, y, x, y, meta)
cfg = base_config("fc", layers=6, units=16, shrink=1.0, dropout=0.0, activation="sigmoid",
                  batch_norm=False)
model = build(cfg, data, "fc", seed=0)
weights = rng.standard_normal(sum(w.size for w in model.get_weights()))
offset, fixed = 0, []
for w in model.get_weights():  # the same weights on both backends
    fixed.append((0.2 * weights[offset:offset + w.size]).reshape(w.shape).astype(w.dtype))
    offset += w.size
model.set_weights(fixed)
probe = loss_along_gradient(model, x, y, model.loss, [0.5, 2.0])
assert all(np.array_equal(a, b) for a, b in zip(fixed, model.get_weights()))  # put back
print(json.dumps({"norms": kernel_gradient_rms(model, x, y, model.loss), "probe": probe}))
"""


def test_gradient_norms_agree_on_tensorflow_and_jax():
    """One path per backend, the same numbers: the same weights and batch give the same
    per-layer norms, and the same landscape along the gradient, on TensorFlow and on JAX; the
    landscape probe puts the weights back."""
    found = {}
    for backend in ("tensorflow", "jax"):
        out = subprocess.run([sys.executable, "-c", GRADIENTS], cwd=REPO, check=True,
                             capture_output=True, text=True,
                             env={**os.environ, "KERAS_BACKEND": backend})
        found[backend] = json.loads(out.stdout.strip().splitlines()[-1])
    tf_probe, jax_probe = found["tensorflow"]["probe"], found["jax"]["probe"]
    assert tf_probe["loss_range"] > 0 and tf_probe["gradient_change"] > 0
    for key in ("loss_range", "gradient_change"):
        assert tf_probe[key] == pytest.approx(jax_probe[key], rel=1e-2)
    tf_norms, jax_norms = found["tensorflow"]["norms"], found["jax"]["norms"]
    assert [n for n, _ in tf_norms] == [n for n, _ in jax_norms]
    assert len(tf_norms) == 7  # six hidden layers and the logits
    np.testing.assert_allclose([v for _, v in tf_norms], [v for _, v in jax_norms], rtol=2e-3)
    values = [v for _, v in tf_norms]
    assert all(v > 0 and math.isfinite(v) for v in values)
    assert values[0] < values[-1]  # a sigmoid stack: smaller gradients at the input side


REFRESH = """
import json
import numpy as np
import keras
from pipeline.lessons.training import LessonData, base_config, fit
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, 512).astype(np.uint8)
meta = {"num_classes": 10, "mean": [127.0] * 3, "std": [64.0] * 3}
data = LessonData(x, y, x[:64], y[:64], x[:64], y[:64], meta)
model = fit(base_config(base_filters=4, learning_rate=0.05), data, epochs=1)["model"]
found = []
for layer in model._flatten_layers():
    if isinstance(layer, keras.layers.BatchNormalization):
        inputs = keras.Model(model.inputs, layer.input)
        batches = [keras.ops.convert_to_numpy(inputs(x[i:i + 256].astype("float32"),
                                                     training=True)) for i in (0, 256)]
        axes = tuple(range(batches[0].ndim - 1))
        mean = np.mean([b.mean(axis=axes) for b in batches], axis=0)
        var = np.mean([b.var(axis=axes) for b in batches], axis=0)
        moving = [keras.ops.convert_to_numpy(v) for v in (layer.moving_mean,
                                                          layer.moving_variance)]
        found.append({"momentum": layer.momentum,
                      "mean_error": float(np.max(np.abs(moving[0] - mean))
                                          / np.max(np.abs(mean))),
                      "var_error": float(np.max(np.abs(moving[1] - var) / var))})
print(json.dumps(found))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_batch_norm_statistics_match_the_trained_weights_after_a_lesson(backend):
    """After a lesson's training (8 steps: Keras' moving averages would still hold 92% of
    their initial values), every batch-norm layer's statistics are the mean over the first
    512 training images at the final weights, two batches weighed equally, and its momentum
    is Keras' 0.99 again."""
    out = subprocess.run([sys.executable, "-c", REFRESH], cwd=REPO, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "KERAS_BACKEND": backend})
    layers = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(layers) == 4  # the stem's and one per stage of the lessons' CNN
    for layer in layers:
        assert layer["momentum"] == pytest.approx(0.99)
        assert layer["mean_error"] < 1e-2 and layer["var_error"] < 1e-2, layer  # float32


def _run_lessons(tmp_path, lessons: dict):
    """`pipeline lessons` on tiny generated data with these lessons settings: the finished
    process, the report's path and the params."""
    source = make_tiny_cifar(tmp_path / "src", per_class=4, test_per_class=4)
    params = {"prepare": {"source": str(source), "checksums": "warn"},
              "lessons": {"train_per_class": 12, "eval_per_class": 2, "epochs": 1,
                          "ablation_epochs": 1, "confirm_seed": None, **lessons},
              "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "t"}}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    prepared = tmp_path / "prepared"
    subprocess.run([sys.executable, "-m", "pipeline", "prepare", "--params", str(params_file),
                    "--out", str(prepared), "--preview", str(tmp_path / "p.png")], cwd=REPO,
                   check=True, capture_output=True)
    champion = tmp_path / "best_hparams.json"
    champion.write_text(json.dumps({"family": "cnn", "hyperparameters": {
        "stages": 2, "convs_per_stage": 2, "block_stages": "ends", "base_filters": 8,
        "filter_growth": 2.0, "kernel_size": 3, "residual": True, "batch_norm": True,
        "activation": "relu", "dropout": 0.0, "head": "global_max", "dense_units": 0,
        "logit_scale": 0.125, "optimizer": "nesterov", "learning_rate": 0.1, "momentum": 0.9,
        "schedule": "one_cycle", "warmup_fraction": 0.2, "batch_size": 64,
        "weight_decay": 5e-4, "label_smoothing": 0.1, "aug_flip": True, "aug_crop": 4,
        "aug_rotation": 0.0, "aug_brightness": 0.0, "aug_contrast": 0.0,
        "aug_saturation": 0.0, "aug_erasing": 0.0}}))
    report = tmp_path / "reports" / "lessons.md"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "lessons", "--params", str(params_file), "--data",
         str(prepared), "--champion", str(champion), "--results", str(tmp_path / "results"),
         "--out", str(report)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, report, params


@pytest.mark.slow
def test_lessons_end_to_end_tiny(tmp_path):
    """Every claim's experiment on tiny generated data, 1 epoch: results, figures, verdicts,
    the report and the MLflow runs (a real SQLite store)."""
    done, report, params = _run_lessons(tmp_path, {"seeds": 1, "ablation_base_filters": 4})
    text = report.read_text()
    cards = json.loads((tmp_path / "results" / "ablations.json").read_text())
    assert cards["result"]["champion"]["base_filters"] == 4  # the champion file says 8
    assert "champion at 4 base filters" in cards["verdict_text"]
    for claim in CLAIM_NAMES:
        result = json.loads((tmp_path / "results" / f"{claim}.json").read_text())
        assert result["verdict"] in ("supported", "not supported", "inconclusive")
        assert result["verdict_text"] in text
        assert (report.parent / "lessons" / f"{claim}.png").stat().st_size > 5000
    assert f"lesson {len(CLAIM_NAMES)} of {len(CLAIM_NAMES)}" in done.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=params["tracking"]["uri"])
    experiment = client.get_experiment_by_name("t-lessons")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    claim_runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_name for r in claim_runs) == sorted(CLAIM_NAMES)
    assert all(r.data.tags.get("verdict") for r in claim_runs)
    assert len(runs) - len(claim_runs) >= 40  # a child run per setting


@pytest.mark.slow
def test_a_confirmation_pass_reruns_the_claims_on_fresh_seeds_and_data(tmp_path):
    """A claim the main pass decided runs again on fresh seeds and data; one it left
    inconclusive does not (no second verdict could change it). The learning-rate rule always
    decides; early stopping on 2 seeds of tiny data may go either way."""
    claims = ["learning_rate", "early_stopping"]
    done, report, params = _run_lessons(tmp_path, {"seeds": 2, "confirm_seed": 7,
                                                    "claims": claims})
    results = tmp_path / "results"
    rerun = set()
    for claim in claims:
        first = json.loads((results / f"{claim}.json").read_text())
        assert (first["pass"], first["seed"]) == ("main", 0)
        again = results / "confirmation" / f"{claim}.json"
        if first["verdict"] == "inconclusive":
            assert not again.exists()
            continue
        rerun.add(claim)
        second = json.loads(again.read_text())
        assert (second["pass"], second["seed"]) == ("confirmation", 7)
        assert first["result"] != second["result"]
        assert (report.parent / "lessons" / "confirmation" / f"{claim}.png").is_file()
    assert "learning_rate" in rerun
    text = report.read_text()
    assert "| claim | verdict | main pass | confirmation |" in text
    assert ("| inconclusive | not rerun |" in text) == ("early_stopping" not in rerun)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=params["tracking"]["uri"])
    experiment = client.get_experiment_by_name("t-lessons")
    names = {r.info.run_name for r in client.search_runs([experiment.experiment_id])
             if "mlflow.parentRunId" not in r.data.tags}
    assert names == set(claims) | {f"{claim} (confirmation)" for claim in rerun}
