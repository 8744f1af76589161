"""fit's inputs from training arrays: one iterator for a whole run, every image once an epoch."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.feed import fit_inputs

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the repeated pipeline is the TensorFlow backend's")


def _arrays(count=50):
    x = np.arange(count, dtype="float32").reshape(count, 1)
    return x, np.arange(count, dtype="int64") % 3


def test_each_epoch_shows_every_image_once_in_a_new_order():
    keras.utils.set_random_seed(0)
    x, y = _arrays()
    inputs = fit_inputs(x, y, batch_size=16)
    assert inputs["steps_per_epoch"] == 4
    batches = iter(inputs["x"])
    epochs = []
    for _ in range(3):
        taken = [next(batches) for _ in range(inputs["steps_per_epoch"])]
        assert [len(b[0]) for b in taken] == [16, 16, 16, 2]  # the last batch partial
        seen = np.concatenate([b[0].numpy()[:, 0] for b in taken]).astype(int)
        labels = np.concatenate([b[1].numpy() for b in taken])
        assert sorted(seen) == list(range(50))
        assert (labels == seen % 3).all()  # images keep their labels
        epochs.append(seen)
    assert not (epochs[0] == epochs[1]).all() and not (epochs[1] == epochs[2]).all()


def test_a_run_trains_every_epoch_on_one_iterator(monkeypatch):
    """Keras makes an iterator per epoch from arrays; from these inputs one for the run."""
    keras.utils.set_random_seed(0)
    x, y = _arrays(40)
    made = []
    original = tf.data.Dataset.__iter__

    def counted(self):
        made.append(1)
        return original(self)

    monkeypatch.setattr(tf.data.Dataset, "__iter__", counted)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = []
    count_steps = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: steps.append(0),
        on_train_batch_end=lambda batch, logs: steps.__setitem__(-1, steps[-1] + 1))
    history = model.fit(**fit_inputs(x, y, 16), epochs=3, verbose=0, callbacks=[count_steps])
    assert len(history.history["loss"]) == 3
    assert steps == [math.ceil(40 / 16)] * 3
    assert len(made) == 1


def test_anything_but_two_arrays_goes_to_fit_unchanged():
    x, y = _arrays(8)
    as_lists = fit_inputs(x.tolist(), y.tolist(), 4)
    assert as_lists == {"x": x.tolist(), "y": y.tolist(), "batch_size": 4}
