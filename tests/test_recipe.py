"""The recipe's switches from the fast CIFAR-10 recipes: weight averaging, alternating flips, a
patch-whitening stem, and the precision a training runs in."""

import logging

import keras
import keras_tuner as kt
import numpy as np
import pytest

from pipeline import precision
from pipeline.augment import AlternatingFlip
from pipeline.config import AugmentationParams
from pipeline.models.cnn import CNN_DEFAULTS, build_cnn
from pipeline.models.whitening import patch_covariance, whitening_kernel
from pipeline.search.hypermodel import FamilyHyperModel
from pipeline.spaces import SearchSpace

META = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "num_classes": 3}


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, n)


def fc_hypermodel(n_train, **overrides):
    empty = SearchSpace("<defaults>", "fc", ())
    hypermodel = FamilyHyperModel("fc", empty, META, AugmentationParams(flip=False,
                                                                       crop_padding=0),
                                  n_train=n_train, seed=0)
    hypermodel.defaults = {**hypermodel.defaults, "batch_size": 16, "layers": 1, "units": 32,
                           **overrides}
    return hypermodel


class LastRawWeights(keras.callbacks.Callback):
    """The model's own (not averaged) weights after the last training step."""

    def on_train_batch_end(self, batch, logs=None):
        self.weights = [np.array(w) for w in self.model.get_weights()]


@pytest.mark.parametrize("cut_by_budget", [False, True])
def test_weight_averaging_ends_with_the_weights_validation_scored(cut_by_budget):
    """The averaged weights are what validation scored and what the model keeps, also when
    the budget ends the run before its last planned epoch (Keras alone would then keep the
    last raw weights)."""
    x, y = images(64)
    xv, yv = images(48, seed=1)
    hypermodel = fc_hypermodel(len(y), ema_momentum=0.8, learning_rate=0.05)
    hp = kt.HyperParameters()
    keras.utils.set_random_seed(0)
    model = hypermodel.build(hp)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == 0.8
    raw = LastRawWeights()
    # 4 steps an epoch; a budget of a microsecond ends the first epoch after its 2nd step
    epochs = 4 if cut_by_budget else 2
    history = hypermodel.fit(hp, model, x, y, validation_data=(xv, yv), epochs=epochs,
                             seconds=1e-6 if cut_by_budget else None, verbose=0,
                             callbacks=[raw])
    assert len(history.history["loss"]) == (1 if cut_by_budget else epochs)
    val_loss, _ = model.evaluate(xv, yv, verbose=0)
    assert val_loss == pytest.approx(history.history["val_loss"][-1], rel=1e-4)
    moved = max(float(np.max(np.abs(a - b)))
                for a, b in zip(model.get_weights(), raw.weights, strict=True))
    assert moved > 1e-4  # the model holds the average, not the last step's weights


def test_weight_averaging_off_by_default_and_on_with_a_momentum():
    from pipeline.training import RECIPE_DEFAULTS, averaging_callbacks, make_optimizer

    cfg = {**RECIPE_DEFAULTS}
    assert not make_optimizer(cfg).use_ema and averaging_callbacks(cfg) == []
    assert make_optimizer({**cfg, "ema_momentum": 0.99}).use_ema
    assert len(averaging_callbacks({**cfg, "ema_momentum": 0.99})) == 1


def test_alternating_flip_shows_every_image_both_ways_in_two_epochs():
    x, _ = images(64)
    batch = x.astype("float32")
    layer = AlternatingFlip(steps_per_epoch=1)
    first = np.asarray(layer(batch, training=True))
    second = np.asarray(layer(batch, training=True))
    mirror = batch[:, :, ::-1]
    first_mirrored = np.all(first == mirror, axis=(1, 2, 3))
    assert np.all(np.all(first == batch, axis=(1, 2, 3)) | first_mirrored)
    # the next epoch shows each image the other way round
    np.testing.assert_array_equal(second, np.where(first_mirrored[:, None, None, None],
                                                   batch, mirror))
    assert 16 < first_mirrored.sum() < 48  # about half start mirrored
    np.testing.assert_array_equal(np.asarray(layer(batch, training=False)), batch)


def test_alternating_flip_is_a_hyperparameter_the_model_is_built_with():
    x, y = images(64)
    for alternate, layer in ((False, "RandomFlip"), (True, "AlternatingFlip")):
        model = fc_hypermodel(len(y), aug_alternate_flip=alternate, aug_flip=True).build(
            kt.HyperParameters())
        kinds = [type(k).__name__ for k in model.get_layer("augmentation").layers]
        assert kinds == [layer]
    # paced by the hypermodel's epoch: 64 images at batch 16
    assert model.get_layer("augmentation").layers[0].steps_per_epoch == 4


def test_alternating_flip_holds_its_side_within_an_epoch():
    x, _ = images(8)
    batch = x.astype("float32")
    layer = AlternatingFlip(steps_per_epoch=2)
    one, two, three = (np.asarray(layer(batch, training=True)) for _ in range(3))
    np.testing.assert_array_equal(one, two)  # steps 0 and 1: epoch 0
    assert not np.array_equal(two, three)  # step 2: epoch 1, every image changed side


def test_whitening_kernel_decorrelates_patches():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 32, 32, 1))
    # strongly correlated channels and neighbours, like natural images
    smooth = base + np.roll(base, 1, axis=1) + np.roll(base, 1, axis=2)
    x = np.clip(128 + 30 * np.concatenate([smooth, 0.9 * smooth, smooth + 0.1 * base], -1),
                0, 255).astype(np.uint8)
    covariance = np.asarray(patch_covariance(x, META))
    assert covariance.shape == (12, 12)
    assert np.max(np.abs(covariance - np.diag(np.diag(covariance)))) > 0.5  # correlated
    kernel = whitening_kernel(covariance)
    assert kernel.shape == (2, 2, 3, 24)
    filters = kernel[..., :12].reshape(12, 12)  # rows ordered (row, column, channel)
    whitened = filters.T @ covariance @ filters
    strong = np.linalg.eigvalsh(covariance) > 0.05  # the directions that carry signal
    np.testing.assert_allclose(np.diag(whitened)[strong], 1.0, atol=0.05)
    off = whitened - np.diag(np.diag(whitened))
    assert np.max(np.abs(off)) < 1e-4  # float32 kernel: rounding only
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])


def test_cnn_with_whitening_stem_is_frozen_and_needs_the_covariance():
    x, _ = images(50)
    cfg = {**CNN_DEFAULTS, "whitening": True}
    policy = AugmentationParams(flip=False, crop_padding=0)
    with pytest.raises(ValueError, match="patch_covariance"):
        build_cnn(cfg, 3, META, policy)
    meta = {**META, "patch_covariance": patch_covariance(x, META)}
    model = build_cnn(cfg, 3, meta, policy)
    whiten = model.get_layer("stem_whiten")
    assert not whiten.trainable
    np.testing.assert_allclose(np.asarray(whiten.kernel), whitening_kernel(
        meta["patch_covariance"]), rtol=1e-6)
    assert model.predict(x[:2], verbose=0).shape == (2, 3)


def test_precision_needs_a_clear_speed_up_for_bfloat16():
    assert precision.choose({"float32": 100.0, "mixed_bfloat16": 105.0}) == "mixed_bfloat16"
    assert precision.choose({"float32": 100.0, "mixed_bfloat16": 104.0}) == "float32"
    assert precision.choose({"float32": 100.0, "mixed_bfloat16": 100.0}) == "float32"
    assert precision.choose({"float32": 100.0, "mixed_bfloat16": 50.0}) == "float32"


def test_precision_named_or_deterministic_is_not_timed():
    def fail():
        raise AssertionError("nothing may be timed")

    assert precision.resolve("mixed_bfloat16", "laptop", False, fail, None, None) == (
        "mixed_bfloat16", {})
    assert precision.resolve("auto", "laptop", True, fail, None, None) == ("float32", {})


X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n"
X86_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_the_cpus_bfloat16_units_are_read_from_its_flags():
    assert precision.cpu_bf16_units(X86_AVX2) is False  # AVX-512 alone is not bfloat16
    assert precision.cpu_bf16_units(X86_BF16) is True
    assert precision.cpu_bf16_units(ARM_BF16) is True
    assert precision.cpu_bf16_units("model name\t: some CPU\n") is None  # says nothing


def test_precision_auto_on_a_cpu_without_bfloat16_units_is_float32_untimed(monkeypatch, caplog):
    def fail():
        raise AssertionError("nothing may be timed")

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: False)
    assert precision.resolve("auto", "laptop", False, fail, None, None) == ("float32", {})
    assert "no bfloat16 units" in caplog.text


def test_precision_timing_that_fails_leaves_float32_and_the_error_to_the_search(caplog,
                                                                              monkeypatch):
    def broken():
        raise ValueError("kernel_size must be positive")

    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: None)  # a CPU that says nothing

    x, y = images(4)
    assert precision.resolve("auto", "laptop", False, broken, x, y) == ("float32", {})
    assert "kernel_size must be positive" in caplog.text


def test_precision_calibration_times_both_policies_and_restores_the_policy():
    x, y = images(32)
    hypermodel = fc_hypermodel(len(y))
    before = keras.mixed_precision.global_policy().name
    built = []

    def build():
        built.append(keras.mixed_precision.global_policy().name)
        return hypermodel.build(kt.HyperParameters())

    rates = precision.calibrate(build, x, y, steps=2, rounds=2, clear_ratio=1e9)
    assert built == list(precision.CANDIDATES)
    assert set(rates) == set(precision.CANDIDATES) and all(v > 0 for v in rates.values())
    assert keras.mixed_precision.global_policy().name == before
