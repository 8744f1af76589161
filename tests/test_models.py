"""Models, augmentation layers and the training recipe, on tiny inputs."""

import numpy as np
import pytest

from pipeline.augment import build_augmentation
from pipeline.config import AugmentationParams
from pipeline.models import FAMILIES
from pipeline.training import RECIPE_DEFAULTS, make_optimizer, make_schedule

STATS = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}


def test_augmentation_differs_per_image_in_training_and_is_identity_at_inference():
    policy = AugmentationParams(flip=True, crop_padding=4, erasing=0.5)
    augment = build_augmentation(policy, seed=3)
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, size=(1, 32, 32, 3)).astype("float32")
    batch = np.repeat(one, 16, axis=0)  # 16 copies of the same image
    trained = np.asarray(augment(batch, training=True))
    distinct = {trained[i].tobytes() for i in range(16)}
    assert len(distinct) > 8  # drawn per image, not once per batch
    assert trained.shape == batch.shape
    np.testing.assert_array_equal(np.asarray(augment(batch, training=False)), batch)


def test_empty_policy_is_identity():
    policy = AugmentationParams(flip=False, crop_padding=0)
    batch = np.ones((2, 32, 32, 3), "float32")
    np.testing.assert_array_equal(np.asarray(build_augmentation(policy)(batch, training=True)),
                                  batch)


@pytest.mark.parametrize("overrides", [
    {},
    {"stages": 1, "convs_per_stage": 1, "residual": False, "head": "flatten"},
    {"stages": 4, "batch_norm": False, "activation": "sigmoid", "dense_units": 64,
     "dropout": 0.2, "head": "global_avg", "filter_growth": 1.5},
])
def test_cnn_builds_and_predicts(overrides):
    build, defaults = FAMILIES["cnn"]
    model = build({**defaults, **overrides}, 10, STATS, AugmentationParams())
    out = model.predict(np.zeros((2, 32, 32, 3), "uint8"), verbose=0)
    assert out.shape == (2, 10)
    has_add = any(layer.name.endswith("_residual") for layer in model.layers)
    assert has_add == ({**defaults, **overrides}["residual"]
                       and {**defaults, **overrides}["convs_per_stage"] > 1)


def test_default_cnn_is_resnet9_sized():
    build, defaults = FAMILIES["cnn"]
    model = build(dict(defaults), 10, STATS, AugmentationParams())
    assert 300_000 < model.count_params() < 600_000


def test_fc_has_no_convolution():
    build, defaults = FAMILIES["fc"]
    model = build({**defaults, "layers": 2, "units": 64}, 100, STATS, AugmentationParams())
    assert not any("conv" in layer.name for layer in model.layers)
    assert model.output_shape == (None, 100)


def test_warmup_cosine_schedule_shape():
    schedule = make_schedule("warmup_cosine", 0.2, total_steps=100, warmup_fraction=0.2)
    lr = [float(schedule(step)) for step in (0, 10, 20, 60, 100)]
    assert lr[0] < 0.02 and lr[1] == pytest.approx(0.1, rel=0.05)
    assert lr[2] == pytest.approx(0.2, rel=0.01) and 0 < lr[3] < 0.2 and lr[4] < 1e-3


@pytest.mark.parametrize("name", ["constant", "step", "exponential", "cosine"])
def test_schedules_end_no_higher_than_they_start(name):
    schedule = make_schedule(name, 0.1, total_steps=50)
    start = schedule if isinstance(schedule, float) else float(schedule(0))
    end = schedule if isinstance(schedule, float) else float(schedule(50))
    assert start == pytest.approx(0.1) and end <= start


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])
def test_every_optimizer_builds(optimizer):
    opt = make_optimizer({**RECIPE_DEFAULTS, "optimizer": optimizer}, total_steps=10)
    assert opt is not None


def test_final_epochs_fit_the_budget():
    from pipeline.tune import final_epochs_within_budget

    # 20 s for 10k training + 6k validation images (= 12k training-image equivalents):
    # 45k + 6k images cost 47k equivalents = 78.3 s; 14 minutes (10% spare) hold 9 epochs
    assert final_epochs_within_budget(12, 14 * 60, 20.0, 10_000, 45_000, 6_000) == 9
    assert final_epochs_within_budget(12, 60 * 60, 20.0, 10_000, 45_000, 6_000) == 12
    assert final_epochs_within_budget(12, 10, 20.0, 10_000, 45_000, 6_000) == 1
    assert final_epochs_within_budget(5, 60, None, 10_000, 45_000, 6_000) == 5


def test_pad_crop_draws_a_reflect_padded_window_per_image():
    from pipeline.augment import RandomPadCrop

    image = np.arange(32 * 32 * 3, dtype="float32").reshape(1, 32, 32, 3)
    batch = np.repeat(image, 8, axis=0)
    out = np.asarray(RandomPadCrop(4, seed=1)(batch, training=True))
    padded = np.pad(image[0], [[4, 4], [4, 4], [0, 0]], mode="reflect")
    windows = {padded[a:a + 32, b:b + 32].tobytes() for a in range(9) for b in range(9)}
    assert all(out[i].tobytes() in windows for i in range(8))
    assert len({out[i].tobytes() for i in range(8)}) > 4  # offsets differ per image
    np.testing.assert_array_equal(np.asarray(RandomPadCrop(4)(batch, training=False)), batch)
