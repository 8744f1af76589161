"""The evaluate stage's scoring: flip test-time augmentation decides by the averaged views."""

import keras
import numpy as np

from pipeline.evaluate import _evaluate_model


def half_image_model():
    """Logit 0 reads the left half of the image, logit 1 the right half at twice the weight."""
    inputs = keras.Input((32, 32, 3))
    flat = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inputs, dense(flat))
    left = np.zeros((32, 32, 3), "float32")
    left[:, :16] = 1.0
    kernel = np.stack([left.ravel(), 2 * left[:, ::-1].ravel()], axis=1) / 500
    dense.set_weights([kernel])
    return model


def test_flip_tta_averages_an_image_with_its_mirror():
    from pipeline.config import EvaluateParams

    images = np.zeros((4, 32, 32, 3), "uint8")
    images[:, :, :16] = 1  # bright left half: the single view says class 0 ...
    labels = np.ones(4, "int64")  # ... its mirror says class 1, more confidently
    model = half_image_model()
    with_tta, predicted = _evaluate_model(model, images, labels,
                                          EvaluateParams(batch_size=2, flip_tta=True))
    assert with_tta["test_accuracy"] == 1.0 and with_tta["test_accuracy_single_view"] == 0.0
    assert list(predicted) == [1, 1, 1, 1] and with_tta["flip_tta"] is True
    single, predicted = _evaluate_model(model, images, labels,
                                        EvaluateParams(batch_size=2, flip_tta=False))
    assert single["test_accuracy"] == single["test_accuracy_single_view"] == 0.0
    assert list(predicted) == [0, 0, 0, 0]


def test_translated_views_move_the_content_and_keep_the_image_size():
    from pipeline.tta import views

    images = np.zeros((1, 32, 32, 3), "uint8")
    images[0, 10, 20] = 255  # one bright pixel
    out = views(images, flip=True, translate=1)
    assert len(out) == 6 and all(v.shape == images.shape for v in out)
    spots = [tuple(int(i) for i in np.argwhere(v[0, :, :, 0] == 255)[0]) for v in out]
    # original, mirror, then each moved down-right and up-left by one pixel
    assert spots == [(10, 20), (10, 11), (11, 21), (9, 19), (11, 12), (9, 10)]
    assert len(views(images, flip=False, translate=0)) == 1


def test_seed_spread_and_the_gap_against_it():
    from pipeline.evaluate import seed_comparison, seed_summary

    assert seed_summary([0.88]) == {"count": 1, "test_accuracy_mean": 0.88}
    three = seed_summary([0.88, 0.87, 0.89])
    assert three["count"] == 3 and three["test_accuracy_mean"] == 0.88
    assert three["test_accuracy_std"] == 0.01  # sample standard deviation (n - 1)
    assert (three["test_accuracy_min"], three["test_accuracy_max"]) == (0.87, 0.89)
    assert seed_comparison([0.88], [0.60, 0.61]) == {}  # no spread with one seed
    clear = seed_comparison([0.88, 0.87, 0.89], [0.60, 0.61, 0.59])
    assert clear["seed_mean_difference"] == 0.28 and clear["seed_welch_p_value"] < 1e-4
    noise = seed_comparison([0.88, 0.86, 0.90], [0.87, 0.89, 0.85])
    assert noise["seed_welch_p_value"] > 0.5  # a gap inside the spread is no evidence


def test_replicates_of_another_configuration_are_refused(tmp_path):
    """Models trained for an older best configuration must not enter the seed spread."""
    import json

    import pytest

    from pipeline.errors import DataError
    from pipeline.seeds import MANIFEST, seed_models

    folder = tmp_path / "cnn" / "seeds"
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({
        "family": "cnn", "first_seed": 1, "hyperparameters": {"learning_rate": 0.1},
        "seeds": [{"seed": 2, "model": "seed-2.keras"}]}))
    assert seed_models(tmp_path, "cnn", {"learning_rate": 0.1}) == [(2, folder /
                                                                      "seed-2.keras")]
    with pytest.raises(DataError, match="another configuration"):
        seed_models(tmp_path, "cnn", {"learning_rate": 0.2})
    assert seed_models(tmp_path, "fc", {}) == []  # no manifest: the tune stage's model only


def _correct(only_first: int, only_second: int) -> tuple[np.ndarray, np.ndarray]:
    both = 50  # images both get right: they do not enter the test
    first = np.r_[np.ones(only_first + both), np.zeros(only_second)]
    second = np.r_[np.zeros(only_first), np.ones(both + only_second)]
    return first, second


def test_mcnemar_log10_p_value_is_exact_where_the_p_value_underflows():
    import math

    from pipeline.stats import format_p, mcnemar_exact

    for only_first, only_second in ((30, 70), (5, 40), (100, 3000), (412, 3611)):
        result = mcnemar_exact(*_correct(only_first, only_second))
        n, fewer = only_first + only_second, min(only_first, only_second)
        # exact in Python's integers: 2 * sum C(n, k) for k <= fewer, over 2^n
        exact = math.log10(2 * sum(math.comb(n, k) for k in range(fewer + 1))) \
            - n * math.log10(2)
        assert abs(result["log10_p_value"] - exact) < 1e-9, (only_first, only_second)
        if result["p_value"] > 0:
            assert abs(math.log10(result["p_value"]) - exact) < 1e-9
        else:  # too small for a float: the report still gives its value
            mantissa, exponent = format_p(0.0, exact)[len("p = "):].split("e")
            assert abs(math.log10(float(mantissa)) + int(exponent) - exact) < 0.05
    assert mcnemar_exact(*_correct(40, 40))["log10_p_value"] == 0.0
    assert format_p(0.0) == "p < 1e-300"  # no logarithm known: the bound


def test_bootstrap_interval_covers_the_accuracy_and_narrows_with_more_images():
    from pipeline.stats import bootstrap_accuracy_ci

    rng = np.random.default_rng(1)
    small = (rng.random(500) < 0.8).astype(float)
    large = (rng.random(10_000) < 0.8).astype(float)
    low_s, high_s = bootstrap_accuracy_ci(small, 1000, seed=0)
    low_l, high_l = bootstrap_accuracy_ci(large, 1000, seed=0)
    assert low_s < small.mean() < high_s and low_l < large.mean() < high_l
    assert high_l - low_l < (high_s - low_s) / 3  # about sqrt(20) narrower
    assert bootstrap_accuracy_ci(small, 1000, seed=0) == (low_s, high_s)  # seeded
    assert bootstrap_accuracy_ci(np.ones(100)) == (1.0, 1.0)
