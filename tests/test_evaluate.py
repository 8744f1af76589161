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
