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


def precision_policy(profile: str) -> str:
    """The Keras dtype policy of a profile. laptop: float32. gpu: mixed_bfloat16 on a GPU that
    has bfloat16 tensor cores (compute capability 8.0 and up: Ampere, Hopper...), which needs
    no loss scaling; mixed_float16 on an older GPU or one whose capability is unknown; and
    float32 when there is no GPU, where mixed precision is slower, not faster."""
    if profile != "gpu":
        return "float32"
    capability = gpu_capability()
    if capability is None:
        log.warning("profile gpu without a GPU: keeping float32 (mixed precision only pays on "
                    "a GPU)")
        return "float32"
    return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"


def gpu_capability() -> tuple[int, int] | None:
    """The first GPU's CUDA compute capability; (0, 0) for a GPU that does not say; None
    without a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            return None
        return parse_capability(getattr(gpus[0], "compute_capability", None))
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        details = tf.config.experimental.get_device_details(gpus[0])
        return parse_capability(details.get("compute_capability"))
    return None  # other backends: no GPU detection here, so no mixed precision


def parse_capability(value) -> tuple[int, int]:
    """'9.0' or (9, 0) -> (9, 0); anything else -> (0, 0), unknown."""
    if isinstance(value, str):
        value = value.split(".")
    try:
        major, minor = (int(v) for v in value)
    except (TypeError, ValueError):
        return (0, 0)
    return (major, minor)


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
