"""Benchmark: the FC baseline's defaults chosen on validation, and CNN against FC under the two
budget rules (equal epochs, equal time), full training split, seeds.

Phase ``select`` (validation only; the test split is scored but never decides): the FC's
space defaults (search_spaces/fc.yaml) trained under the laptop rule's 12 epochs (counted in
steps), against the settings the old choice compared (dropout and peak rate) and against the
CNN's augmentation (pad-4 crop on top of flip). Rule, fixed before the runs (bench/README.md,
"Equal care"): a setting replaces the default when its flip-TTA validation accuracy beats the
default's on every seed and by at least ``--margin`` points on average; the crop (augmentation
parity) is kept unless it loses to the default on every seed and by at least ``--margin`` on
average. Between two settings that pass, the higher mean wins.

Phase ``verdict`` (test split, the project's verdict): per seed, the FC as selected under
equal epochs (12), the CNN's space defaults for ``--cnn-epochs`` epochs (what its 14-minute
cap buys on this machine), and the FC with the CNN's augmentation trained for the CNN's
training time (equal time), converted to FC epochs by the two families' seconds per epoch,
timed alone and interleaved when the phase starts (``calibrate``). Budgets are counted in
steps, so a busy machine later changes the times but not what is trained.

    python bench/bench_equal_care.py select --seeds 2
    python bench/bench_equal_care.py verdict --seeds 3
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

FC_ARMS = {  # overrides of fc.yaml's defaults; "default" is the space's own first trial
    "default": {},
    "crop_4": {"aug_crop": 4},
    "dropout_0.3_lr_0.002": {"dropout": 0.3, "learning_rate": 0.002},
    "lr_0.01": {"learning_rate": 0.01},
}
CNN_AUGMENTATION = ("aug_flip", "aug_crop", "aug_erasing")


def one_line_errors(main) -> int:
    """Runs a benchmark's ``main``: bad input anywhere in it (the pipeline's ``UserError``:
    a params file, a data folder, a space) stops it with one line, as the CLI does."""
    from pipeline.errors import UserError

    try:
        return main() or 0
    except UserError as exc:
        raise SystemExit(f"bench: {exc}") from None


def load(data_dir: Path) -> dict:
    """The prepared splits; a missing or bad folder stops the benchmark with one line."""
    import numpy as np

    from pipeline.data import store
    from pipeline.errors import UserError
    from pipeline.models.whitening import patch_covariance

    try:
        meta = store.load_meta(data_dir)
        splits = {name: tuple(np.asarray(a) for a in store.load_split(data_dir, name))
                  for name in ("train", "val", "test")}
    except UserError as exc:  # the folder or file at fault, not a traceback
        raise SystemExit(f"bench: {exc}") from None
    # as the tune stage does: a whitening stem is computed from the training images' patches
    meta["patch_covariance"] = patch_covariance(splits["train"][0], meta)
    return {"meta": meta, **splits}


def space_defaults(family: str) -> dict:
    import keras_tuner as kt

    from pipeline.spaces import load_space

    return load_space(ROOT / "search_spaces" / f"{family}.yaml", family).declare(
        kt.HyperParameters())


def train(family: str, overrides: dict, seed: int, data: dict, epochs: int,
          precision: str = "float32") -> dict:
    """One training of ``family``'s space defaults with ``overrides`` on the whole training
    split, in the Keras dtype policy ``precision``; its validation and test scores, single
    view and flip-averaged."""
    import keras
    import keras_tuner as kt
    import numpy as np

    from pipeline import tta
    from pipeline.config import AugmentationParams
    from pipeline.search.hypermodel import FamilyHyperModel
    from pipeline.spaces import load_space

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    space = load_space(ROOT / "search_spaces" / f"{family}.yaml", family)
    x, y = data["train"]
    hypermodel = FamilyHyperModel(family, space, data["meta"], AugmentationParams(),
                                  n_train=len(y), seed=seed, precision=precision)
    unknown = set(overrides) - set(hypermodel.defaults) - set(space.names())
    if unknown:
        raise SystemExit(f"bench: overrides {sorted(unknown)} are neither {family}.yaml entries "
                         f"nor builder settings")
    # a searched key takes its value from hp (declaring the space keeps preset values), any
    # other (alternating flip, whitening) from the builder's defaults: set both
    hypermodel.defaults = {**hypermodel.defaults, **overrides}
    hp = kt.HyperParameters()
    hp.values.update(overrides)
    model = hypermodel.build(hp)
    started = time.perf_counter()
    # one line an epoch (Keras' own): a full-data training runs 15-25 minutes on 2 cores
    hypermodel.fit(hp, model, x, y, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - started
    scores = {}
    for split in ("val", "test"):
        xs, ys = data[split]
        views = tta.view_probabilities(model, xs, 500, flip=True, translate=0)
        scores[f"{split}_single"] = float(np.mean(np.argmax(views[0], axis=1) == ys))
        scores[f"{split}_flip"] = float(np.mean(np.argmax(sum(views), axis=1) == ys))
    return {"family": family, "overrides": overrides, "seed": seed, "epochs": epochs,
            "precision": precision, "train_seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / epochs, 2), "images_seen": epochs * len(y),
            **scores}


def calibrate(data: dict, overrides: dict, rounds: int = 2, steps: int = 40) -> dict:
    """Seconds per full training epoch of the CNN's defaults and of the FC (``overrides``),
    timed on ``steps`` batches after a warm-up, interleaved, the best of ``rounds``."""
    import keras
    import keras_tuner as kt

    from pipeline.config import AugmentationParams
    from pipeline.search.hypermodel import FamilyHyperModel
    from pipeline.spaces import load_space

    x, y = data["train"]
    best = {}
    for _ in range(rounds):
        for family, values in (("cnn", {}), ("fc", overrides)):
            keras.backend.clear_session()
            space = load_space(ROOT / "search_spaces" / f"{family}.yaml", family)
            hypermodel = FamilyHyperModel(family, space, data["meta"], AugmentationParams(),
                                          n_train=len(y), seed=0)
            hp = kt.HyperParameters()
            hp.values.update(values)
            model = hypermodel.build(hp)
            batch = hypermodel.config(hp)["batch_size"]
            hypermodel.fit(hp, model, x[:10 * batch], y[:10 * batch], verbose=0)  # warm-up
            started = time.perf_counter()
            hypermodel.fit(hp, model, x[:steps * batch], y[:steps * batch], verbose=0)
            per_epoch = (time.perf_counter() - started) / steps * len(y) / batch
            best[family] = min(best.get(family, per_epoch), per_epoch)
    return {f: round(v, 2) for f, v in best.items()}


def resume(out: Path) -> tuple[Path, list[dict]]:
    """The rows file under ``out`` and the rows it already holds: a cut run goes on from them."""
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "rows.json"
    return rows_file, json.loads(rows_file.read_text()) if rows_file.is_file() else []


def run_plan(plan: list[tuple[str, dict]], data: dict, out: Path, rows: list[dict]) -> None:
    started = time.monotonic()
    for index, (arm, spec) in enumerate(plan, 1):
        row = {"arm": arm, **train(spec["family"], spec["overrides"], spec["seed"], data,
                                   spec["epochs"], spec.get("precision", "float32"))}
        rows.append(row)
        out.write_text(json.dumps(rows, indent=1))
        elapsed = time.monotonic() - started
        print(f"[{index}/{len(plan)}] {arm} seed {row['seed']}: {row['epochs']} epochs in "
              f"{row['train_seconds'] / 60:.1f} min; val flip {100 * row['val_flip']:.2f}, "
              f"test flip {100 * row['test_flip']:.2f}; ETA "
              f"{elapsed / index * (len(plan) - index) / 60:.0f} min", flush=True)


def paired_gains(rows: list[dict], arm: str, base: str) -> list[float]:
    by = {(r["arm"], r["seed"]): r["val_flip"] for r in rows}
    return [100 * (by[(arm, s)] - by[(base, s)]) for (a, s) in by
            if a == arm and (base, s) in by]


def select(rows: list[dict], margin: float) -> dict:
    """The rule of the module docstring: the FC's overrides for the equal-epochs arm."""
    chosen, best_mean, lines = {}, None, []
    for arm in FC_ARMS:
        gains = paired_gains(rows, arm, "default") if arm != "default" else []
        if arm == "default" or not gains:
            continue
        mean = statistics.mean(gains)
        if arm == "crop_4":
            keep = not (all(g < 0 for g in gains) and mean <= -margin)
            verdict = "kept (parity)" if keep else "dropped: it hurts the FC on validation"
            if keep:
                chosen.update(FC_ARMS[arm])
        else:
            wins = all(g > 0 for g in gains) and mean >= margin
            verdict = "replaces the default" if wins and (best_mean is None or
                                                          mean > best_mean) else "no"
            if verdict != "no":
                best_mean = mean
                chosen = {**{k: v for k, v in chosen.items() if k in CNN_AUGMENTATION},
                          **FC_ARMS[arm]}
        lines.append(f"{arm}: paired val gains {' '.join(f'{g:+.2f}' for g in gains)} "
                     f"(mean {mean:+.2f}): {verdict}")
    return {"overrides": chosen, "decided_on": "validation (flip TTA)", "why": lines}


def verdict_plan(args, selection: dict, rates: dict) -> list[tuple[str, dict]]:
    """Per seed: FC at equal epochs, CNN, FC at the CNN's time (its epochs in FC epochs at the
    calibrated rates) with the CNN's augmentation."""
    cnn_aug = {k: v for k, v in space_defaults("cnn").items() if k in CNN_AUGMENTATION}
    fc_equal_time_epochs = round(args.cnn_epochs * rates["cnn"] / rates["fc"])
    plan = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        fc = {"family": "fc", "overrides": selection["overrides"], "seed": seed,
              "epochs": args.fc_epochs}
        plan.append(("fc_equal_epochs", fc))
        plan.append(("cnn", {"family": "cnn", "overrides": {}, "seed": seed,
                             "epochs": args.cnn_epochs}))
        plan.append(("fc_equal_time", {"family": "fc", "seed": seed,
                                       "epochs": fc_equal_time_epochs,
                                       "overrides": {**selection["overrides"], **cnn_aug}}))
    return plan


def summarise(rows: list[dict]) -> list[str]:
    from scipy import stats

    def col(arm, key):
        return [r[key] for r in rows if r["arm"] == arm]

    def fmt(values, scale=100):
        values = [scale * v for v in values]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} +- {spread:.2f}"

    lines = ["| arm | seeds | epochs | train min | images seen (M) | val flip | test single "
             "| test flip |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    for arm in arms:
        lines.append(f"| {arm} | {len(col(arm, 'seed'))} | "
                     f"{'/'.join(str(e) for e in col(arm, 'epochs'))} | "
                     f"{fmt(col(arm, 'train_seconds'), 1 / 60)} | "
                     f"{statistics.mean(col(arm, 'images_seen')) / 1e6:.2f} | "
                     f"{fmt(col(arm, 'val_flip'))} | {fmt(col(arm, 'test_single'))} | "
                     f"{fmt(col(arm, 'test_flip'))} |")
    for fc_arm in ("fc_equal_epochs", "fc_equal_time"):
        cnn, fc = col("cnn", "test_flip"), col(fc_arm, "test_flip")
        if len(cnn) > 1 and len(fc) > 1:
            welch = stats.ttest_ind(cnn, fc, equal_var=False)
            gap = 100 * (statistics.mean(cnn) - statistics.mean(fc))
            lines.append(f"\nCNN - {fc_arm}: {gap:+.2f} points (test, flip TTA), Welch's t "
                         f"over seeds p = {welch.pvalue:.2g}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["select", "verdict", "summary"])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--fc-epochs", type=int, default=12, help="the equal-epochs rule")
    parser.add_argument("--cnn-epochs", type=int, default=5,
                        help="what the CNN's 14-minute cap buys (run J: 5 epochs)")
    parser.add_argument("--margin", type=float, default=0.3, help="points of accuracy")
    parser.add_argument("--out", type=Path, default=Path("bench_equal_care"))
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    select_file, verdict_file = args.out / "select.json", args.out / "verdict.json"
    selection_file = args.out / "selection.json"
    if args.phase == "summary":
        for path in (select_file, verdict_file):
            if path.is_file():
                print(f"## {path.name}\n" + "\n".join(summarise(json.loads(path.read_text()))))
        return 0
    data = load(args.data)
    if args.phase == "select":
        rows = json.loads(select_file.read_text()) if select_file.is_file() else []
        done = {(r["arm"], r["seed"]) for r in rows}
        plan = [(arm, {"family": "fc", "overrides": FC_ARMS[arm], "seed": s,
                       "epochs": args.fc_epochs})
                for s in range(args.first_seed, args.first_seed + args.seeds)
                for arm in FC_ARMS if (arm, s) not in done]
        run_plan(plan, data, select_file, rows)
        selection = select(rows, args.margin)
        selection_file.write_text(json.dumps(selection, indent=1))
        print("\n".join(summarise(rows) + selection["why"]
                        + [f"selected overrides: {selection['overrides']}"]))
        return 0
    selection = json.loads(selection_file.read_text())
    rows = json.loads(verdict_file.read_text()) if verdict_file.is_file() else []
    if not rows and select_file.is_file():  # the selected FC's own select runs are reused
        rows = [{**r, "arm": "fc_equal_epochs"} for r in json.loads(select_file.read_text())
                if r["overrides"] == selection["overrides"] and r["epochs"] == args.fc_epochs]
    done = {(r["arm"], r["seed"]) for r in rows}
    rates_file = args.out / "rates.json"
    if not rates_file.is_file():  # timed once, alone: a resumed run keeps the same conversion
        crop = {k: v for k, v in space_defaults("cnn").items() if k in CNN_AUGMENTATION}
        rates_file.write_text(json.dumps(calibrate(data, {**selection["overrides"], **crop})))
    rates = json.loads(rates_file.read_text())
    print(f"seconds per epoch, timed alone: {rates}", flush=True)
    plan = [(arm, spec) for arm, spec in verdict_plan(args, selection, rates)
            if (arm, spec["seed"]) not in done]
    run_plan(plan, data, verdict_file, rows)
    print("\n".join(summarise(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
