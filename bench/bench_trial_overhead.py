"""Benchmark: what the pipeline adds to training, measured as ratios in one process.

1. Seconds per epoch of a pipeline trial (KerasTuner search with MLflow tracking, NaN guard,
   deadline, early stopping) against a bare ``model.fit`` of the same model on the same data.
2. Seconds per epoch with the augmentation policy on (flip + pad-4 crop) against off.

Medians over epochs after the first (the first one includes graph tracing). Both runs of a pair
happen in this process, one after the other, so machine noise hits both.

    python bench/bench_trial_overhead.py --family cnn --train-per-class 300 --epochs 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar-10-batches-py"


class EpochTimer:
    def __init__(self):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(inner):
                super().__init__()
                inner.times = []

            def on_epoch_begin(inner, epoch, logs=None):
                inner.started = time.perf_counter()

            def on_epoch_end(inner, epoch, logs=None):
                inner.times.append(time.perf_counter() - inner.started)

        self.callback = _Timer()


def prepare(root: Path, train_per_class: int) -> Path:
    from pipeline.config import load_params
    from pipeline.prepare import run_prepare
    from tests.conftest import write_params

    params = write_params(root / "params.yaml", prepare={
        "source": str(SHARED), "train_per_class": train_per_class, "val_fraction": 0.04,
        "test_per_class": 10, "preview_images": 1, "preview_samples": 1})
    out = root / "data" / "prepared"
    run_prepare(load_params(params), params, out, root / "preview.png")
    return out


def hypermodel_for(family, data_dir, policy, n_train, epochs):
    import keras_tuner as kt

    from pipeline.data import store
    from pipeline.search.hypermodel import FamilyHyperModel
    from pipeline.spaces import SearchSpace

    meta = store.load_meta(data_dir)
    empty = SearchSpace(Path("<defaults>"), family, ())
    hypermodel = FamilyHyperModel(family, empty, meta, policy, n_train=n_train, seed=0)
    return hypermodel, kt.HyperParameters()


def bare_fit(family, data, policy, epochs) -> list[float]:
    import keras

    data_dir, x, y, xv, yv = data
    keras.backend.clear_session()
    hypermodel, hp = hypermodel_for(family, data_dir, policy, len(y), epochs)
    model = hypermodel.build(hp)
    timer = EpochTimer().callback
    hypermodel.fit(hp, model, x, y, validation_data=(xv, yv), epochs=epochs, verbose=0,
                   callbacks=[timer])
    return timer.times


def pipeline_trial(family, data, policy, epochs, workdir: Path) -> list[float]:
    import json

    import keras

    from pipeline.config import TuneParams
    from pipeline.search.tuners import SUMMARY_FILE, make_tuner
    from pipeline.tracking.search_runs import SearchRuns
    from pipeline.tracking.store import TrackingStore
    from pipeline.training import early_stopping

    data_dir, x, y, xv, yv = data
    keras.backend.clear_session()
    hypermodel, _ = hypermodel_for(family, data_dir, policy, len(y), epochs)
    runs = SearchRuns(TrackingStore(f"sqlite:///{workdir}/mlflow.db", "bench",
                                    workdir / "artifacts"))
    runs.start(f"bench-{time.time()}", "bench", {}, {})
    settings = TuneParams(tuner="random", max_trials=1, max_epochs=epochs, seed=0,
                          max_consecutive_failures=1)
    tuner = make_tuner(settings, hypermodel, directory=workdir / "tuning",
                       project_name=f"p{time.time_ns()}", deadline=None, runs=runs,
                       run_tags={})
    tuner.search(x, y, validation_data=(xv, yv), epochs=epochs, verbose=0,
                 callbacks=[early_stopping(epochs + 1)])
    trial_id = next(iter(tuner.oracle.trials))
    summary = json.loads((Path(tuner.get_trial_dir(trial_id)) / SUMMARY_FILE).read_text())
    return [h["epoch_seconds"] for h in summary["history"]]


def median_after_first(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> None:
    import numpy as np

    from pipeline.config import AugmentationParams
    from pipeline.data import store
    from pipeline.families import FAMILY_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="cnn", choices=FAMILY_NAMES)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = prepare(root, args.train_per_class)
        x, y = (np.asarray(a) for a in store.load_split(data_dir, "train"))
        xv, yv = (np.asarray(a) for a in store.load_split(data_dir, "val"))
        data = (data_dir, x, y, xv, yv)
        augmented = AugmentationParams(flip=True, crop_padding=4)
        plain = AugmentationParams(flip=False, crop_padding=0)
        print(f"{args.family}: {len(y)} training, {len(yv)} validation images, "
              f"{args.epochs} epochs, {args.repeats} repeats (median s/epoch after the first)")
        results = {"bare": [], "pipeline": [], "aug_off": []}
        runners = {
            "bare": lambda repeat: bare_fit(args.family, data, augmented, args.epochs),
            "pipeline": lambda repeat: pipeline_trial(args.family, data, augmented, args.epochs,
                                                      root / f"run{repeat}"),
            "aug_off": lambda repeat: bare_fit(args.family, data, plain, args.epochs),
        }
        for repeat in range(args.repeats):
            order = list(runners) if repeat % 2 == 0 else list(reversed(runners))  # cancel drift
            for name in order:
                results[name].append(median_after_first(runners[name](repeat)))
        for name, values in results.items():
            print(f"  {name:9s} per repeat: " + ", ".join(f"{v:.3f}" for v in values))
        bare, trial, off = (statistics.median(results[k]) for k in ("bare", "pipeline",
                                                                     "aug_off"))
        print(f"  bare model.fit, augmentation on : {bare:7.3f} s/epoch "
              f"({len(y) / bare:6.0f} images/s incl. validation)")
        print(f"  pipeline trial, augmentation on : {trial:7.3f} s/epoch")
        print(f"  bare model.fit, augmentation off: {off:7.3f} s/epoch")
        print(f"  ratio pipeline / bare      : {trial / bare:.3f}  (target <= 1.05)")
        print(f"  ratio augmentation on / off: {bare / off:.3f}  (target <= 1.2 on CPU)")
        # epoch times here are bimodal (slow and fast phases of the VM): the fastest repeat of
        # each is the least noisy estimate of what the code itself costs
        fastest = {k: min(v) for k, v in results.items()}
        print(f"  same ratios from the fastest repeat of each: pipeline / bare "
              f"{fastest['pipeline'] / fastest['bare']:.3f}, augmentation on / off "
              f"{fastest['bare'] / fastest['aug_off']:.3f}")


if __name__ == "__main__":
    main()
