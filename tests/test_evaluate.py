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
    images = np.zeros((4, 32, 32, 3), "uint8")
    images[:, :, :16] = 1  # bright left half: the single view says class 0 ...
    labels = np.ones(4, "int64")  # ... its mirror says class 1, more confidently
    model = half_image_model()
    with_tta, predicted = _evaluate_model(model, images, labels, 2, flip_tta=True)
    assert with_tta["test_accuracy"] == 1.0 and with_tta["test_accuracy_single_view"] == 0.0
    assert list(predicted) == [1, 1, 1, 1] and with_tta["flip_tta"] is True
    single, predicted = _evaluate_model(model, images, labels, 2, flip_tta=False)
    assert single["test_accuracy"] == single["test_accuracy_single_view"] == 0.0
    assert list(predicted) == [0, 0, 0, 0]


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
