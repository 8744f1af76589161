"""Benchmark: does ``precision: auto``'s timing choose as the training itself would?

In one process, interleaved, for the CNN's (or FC's) space defaults:
- fit: training images/s through the pipeline's own ``FamilyHyperModel.fit`` (its input
  pipeline, schedule and callbacks) in float32 and in mixed bfloat16, the fastest epoch after
  the first (which traces), on the first ``--images`` training images, ``--rounds`` rounds;
- calibration: ``pipeline.precision.calibrate`` (what ``auto`` runs before a search) on one
  batch of 128 images (the cap ``auto`` uses) and of the training's batch size, before, between
  and after the rounds (``--rounds`` + 1 timings each).
The ratios (bfloat16 over float32) say whether the calibration's answer is the fit's.

    python bench/bench_precision_fit.py --data data/prepared --images 12800 --epochs 3 --out r.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

POLICIES = ("float32", "mixed_bfloat16")


def hypermodel_for(family: str, data: dict, n_train: int, policy: str):
    from pipeline.config import AugmentationParams
    from pipeline.search.hypermodel import FamilyHyperModel
    from pipeline.spaces import load_space

    space = load_space(ROOT / "search_spaces" / f"{family}.yaml", family)
    return FamilyHyperModel(family, space, data["meta"], AugmentationParams(),
                            n_train=n_train, seed=0, precision=policy)


def fit_rate(family: str, data: dict, images: int, epochs: int, policy: str) -> dict:
    """Training images/s of one ``fit`` in ``policy``: the fastest epoch after the first."""
    import keras
    import keras_tuner as kt
    from bench_throughput import epoch_timer

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    x, y = (a[:images] for a in data["train"])
    hypermodel = hypermodel_for(family, data, len(y), policy)
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    times = []
    hypermodel.fit(hp, model, x, y, epochs=epochs, verbose=0, callbacks=[epoch_timer(times)])
    fastest = min(times[1:])  # main() asks for 2 epochs at least
    return {"images_per_s": round(images / fastest, 1),
            "epoch_seconds": [round(t, 2) for t in times]}


def calibration_ratio(family: str, data: dict, batch: int) -> dict:
    """``precision.calibrate`` on one batch of ``batch`` training images, as ``auto`` runs it."""
    import keras
    import keras_tuner as kt

    from pipeline import precision

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    x, y = data["train"]
    hypermodel = hypermodel_for(family, data, len(y), None)
    rates = precision.calibrate(lambda: hypermodel.build(kt.HyperParameters()),
                                x[:batch], y[:batch])
    return {"batch": batch, **rates,
            "ratio": round(rates["mixed_bfloat16"] / rates["float32"], 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared data folder")
    parser.add_argument("--family", choices=("cnn", "fc"), default="cnn")
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calibration-batches", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch traces")

    from bench_equal_care import load

    data = load(args.data)  # a missing or bad folder: one line
    rows = {"fit": [], "calibration": []}
    for round_ in range(args.rounds + 1):  # calibrations around every round of fits
        for batch in args.calibration_batches:
            rows["calibration"].append(calibration_ratio(args.family, data, batch))
            print(json.dumps(rows["calibration"][-1]), flush=True)
        if round_ == args.rounds:
            break
        rates = {p: fit_rate(args.family, data, args.images, args.epochs, p) for p in POLICIES}
        ratio = rates["mixed_bfloat16"]["images_per_s"] / rates["float32"]["images_per_s"]
        rows["fit"].append({"round": round_, **rates, "ratio": round(ratio, 3)})
        print(json.dumps(rows["fit"][-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print("fit ratios:", [r["ratio"] for r in rows["fit"]])
    for batch in args.calibration_batches:
        ratios = [r["ratio"] for r in rows["calibration"] if r["batch"] == batch]
        print(f"calibration at batch {batch}: ratios {ratios}, median "
              f"{statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
