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

import math

import keras
import numpy as np


def kernel_gradient_rms(model, images, labels, loss) -> list[tuple[str, float]]:
    """(layer name, RMS of its kernel's gradient) in the model's order, for one batch in
    training mode (batch norm uses the batch's statistics, dropout is on)."""
    variables = model.trainable_variables
    kernels = [i for i, v in enumerate(variables) if v.path.endswith("kernel")]
    _, grads = _loss_and_gradients(model, images, labels, loss)
    return [(variables[i].path.split("/")[0],
             float(np.sqrt(np.mean(np.square(np.asarray(grads[i], dtype=np.float64))))))
            for i in kernels]


def gradient_vector(model, images, labels, loss) -> np.ndarray:
    """The loss gradient over every trainable weight, flattened: one mini-batch's estimate of
    the gradient, at the model's current weights (training mode)."""
    return _flat(_loss_and_gradients(model, images, labels, loss)[1])


def loss_along_gradient(model, images, labels, loss, steps) -> dict:
    """How the loss landscape looks from the model's weights w, on one batch: the gradient g
    there, then the weights moved to w - s g for each step size s in ``steps``. ``loss_range``:
    the loss's spread (max - min) over w and those points; ``gradient_change``: the largest
    distance between g and the gradient at a moved point, relative to |g| (how far the gradient
    predicts its neighbourhood). Both small: a smooth landscape (Santurkar et al., 2018, measure
    batch norm's effect so). The weights, batch norm's statistics included, are put back."""
    saved = [_array(v) for v in model.variables]
    starts = [_array(v) for v in model.trainable_variables]
    try:
        value, grads = _loss_and_gradients(model, images, labels, loss)
        flat = _flat(grads)
        losses, changes = [value], []
        for step in steps:
            for variable, start, grad in zip(model.trainable_variables, starts, grads,
                                             strict=True):
                variable.assign(start - step * np.asarray(grad, dtype=start.dtype))
            moved_value, moved_grads = _loss_and_gradients(model, images, labels, loss)
            losses.append(moved_value)
            changes.append(float(np.linalg.norm(_flat(moved_grads) - flat)))
    finally:
        for variable, kept in zip(model.variables, saved, strict=True):
            variable.assign(kept)
    finite = np.isfinite(losses).all() and np.isfinite(changes).all()
    scale = float(np.linalg.norm(flat))
    return {"loss_range": float(np.ptp(losses)) if finite else math.nan,
            "gradient_change": max(changes) / scale if finite and scale > 0 else math.nan}


def _array(variable) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable.value))


def _flat(grads) -> np.ndarray:
    return np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in grads])


def _loss_and_gradients(model, images, labels, loss) -> tuple[float, list]:
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
    return float(value), tape.gradient(value, model.trainable_variables)


def _jax_gradients(model, images, labels, loss):
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_of(weights):
        logits, _ = model.stateless_call(weights, non_trainable, images, training=True)
        return loss(labels, logits)

    value, grads = jax.value_and_grad(loss_of)(trainable)
    return float(value), grads
