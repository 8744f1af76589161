"""Data parallelism over the accelerators of one host, through each backend's own mechanism:
``tf.distribute.MirroredStrategy`` handed to KerasTuner (which builds and fits every trial's
model in its scope) on TensorFlow, ``keras.distribution.DataParallel`` on JAX. With one device,
or on CPU under ``auto``, nothing changes.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def accelerators() -> list[str]:
    import keras

    return [d for d in _devices(keras) if "gpu" in d.lower() or "tpu" in d.lower()]


def data_parallel(mode: str) -> dict:
    """Set up data parallelism for ``mode`` (auto: over 2+ GPUs; on: over every device of the
    default kind, CPU devices included; off). Returns extra tuner arguments (TensorFlow's
    strategy) and sets the global Keras distribution on JAX."""
    import keras

    if mode == "off":
        return {}
    devices = accelerators() if mode == "auto" else _devices(keras)
    if len(devices) < 2:
        return {}
    backend = keras.backend.backend()
    log.info("data parallel over %d devices (%s): %s", len(devices), backend,
             ", ".join(devices))
    if backend == "tensorflow":
        import tensorflow as tf

        return {"distribution_strategy": tf.distribute.MirroredStrategy()}
    if backend == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return {}
    log.warning("data parallelism is not wired for the %s backend; using one device", backend)
    return {}


def _devices(keras) -> list[str]:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        default = jax.devices()
        return [f"{d.platform}:{d.id}" for d in default]
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return keras.distribution.list_devices()
