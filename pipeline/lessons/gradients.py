"""Per-layer gradient sizes (RMS per weight) of a Keras model, on the TensorFlow or the JAX backend.

Keras 3 has no backend-neutral gradient call, so this is one small path per backend: a
``tf.GradientTape`` on TensorFlow, ``jax.grad`` over ``model.stateless_call`` on JAX (the way
Keras' own JAX trainer differentiates). Both return the same thing: the root mean square of
the loss gradient over each layer's kernel weights, input side first. Per weight, not the
kernel's whole L2 norm: a 3072x64 input kernel and a 64x10 output kernel differ 300-fold in
size, and a norm would compare their sizes as much as their gradients. Tested on both
backends (tests/test_lessons.py).
"""

from __future__ import annotations

import keras
import numpy as np


def kernel_gradient_rms(model, images, labels, loss) -> list[tuple[str, float]]:
    """(layer name, RMS of its kernel's gradient) in the model's order, for one batch in
    training mode (batch norm uses the batch's statistics, dropout is on)."""
    variables = model.trainable_variables
    kernels = [i for i, v in enumerate(variables) if v.path.endswith("kernel")]
    grads = _gradients(model, images, labels, loss)
    return [(variables[i].path.split("/")[0],
             float(np.sqrt(np.mean(np.square(np.asarray(grads[i], dtype=np.float64))))))
            for i in kernels]


def gradient_vector(model, images, labels, loss) -> np.ndarray:
    """The loss gradient over every trainable weight, flattened: one mini-batch's estimate of
    the gradient, at the model's current weights (training mode)."""
    return np.concatenate([np.asarray(g, dtype=np.float64).ravel()
                           for g in _gradients(model, images, labels, loss)])


def _gradients(model, images, labels, loss) -> list:
    images = np.asarray(images, dtype="float32")  # pixels in [0, 255], as the stem expects
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_gradients(model, images, labels, loss)
    if backend == "jax":
        return _jax_gradients(model, images, labels, loss)
    raise NotImplementedError(f"gradients are wired for tensorflow and jax, not {backend}")


def _tensorflow_gradients(model, images, labels, loss):
    import tensorflow as tf

    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        value = loss(labels, model(x, training=True))
    return tape.gradient(value, model.trainable_variables)


def _jax_gradients(model, images, labels, loss):
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_of(weights):
        logits, _ = model.stateless_call(weights, non_trainable, images, training=True)
        return loss(labels, logits)

    return jax.grad(loss_of)(trainable)
