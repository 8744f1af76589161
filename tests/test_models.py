"""Models, augmentation layers and the training recipe, on tiny inputs."""

import keras
import numpy as np
import pytest

from pipeline.augment import build_augmentation
from pipeline.config import AugmentationParams
from pipeline.families import FAMILIES
from pipeline.training import RECIPE_DEFAULTS, make_optimizer

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
    build, defaults = FAMILIES["cnn"].builder, FAMILIES["cnn"].defaults
    model = build({**defaults, **overrides}, 10, STATS, AugmentationParams())
    out = model.predict(np.zeros((2, 32, 32, 3), "uint8"), verbose=0)
    assert out.shape == (2, 10)
    has_add = any(layer.name.endswith("_residual") for layer in model.layers)
    cfg = {**defaults, **overrides}
    assert has_add == (cfg["residual"] and cfg["convs_per_stage"] > 1)


def test_default_cnn_is_resnet9_sized():
    build, defaults = FAMILIES["cnn"].builder, FAMILIES["cnn"].defaults
    model = build(dict(defaults), 10, STATS, AugmentationParams())
    assert 300_000 < model.count_params() < 600_000


def test_fc_has_no_convolution():
    build, defaults = FAMILIES["fc"].builder, FAMILIES["fc"].defaults
    model = build({**defaults, "layers": 2, "units": 64}, 100, STATS, AugmentationParams())
    assert not any("conv" in layer.name for layer in model.layers)
    assert model.output_shape == (None, 100)


@pytest.mark.parametrize("optimizer, kind, momentum, nesterov", [
    ("sgd", "SGD", 0.0, False), ("momentum", "SGD", 0.9, False), ("nesterov", "SGD", 0.9, True),
    ("adam", "Adam", None, None), ("adamw", "AdamW", None, None),
    ("rmsprop", "RMSprop", None, None)])
def test_every_optimizer_builds_what_its_name_says(optimizer, kind, momentum, nesterov):
    built = make_optimizer({**RECIPE_DEFAULTS, "optimizer": optimizer})
    assert type(built).__name__ == kind
    # adam's decay is L2 in the loss (training.coupled_l2), every other one's in the optimizer
    decay = None if optimizer == "adam" else pytest.approx(RECIPE_DEFAULTS["weight_decay"])
    assert built.weight_decay == decay
    if momentum is not None:
        assert built.momentum == pytest.approx(momentum) and built.nesterov is nesterov


def test_default_cnn_is_the_resnet9_layout_and_all_blocks_add_the_middle_one():
    build, defaults = FAMILIES["cnn"].builder, FAMILIES["cnn"].defaults
    ends = build(dict(defaults), 10, STATS, AugmentationParams())
    every = build({**defaults, "block_stages": "all"}, 10, STATS, AugmentationParams())
    convs = lambda m: sum("conv" in layer.name for layer in m.layers)  # noqa: E731
    assert convs(ends) == 8 and convs(every) == 10  # ResNet-9: 8 convs and a linear head
    residuals = [layer.name for layer in ends.layers if layer.name.endswith("_residual")]
    assert residuals == ["s1_residual", "s3_residual"]
    with pytest.raises(ValueError, match="block_stages must be all or ends, not 'middle'"):
        build({**defaults, "block_stages": "middle"}, 10, STATS, AugmentationParams())


@pytest.mark.parametrize("head, layer_type", [
    ("flatten", "Flatten"), ("global_avg", "GlobalAveragePooling2D"),
    ("global_max", "GlobalMaxPooling2D")])
def test_each_head_builds_its_own_layer_and_an_unknown_one_is_refused(head, layer_type):
    build, defaults = FAMILIES["cnn"].builder, FAMILIES["cnn"].defaults
    model = build({**defaults, "head": head}, 10, STATS, AugmentationParams())
    pooled = [type(layer).__name__ for layer in model.layers
              if layer.name in ("flatten", "global_pool")]
    assert pooled == [layer_type]
    # a configuration written in code is not checked by a space file's loader
    with pytest.raises(ValueError, match="head must be one of flatten, global_avg, "
                                         "global_max, not 'gap'"):
        build({**defaults, "head": "gap"}, 10, STATS, AugmentationParams())


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


@pytest.mark.parametrize(("init", "gain"), [("glorot_uniform", None), ("he_normal", 2.0)])
def test_conv_init_sets_the_kernels_scale(init, gain):
    build, defaults = FAMILIES["cnn"].builder, FAMILIES["cnn"].defaults
    keras.utils.set_random_seed(0)
    model = build({**defaults, "batch_norm": False, "conv_init": init}, 10, STATS,
                  AugmentationParams())
    kernel = np.asarray(model.get_layer("s1_c1_conv").kernel)  # 3x3, 32 -> 32 channels
    fan_in, fan_out = 3 * 3 * 32, 3 * 3 * 32
    expected = gain / fan_in if gain else 2.0 / (fan_in + fan_out)
    assert kernel.var() == pytest.approx(expected, rel=0.15)
