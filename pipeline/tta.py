"""Test-time augmentation: a model's class probabilities averaged over views of each image
that training taught it to treat alike (its mirror image; small translations)."""

from __future__ import annotations

import numpy as np


def views(images: np.ndarray, flip: bool, translate: int) -> list[np.ndarray]:
    """The original, its mirror (``flip``) and, for ``translate`` = t > 0, each of those moved
    t pixels down-right and up-left (edges reflected, as the training crop pads)."""
    base = [images, images[:, :, ::-1]] if flip else [images]
    if not translate:
        return base
    t = translate
    out = list(base)
    for view in base:
        padded = np.pad(view, [(0, 0), (t, t), (t, t), (0, 0)], mode="reflect")
        out.append(padded[:, :-2 * t, :-2 * t])  # content moves down-right
        out.append(padded[:, 2 * t:, 2 * t:])  # content moves up-left
    return out


def view_probabilities(model, images: np.ndarray, batch_size: int, flip: bool = False,
                       translate: int = 0) -> list[np.ndarray]:
    """The softmax of each view, in ``views``' order (the first is the image itself)."""
    from scipy.special import softmax

    return [softmax(model.predict(view, batch_size=batch_size, verbose=0), axis=1)
            for view in views(images, flip, translate)]


def probabilities(model, images: np.ndarray, batch_size: int, flip: bool = False,
                  translate: int = 0) -> np.ndarray:
    """The mean softmax over the views (one view: the model's own prediction)."""
    return np.mean(view_probabilities(model, images, batch_size, flip, translate), axis=0)
