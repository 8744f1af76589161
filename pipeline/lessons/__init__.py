"""The lecture as experiments: one controlled experiment per claim, a figure and a verdict
computed from the numbers (``dvc repro lessons/dvc.yaml`` writes reports/lessons.md).

This module names the claims and imports nothing heavy, so params validation can use it.
"""

from __future__ import annotations

# name -> (title, the claim as the lecture makes it)
CLAIMS = {
    "learning_rate": ("Learning rate",
                      "too small a learning rate is slow, too large a one diverges"),
    "momentum": ("Momentum", "momentum damps oscillation and speeds progress"),
    "batch_size": ("Mini-batch noise", "smaller batches give noisier gradient steps"),
    "annealing": ("Annealing", "decaying the learning rate beats a constant one"),
    "adam_robustness": ("Adam", "Adam is more robust to the learning rate than SGD"),
    "inductive_bias": ("Inductive bias",
                       "convolution beats a fully connected net of its size or larger, and a "
                       "shifted bicycle is still a bicycle to it"),
    "regularisation_gap": ("Augmentation and dropout",
                           "augmentation and dropout narrow the train-validation gap"),
    "early_stopping": ("Early stopping",
                       "stopping when validation loss turns up keeps the better weights"),
    "vanishing_gradients": ("Depth and vanishing gradients",
                            "sigmoid stacks lose their gradient in depth; ReLU and batch norm "
                            "keep it"),
    "batch_norm": ("Batch norm", "batch norm allows higher learning rates and deeper nets"),
    "bn_landscape": ("Batch norm and the loss landscape",
                     "batch norm makes the loss landscape smoother"),
    "ablations": ("Ablation cards", "each part of the tuned CNN earns its place"),
    "depth_vs_width": ("Depth against width",
                       "deeper nets reach higher accuracy, while more neurons in a shallow "
                       "net often do not help"),
    "adam_generalisation": ("Adam early and late",
                            "Adam is best in the first stages of training but can generalise "
                            "worse and needs more regularisation (decoupled weight decay)"),
    "robustness": ("Colour and occlusion",
                   "slight colour changes and partly hidden objects are inductive biases "
                   "that augmentation builds in"),
}
CLAIM_NAMES = tuple(CLAIMS)
