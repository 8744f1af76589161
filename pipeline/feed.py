"""How a training's arrays reach ``Model.fit``: one input pipeline for the whole run.

Given arrays, Keras' TensorFlow backend builds a tf.data iterator for every epoch and drops the
previous one at the epoch's start; under a training's load that drop waited on tf.data's thread
pool for up to 35 s on the 2-core machines, on some epochs and not others (bench/README.md,
"An epoch's first step waits"). Here the arrays become one repeated pipeline with
``steps_per_epoch``, so fit keeps a single iterator: the same batches (each epoch a fresh
shuffle of every image, the last batch of an epoch partial), without the wait. The other
backends iterate numpy batches, which have no such wait, and get the arrays unchanged.
"""

from __future__ import annotations

import math

import keras
import numpy as np


def fit_inputs(x, y, batch_size: int) -> dict:
    """``fit``'s data arguments for training arrays ``x``, ``y``: a repeated tf.data pipeline
    and its ``steps_per_epoch`` on TensorFlow, the arrays and ``batch_size`` elsewhere (or when
    they are not plain arrays)."""
    arrays = isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    if keras.backend.backend() != "tensorflow" or not arrays or len(x) == 0:
        return {"x": x, "y": y, "batch_size": batch_size}
    import tensorflow as tf

    # shuffled indices, a new order each epoch (seeded by keras.utils.set_random_seed), gathered
    # in batches from the arrays held once: as Keras' own pipeline for arrays, plus the repeat
    count = len(x)
    order = (tf.data.Dataset.range(count)
             .shuffle(count, reshuffle_each_iteration=True)
             .batch(batch_size)
             .repeat())
    held = tf.data.Dataset.from_tensors((x, y)).repeat()
    batches = tf.data.Dataset.zip(order, held).map(
        lambda index, data: (tf.gather(data[0], index), tf.gather(data[1], index)),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    # as Keras does for arrays: tf.data's static rewrites would serialise the held arrays
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    batches = batches.with_options(options)
    # shuffle=False: the pipeline shuffles; fit's own flag would only warn that it is ignored
    return {"x": batches, "steps_per_epoch": math.ceil(count / batch_size), "shuffle": False}
