"""What a trial's images cost: the share of its rung's images a configuration may train on, so
that no trial gets more than the space's defaults would in the same time.

Measured (the default): a configuration's training images a second, timed once over a few of
its own steps, against the defaults' timed the same way. This charges what the final
training's clock charges: batch size, activations, normalisation and augmentation as well as
the convolutions (a 12-trial search picked batch 128 with gelu, equal in FLOPs to the
defaults and 0.64x their speed here, which the final clock cut to 16 of 26 epochs; the
search's own timings had seen 0.74x: bench/README.md, "3 paired seeds, measured").
Analytic (``tune.deterministic``, or epochs too short to time): forward FLOPs per image
(pipeline/models/flops.py), the same on a busy machine or an idle one.
"""

from __future__ import annotations

import json
import time

import keras

# the steps a timing leaves out (the first traces the graph, the second still warms caches)
# and the steps it times: the costliest batch of a search (512) at the smallest rung (one
# epoch of 10,000 images) holds 20 steps, so the timing fits in every trial of a real search
TIMING_SKIP, TIMING_STEPS = 2, 8
# a measured share this close to 1 counts as 1: timings are noisy (on the 2-core machine two
# runs of one configuration a minute apart differed by 20%, a timing and its own run's epoch by
# 2%: bench/README.md, "The rank search with measured costs"); this keeps the defaults' near
# neighbours' budgets out of most of that noise and still charges a configuration 20% slower
NOISE_TOLERANCE = 0.1


class ThroughputTimer(keras.callbacks.Callback):
    """Times training steps ``TIMING_SKIP`` to ``TIMING_SKIP + TIMING_STEPS`` of a fit and
    hands their images a second to ``on_timed``; ``stop``: end the fit there (a timing run
    that trains nothing anyone keeps)."""

    def __init__(self, batch_size: int, on_timed, stop: bool = False):
        super().__init__()
        self.batch_size, self.on_timed, self.stop = batch_size, on_timed, stop
        self.steps, self._started = 0, None
        self.images_per_second = None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == TIMING_SKIP:
            self._started = time.perf_counter()
        elif self.steps == TIMING_SKIP + TIMING_STEPS and self.images_per_second is None:
            seconds = max(time.perf_counter() - self._started, 1e-9)
            self.images_per_second = TIMING_STEPS * self.batch_size / seconds
            self.on_timed(self.images_per_second)
            if self.stop:
                self.model.stop_training = True


def measured_share(images_per_second: float, reference: float) -> float:
    """The share of a rung's images for a configuration that trains at ``images_per_second``
    where the defaults train at ``reference``: 1 within the noise, the speed ratio below it."""
    ratio = images_per_second / reference
    return 1.0 if ratio >= 1.0 - NOISE_TOLERANCE else round(ratio, 4)


def timeable(n_train: int, largest_batch: int) -> bool:
    """Whether every trial of a search holds a timing: one epoch at its largest batch has the
    steps it skips and times."""
    return -(-n_train // largest_batch) >= TIMING_SKIP + TIMING_STEPS


def config_key(cfg: dict) -> str:
    """A configuration's identity within a search: a configuration is timed once, and its
    later trainings (a higher rung, a confirmation seed) reuse the share."""
    return json.dumps(cfg, sort_keys=True, default=str)
