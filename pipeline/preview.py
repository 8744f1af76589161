"""The augmentation preview: the same training images under the policy, several draws each."""

from __future__ import annotations

import io

import numpy as np

from pipeline.augment import build_augmentation, describe
from pipeline.config import AugmentationParams


def pick_examples(labels: np.ndarray, count: int) -> np.ndarray:
    """The first image of each of the first ``count`` classes (cycling if there are fewer)."""
    picks, used = [], set()
    classes = np.unique(labels)
    for position in range(count):
        cls = classes[position % len(classes)]
        candidates = [i for i in np.flatnonzero(labels == cls) if i not in used]
        if not candidates:
            break
        picks.append(candidates[0])
        used.add(candidates[0])
    return np.asarray(picks)


def render_preview(
    images: np.ndarray, labels: np.ndarray, class_names: list[str],
    policy: AugmentationParams, samples: int, seed: int,
) -> bytes:
    """PNG bytes: one row per image, the original then ``samples`` augmented draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    augment = build_augmentation(policy, seed=seed)
    batch = np.asarray(images, dtype="float32")
    draws = [np.asarray(augment(batch, training=True)) for _ in range(samples)]

    rows, cols = len(images), samples + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.6), squeeze=False)
    for row in range(rows):
        shown = [batch[row]] + [draw[row] for draw in draws]
        for col, image in enumerate(shown):
            ax = axes[row, col]
            ax.imshow(np.clip(image, 0, 255).astype(np.uint8), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("original" if col == 0 else f"draw {col}", fontsize=8)
        axes[row, 0].set_ylabel(class_names[int(labels[row])], fontsize=8)
    fig.suptitle(f"Augmentation policy: {describe(policy)}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
