"""A model's analytic cost: what a search uses to give every trial the same compute, so that a
trial's budget is a count of operations and not a reading of this machine's clock."""

from __future__ import annotations


def forward_flops(model) -> int:
    """Multiply-adds x 2 of one image's forward pass through the convolutions and dense
    layers (what dominates; normalisation and pooling left out). A training step costs about
    three times this (forward, and the two halves of the backward pass)."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels_out = layer.output.shape
            k_h, k_w = layer.kernel_size
            total += 2 * height * width * k_h * k_w * layer.input.shape[-1] * channels_out
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)
