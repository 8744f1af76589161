"""Turn the augmentation policy into Keras preprocessing layers.

The layers act only when called with ``training=True`` and draw new randomness per image, so
the same stack serves the preview (prepare stage) and training (it sits at the front of the
model, which keeps it backend-agnostic). Inputs are float pixels in [0, 255].
"""

from __future__ import annotations

from pipeline.config import AugmentationParams

IMAGE_SIZE = 32


def describe(policy: AugmentationParams) -> str:
    """A short human-readable summary, e.g. 'flip, crop (pad 4)'."""
    parts = []
    if policy.flip:
        parts.append("flip")
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


def build_augmentation(policy: AugmentationParams, seed: int | None = None):
    """A ``keras.Sequential`` applying the policy (identity when every part is off)."""
    import keras
    from keras import layers

    value_range = (0, 255)

    def next_seed():
        # distinct, reproducible seeds per layer when a seed is given
        return None if seed is None else seed + len(stack)

    stack = []
    if policy.flip:
        stack.append(layers.RandomFlip("horizontal", seed=next_seed()))
    if policy.crop_padding:
        # A shift of up to N pixels with reflected borders, drawn per image, is padding by N and
        # cropping back to 32x32 at a random position (RandomCrop draws one position per batch).
        shift = policy.crop_padding / IMAGE_SIZE
        stack.append(layers.RandomTranslation(shift, shift, fill_mode="reflect",
                                              interpolation="nearest", seed=next_seed()))
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
