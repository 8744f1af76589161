"""Benchmark: the CNN recipe's parts, each switched on alone against the default recipe, on
validation, with paired seeds; and float32 against mixed bfloat16 on the same runs.

Every arm trains the CNN family's default configuration with the arm's overrides on the same
per-class subset of the prepared training split, for ``--epochs`` epochs counted in steps
(no wall clock: the scores do not depend on how busy the machine is), with the same seed per
pair (initial weights, data order and augmentation draws). Scored on the whole validation
split: single view, flip test-time augmentation (the pipeline's verdict metric) and flip plus
one-pixel translations. The test split is never read.

The decision rule, fixed before the runs (bench/README.md, "Recipe ablation"): a part is adopted
when its paired gain in flip-TTA validation accuracy is positive on every seed and its mean is
at least ``--margin`` points; bfloat16 is adopted for training when its images/s are at least
1.15x float32's and its mean paired accuracy change is at least -0.5 points; XLA keeps the
accuracy when its mean paired change is at least -0.5 points (its speed: bench_throughput.py).

    python bench/bench_recipe.py --data data/prepared --per-class 500 --epochs 8 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARMS = {  # name -> (precision, overrides of the default configuration)
    "float32": ("float32", {}),
    "ema": ("float32", {"ema_momentum": 0.9}),
    "label_smoothing_0.2": ("float32", {"label_smoothing": 0.2}),
    "alternating_flip": ("float32", {"aug_alternate_flip": True}),
    "whitening": ("float32", {"whitening": True}),
    # batch norm's offsets at 64x the rate of the other weights (airbench's bias scaler) and
    # at 8x, between it and the default's 1x
    "bn_bias_rate_64": ("float32", {"bn_bias_lr_multiplier": 64.0}),
    "bn_bias_rate_8": ("float32", {"bn_bias_lr_multiplier": 8.0}),
    "bfloat16": ("mixed_bfloat16", {}),
    # XLA for the training step, which Keras leaves off on a CPU-only TensorFlow: a speed
    # change whose accuracy is checked like bfloat16's
    "xla": ("float32", {"jit_compile": True}),
    # the width/epochs trade-off at fixed minutes: width 24 trains at about 0.67x width 16's
    # images/s on this CPU (../shared/docs/cpu-calibration.md: 384 vs 569-628), so it gets
    # 0.67x the epochs
    "width_24_same_minutes": ("float32", {"base_filters": 24, "epochs_factor": 0.67}),
}
BASELINE = "float32"  # what every arm is compared with


def load(data_dir: Path, per_class: int, seed: int) -> dict:
    import numpy as np

    from pipeline.data import store
    from pipeline.data.split import per_class_subset
    from pipeline.models.whitening import patch_covariance

    x, y = (np.asarray(a) for a in store.load_split(data_dir, "train"))
    keep = per_class_subset(y, per_class, seed)
    meta = store.load_meta(data_dir)
    meta["patch_covariance"] = patch_covariance(x[keep], meta)
    xv, yv = (np.asarray(a) for a in store.load_split(data_dir, "val"))
    return {"meta": meta, "x": x[keep], "y": y[keep], "xv": xv, "yv": yv}


def train(arm: str, seed: int, data: dict, epochs: int) -> dict:
    """One training of the default CNN with the arm's settings; its validation scores."""
    import keras
    import keras_tuner as kt
    import numpy as np

    from pipeline import tta
    from pipeline.config import AugmentationParams
    from pipeline.search.hypermodel import FamilyHyperModel
    from pipeline.spaces import SearchSpace

    precision, overrides = ARMS[arm]
    overrides = dict(overrides)
    epochs = max(1, round(epochs * overrides.pop("epochs_factor", 1.0)))
    jit_compile = overrides.pop("jit_compile", None)
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(seed)
    empty = SearchSpace(Path("<defaults>"), "cnn", ())
    hypermodel = FamilyHyperModel("cnn", empty, data["meta"], AugmentationParams(),
                                  n_train=len(data["y"]), seed=seed)
    hypermodel.defaults = {**hypermodel.defaults, **overrides}
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    if jit_compile is not None:
        model.jit_compile = jit_compile
    started = time.perf_counter()
    hypermodel.fit(hp, model, data["x"], data["y"], epochs=epochs, verbose=0)
    seconds = time.perf_counter() - started
    xv, yv = data["xv"], data["yv"]
    # views: original, mirror, then the translations of both (pipeline/tta.py's order)
    p = tta.view_probabilities(model, xv, 500, flip=True, translate=1)
    combos = {"single": p[:1], "flip": p[:2], "flip_translate": p}
    scores = {name: float(np.mean(np.argmax(sum(ps), axis=1) == yv))
              for name, ps in combos.items()}
    return {"arm": arm, "seed": seed, "train_seconds": round(seconds, 1),
            "images_per_second": round(epochs * len(data["y"]) / seconds, 1), **scores}


def paired(rows: list[dict], arm: str, base: str, metric: str) -> list[float]:
    by = {(r["arm"], r["seed"]): r[metric] for r in rows}
    return [100 * (by[(arm, s)] - by[(base, s)]) for (a, s) in by if a == arm and (base, s) in by]


def summarise(rows: list[dict], margin: float) -> list[str]:
    lines = ["| arm | val acc, flip TTA (mean +- std) | single view | flip + translate "
             "| paired gain vs baseline (points, per seed) | images/s | adopted |",
             "|---|---:|---:|---:|---|---:|---|"]

    def stat(arm, metric):
        values = [100 * r[metric] for r in rows if r["arm"] == arm]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} +- {spread:.2f}"

    for arm in ARMS:
        if not any(r["arm"] == arm for r in rows):
            continue
        gains = paired(rows, arm, BASELINE, "flip") if arm != BASELINE else []
        rate = statistics.median(r["images_per_second"] for r in rows if r["arm"] == arm)
        verdict = ""
        if gains and arm in ("bfloat16", "xla"):
            f32 = statistics.median(r["images_per_second"] for r in rows
                                    if r["arm"] == "float32")
            same_accuracy = statistics.mean(gains) >= -0.5
            if arm == "xla":  # its speed is judged by bench_throughput.py, steps timed alone
                verdict = f"accuracy {'kept' if same_accuracy else 'lost'}"
            else:
                verdict = "yes" if rate >= 1.15 * f32 and same_accuracy else "no"
            verdict += f" ({rate / f32:.2f}x float32)"
        elif gains:
            ok = all(g > 0 for g in gains) and statistics.mean(gains) >= margin
            verdict = "yes" if ok else "no"
        lines.append(f"| {arm} | {stat(arm, 'flip')} | {stat(arm, 'single')} | "
                     f"{stat(arm, 'flip_translate')} | "
                     f"{' '.join(f'{g:+.2f}' for g in gains) or '-'} | {rate:.0f} | {verdict} |")
    tta_gain = [100 * (r["flip_translate"] - r["flip"]) for r in rows]
    lines.append(f"\nTranslate TTA over flip TTA, paired by model ({len(tta_gain)} models): "
                 f"{statistics.mean(tta_gain):+.2f} points, positive on "
                 f"{sum(g > 0 for g in tta_gain)} of {len(tta_gain)}.")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS),
                        default=[a for a in ARMS if a not in ("bfloat16", "xla",
                                                              "width_24_same_minutes")],
                        help="bfloat16 only where the CPU trains it faster (bench_throughput)")
    parser.add_argument("--margin", type=float, default=0.3, help="points of accuracy")
    parser.add_argument("--out", type=Path, default=Path("bench_recipe.json"))
    args = parser.parse_args(argv)

    data = load(args.data, args.per_class, seed=0)
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    done = {(r["arm"], r["seed"]) for r in rows}
    # seed-major order: every arm of a seed before the next seed, so a cut run stays paired
    plan = [(arm, s) for s in range(args.first_seed, args.first_seed + args.seeds)
            for arm in args.arms if (arm, s) not in done]
    started = time.monotonic()
    for index, (arm, seed) in enumerate(plan, 1):
        row = train(arm, seed, data, args.epochs)
        rows.append(row)
        args.out.write_text(json.dumps(rows, indent=1))
        elapsed = time.monotonic() - started
        print(f"[{index}/{len(plan)}] {arm} seed {seed}: val flip {100 * row['flip']:.2f} "
              f"(single {100 * row['single']:.2f}, +translate {100 * row['flip_translate']:.2f})"
              f", {row['images_per_second']:.0f} img/s; ETA "
              f"{elapsed / index * (len(plan) - index) / 60:.0f} min", flush=True)
    print("\n".join(summarise(rows, args.margin)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
