"""Turn the augmentation policy into Keras preprocessing layers.

The layers act only when called with ``training=True`` and draw new randomness per image, so
the same stack serves the preview (prepare stage) and training (it sits at the front of the
model, which keeps it backend-agnostic). Inputs are float pixels in [0, 255].
"""

from __future__ import annotations

import keras
from keras import layers, ops

from pipeline.config import AugmentationParams


@keras.saving.register_keras_serializable(package="cifar_automl")
class RandomPadCrop(layers.Layer):
    """Pad by ``padding`` pixels (reflected), then crop back at a random offset per image.

    Keras's RandomCrop draws one offset per batch (and returns the input uncropped at
    inference); this draws one per image, with two gathers, which costs next to nothing.
    """

    def __init__(self, padding: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.padding = padding
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training or not self.padding:
            return images
        p = self.padding
        shape = ops.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        padded = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
        offsets = keras.random.randint((batch, 2), 0, 2 * p + 1, seed=self.seed_generator,
                                       dtype="int32")
        rows = offsets[:, 0:1] + ops.arange(height, dtype="int32")[None, :]
        cols = offsets[:, 1:2] + ops.arange(width, dtype="int32")[None, :]
        out = ops.take_along_axis(padded, rows[:, :, None, None], axis=1)
        return ops.take_along_axis(out, cols[:, None, :, None], axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "seed": self.seed}


@keras.saving.register_keras_serializable(package="cifar_automl")
class AlternatingFlip(layers.Layer):
    """Horizontal flips that alternate per image instead of a coin toss per epoch (airbench):
    each image changes side every epoch, and a bit of its own pixels (the parity of its top-left
    4x4 patch's sum) says which side it starts on, so any two epochs in a row show it both
    ways. The layer counts its training calls; ``steps_per_epoch`` turns that into the epoch."""

    def __init__(self, steps_per_epoch: int, **kwargs):
        super().__init__(**kwargs)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.calls = self.add_weight(shape=(), initializer="zeros", dtype="int32",
                                     trainable=False, name="training_calls")

    def call(self, images, training=False):
        if not training:
            return images
        epoch = self.calls // self.steps_per_epoch
        self.calls.assign(self.calls + 1)
        # pixels are whole numbers up to 255: exact in every float type, so the bit is stable
        patch_sum = ops.sum(ops.cast(images[:, :4, :4, :], "int32"), axis=(1, 2, 3))
        mirrored = ops.equal((patch_sum + epoch) % 2, 1)
        return ops.where(mirrored[:, None, None, None], ops.flip(images, axis=2), images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "steps_per_epoch": self.steps_per_epoch}


def describe(policy: AugmentationParams) -> str:
    """A short human-readable summary, e.g. 'flip, crop (pad 4)'."""
    parts = []
    if policy.flip:
        parts.append("alternating flip" if policy.alternate_flip else "flip")
    if policy.crop_padding:
        parts.append(f"crop (pad {policy.crop_padding})")
    if policy.rotation:
        parts.append(f"rotation ±{policy.rotation:g}°")
    for name in ("brightness", "contrast", "saturation"):
        if getattr(policy, name):
            parts.append(f"{name} ±{getattr(policy, name):g}")
    if policy.erasing:
        parts.append(f"erasing p={policy.erasing:g}")
    return ", ".join(parts) or "none"


def build_augmentation(policy: AugmentationParams, seed: int | None = None,
                       steps_per_epoch: int = 1):
    """A ``keras.Sequential`` applying the policy (identity when every part is off);
    ``steps_per_epoch`` paces an alternating flip."""
    value_range = (0, 255)

    def next_seed():
        # distinct, reproducible seeds per layer when a seed is given
        return None if seed is None else seed + len(stack)

    stack = []
    if policy.flip and policy.alternate_flip:
        stack.append(AlternatingFlip(steps_per_epoch))
    elif policy.flip:
        stack.append(layers.RandomFlip("horizontal", seed=next_seed()))
    if policy.crop_padding:
        stack.append(RandomPadCrop(policy.crop_padding, seed=next_seed()))
    if policy.rotation:
        stack.append(layers.RandomRotation(policy.rotation / 360, fill_mode="reflect",
                                           seed=next_seed()))
    if policy.brightness:
        stack.append(layers.RandomBrightness(policy.brightness, value_range=value_range,
                                             seed=next_seed()))
    if policy.contrast:
        stack.append(layers.RandomContrast(policy.contrast, value_range=value_range,
                                           seed=next_seed()))
    if policy.saturation:
        # Keras: 0.5 leaves saturation as it is, 0 is greyscale, 1 fully saturated.
        half = policy.saturation / 2
        stack.append(layers.RandomSaturation((0.5 - half, 0.5 + half), value_range=value_range,
                                             seed=next_seed()))
    if policy.erasing:
        # a (p, p) range makes p the probability itself, not the top of a drawn range
        stack.append(layers.RandomErasing((policy.erasing, policy.erasing),
                                          value_range=value_range, seed=next_seed()))
    if not stack:
        stack.append(layers.Identity())  # an empty Sequential cannot be built
    return keras.Sequential(stack, name="augmentation")
