"""Benchmark: training arrays handed to fit as they are (a new tf.data iterator every epoch) or
as one repeated pipeline (pipeline/feed.py), on the CNN's final-training path.

Each run, in its own process: the CNN family's defaults on the whole prepared training split,
``--epochs`` epochs with validation after each, as the final training runs them (the family's
hypermodel and its callbacks). A callback times every step; an epoch's *boundary wait* is how
much its first step took beyond twice the median step (the first epoch, which traces the
step, is left out). Arms alternate within each pair, the order swapped from one pair to the
next. The rule is in bench/README.md ("One input pipeline for the whole run").

    python bench/bench_epoch_feed.py --data data/prepared --pairs 2 --epochs 4 \
        --precision mixed_bfloat16 --out bench_epoch_feed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
ARMS = ("arrays", "feed")


def run_arm(arm: str, data_dir: Path, epochs: int, precision: str, seed: int) -> dict:
    """One training in this process; what its steps took and what it reached."""
    sys.path.insert(0, str(ROOT))
    import keras
    import keras_tuner as kt
    import numpy as np

    import pipeline.search.hypermodel as hypermodel_module
    from pipeline.config import AugmentationParams
    from pipeline.data import store
    from pipeline.search.hypermodel import FamilyHyperModel
    from pipeline.spaces import load_space

    if arm == "arrays":  # what fit did before pipeline/feed.py
        hypermodel_module.fit_inputs = lambda x, y, batch_size: {"x": x, "y": y,
                                                                 "batch_size": batch_size}

    class StepTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.last = time.perf_counter()
            self.epochs.append([])

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.epochs[-1].append(now - self.last)
            self.last = now

    x, y = (np.asarray(a) for a in store.load_split(data_dir, "train"))
    validation = tuple(np.asarray(a) for a in store.load_split(data_dir, "val"))
    keras.utils.set_random_seed(seed)
    hypermodel = FamilyHyperModel("cnn", load_space(ROOT / "search_spaces" / "cnn.yaml", "cnn"),
                                  store.load_meta(data_dir), AugmentationParams(),
                                  n_train=len(y), seed=seed, precision=precision)
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    timer = StepTimes()
    timer.epochs = []
    started = time.perf_counter()
    history = hypermodel.fit(hp, model, x, y, epochs=epochs, validation_data=validation,
                             verbose=0, callbacks=[timer])
    seconds = time.perf_counter() - started
    per_epoch = [{"train_seconds": round(sum(s), 2), "steps": len(s),
                  "first_step": round(s[0], 3), "median_step": round(statistics.median(s), 3)}
                 for s in timer.epochs]
    wait = sum(max(0.0, e["first_step"] - 2 * e["median_step"]) for e in per_epoch[1:])
    return {"arm": arm, "seconds": round(seconds, 1), "boundary_wait": round(wait, 2),
            "train_seconds": round(sum(e["train_seconds"] for e in per_epoch), 1),
            "val_accuracy": [round(v, 4) for v in history.history["val_accuracy"]],
            "epochs": per_epoch}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench_epoch_feed.json"))
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # one run, in a child
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.data, args.epochs, args.precision, args.seed)))
        return 0

    rows = []
    for pair in range(args.pairs):
        for arm in ARMS if pair % 2 == 0 else ARMS[::-1]:
            done = subprocess.run(
                [sys.executable, __file__, "--arm", arm, "--data", str(args.data),
                 "--epochs", str(args.epochs), "--precision", args.precision,
                 "--seed", str(args.seed)], capture_output=True, text=True, check=True)
            row = {"pair": pair + 1, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            args.out.write_text(json.dumps(rows, indent=1))
            print(f"pair {row['pair']} {arm}: {row['train_seconds']} s of training, boundary "
                  f"wait {row['boundary_wait']} s, first steps "
                  f"{[e['first_step'] for e in row['epochs']]}, val {row['val_accuracy'][-1]}",
                  flush=True)
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        print(f"{arm}: training {sum(r['train_seconds'] for r in mine):.1f} s over "
              f"{len(mine)} runs, boundary waits {[r['boundary_wait'] for r in mine]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
