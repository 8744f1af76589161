"""Benchmark: does the search earn its keep? Reads a finished tune stage (its trials and its
pick) and retrains under the final budget rule on the whole training split:

1. the search's pick against the space's default configuration (its first trial), each with
   ``--seeds`` paired seeds: validation accuracy (one view, as the search scores; what a
   verdict reads) and test accuracy (flip test-time augmentation, as the evaluate stage;
   shown), each arm's mean and spread and the paired difference's;
2. the ``--top`` best distinct configurations of the search, one training each: the Spearman
   rank correlation between their search scores and what the full training reaches
   (validation and test accuracy);
3. with ``--per-rung``: every distinct completed configuration, one training each, and the
   Spearman correlation (with its p-value) rung by rung, since Hyperband scores its rungs
   after different numbers of epochs and never compares them with each other; ``--rung N``
   trains only the configurations scored at rung N (N epochs), the rung the pick comes from.

Every run gets the same budget: ``--epochs`` epochs or ``--minutes`` of training, whichever
ends first (default: the tune section's rule for the family). Runs one after the other in this
process; nothing else should run beside it, the budgets being wall clock.

    python bench/bench_search_gain.py --family fc --seeds 3 --top 5
    python bench/bench_search_gain.py --family cnn --seeds 2 --top 0 --minutes 4
    python bench/bench_search_gain.py --family fc --seeds 0 --top 0 --per-rung
    python bench/bench_search_gain.py --family cnn --seeds 0 --top 0 --per-rung --rung 3 \
        --precision mixed_bfloat16 --out rank.json

``--out`` is rewritten after every pair and every ``--per-rung`` training, so a run cut short
keeps what it finished.
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


def train_and_score(hypermodel, values: dict, seed: int, data: dict, epochs: int,
                    seconds: float) -> dict:
    """One final-rule training of the configuration ``values``; val and test accuracy."""
    import keras
    import keras_tuner as kt
    import numpy as np

    from pipeline.config import EvaluateParams
    from pipeline.evaluate import _evaluate_model

    hp = kt.HyperParameters()
    hp.values.update(values)
    hypermodel.declare_hyperparameters(hp)  # conditional values become active with their parent
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    hypermodel.seed = seed
    model = hypermodel.build(hp)
    started = time.monotonic()
    hypermodel.fit(hp, model, data["x_train"], data["y_train"], epochs=epochs, seconds=seconds,
                   verbose=0)
    # validation as the search scores it (one view); test as the evaluate stage does
    val = _evaluate_model(model, data["x_val"], data["y_val"],
                          EvaluateParams(flip_tta=False))[0]
    test = _evaluate_model(model, data["x_test"], data["y_test"], EvaluateParams())[0]
    schedule = hypermodel.last_schedule.summary()
    return {"seed": seed, "val_accuracy": val["test_accuracy"],
            "test_accuracy": test["test_accuracy"],
            "test_single_view": test["test_accuracy_single_view"],
            "steps": schedule["steps"], "ended_by": schedule["ended_by"],
            "trained_seconds": schedule["trained_seconds"],  # the clock's share: training only
            "seconds": round(time.monotonic() - started, 1),
            "params": int(np.sum([np.prod(w.shape) for w in model.trainable_weights]))}


def spearman_with_p(a: list[float], b: list[float]) -> tuple[float, float]:
    from scipy.stats import spearmanr

    result = spearmanr(a, b)
    return float(result.statistic), float(result.pvalue)


def per_rung_fidelity(trials, values_of, train, only_rung: int | None = None,
                      progress=None) -> dict:
    """Every distinct completed configuration (with ``only_rung``: those scored at that rung)
    trained once by ``train(values)``; per rung (``hp.tuner/epochs``), the Spearman
    correlation of the search's scores at that rung with the full training's validation and
    test accuracy. Validation is the split the search chooses on; test is shown, and chooses
    nothing. ``progress(result)`` sees the result so far after every training."""
    import pandas as pd

    done = trials[(trials["status"] == "COMPLETED") & trials["score"].notna()]
    rung_column = "hp.tuner/epochs"
    scores: dict[int, dict[str, float]] = {}
    configs: dict[str, dict] = {}
    for _, row in done.sort_values("trial_id").iterrows():
        rung = int(row[rung_column]) if rung_column in row and not pd.isna(row[rung_column]) \
            else 0
        if only_rung is not None and rung != only_rung:
            continue
        values = values_of(row)
        key = json.dumps(values, sort_keys=True)
        configs.setdefault(key, {"values": values, "first_trial": row["trial_id"]})
        scores.setdefault(rung, {})[key] = float(row["score"])
    if not configs:
        raise SystemExit(f"bench: no completed configuration at rung {only_rung}")
    started = time.monotonic()
    for n, config in enumerate(configs.values(), 1):
        config["full"] = train(config["values"])
        elapsed = time.monotonic() - started
        print(f"  [{n}/{len(configs)}] trial {config['first_trial']}: val "
              f"{config['full']['val_accuracy']:.4f}, test {config['full']['test_accuracy']:.4f}"
              f" ({config['full']['seconds']:.0f} s; about "
              f"{elapsed / n * (len(configs) - n) / 60:.0f} min to go)", flush=True)
        if progress:
            progress(_fidelity_table(scores, configs))
    return _fidelity_table(scores, configs, announce=True)


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _show(stats: dict, sign: bool = False) -> str:
    return f"{stats['mean']:{'+' if sign else ''}.4f} ± {stats['std']:.4f}"


def _fidelity_table(scores: dict, configs: dict, announce: bool = False) -> dict:
    """The rank correlations over the configurations trained so far."""
    rungs = {}
    for rung, by_key in sorted(scores.items()):
        by_key = {k: v for k, v in by_key.items() if "full" in configs[k]}
        keys = sorted(by_key, key=lambda k: -by_key[k])
        rows = [{"trial": configs[k]["first_trial"], "search_score": by_key[k],
                 "val_accuracy": configs[k]["full"]["val_accuracy"],
                 "test_accuracy": configs[k]["full"]["test_accuracy"]} for k in keys]
        entry = {"configurations": len(rows), "rows": rows}
        if len(rows) >= 3:
            search = [r["search_score"] for r in rows]
            for split in ("val", "test"):
                rho, p = spearman_with_p(search, [r[f"{split}_accuracy"] for r in rows])
                entry[f"spearman_{split}"], entry[f"p_{split}"] = rho, p
        if len(rows) >= 3 and announce:
            print(f"  rung {rung} epochs: Spearman vs full training, val "
                  f"{entry['spearman_val']:+.2f} (p {entry['p_val']:.3f}), test "
                  f"{entry['spearman_test']:+.2f} (p {entry['p_test']:.3f}), "
                  f"{len(rows)} configurations", flush=True)
        rungs[str(rung)] = entry
    return {"rungs": rungs, "configurations": [
        {"first_trial": c["first_trial"], "values": c["values"], **c["full"]}
        for c in configs.values() if "full" in c]}


def main() -> int:
    import pandas as pd
    from bench_equal_care import load

    from pipeline.config import load_params
    from pipeline.families import FAMILIES, FAMILY_NAMES
    from pipeline.search.hypermodel import FamilyHyperModel, known_hyperparameters
    from pipeline.spaces import load_space
    from pipeline.stats import paired_interval

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="cnn", choices=FAMILY_NAMES)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--results", type=Path, default=ROOT / "results",
                        help="a finished tune stage's results folder")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, "
                        "first-seed + 1, ... (more pairs for an earlier run's)")
    parser.add_argument("--top", type=int, default=5, help="configurations for the rank "
                        "correlation (0: skip)")
    parser.add_argument("--per-rung", action="store_true", help="every distinct completed "
                        "configuration, the rank correlation rung by rung, with p-values")
    parser.add_argument("--rung", type=int, help="with --per-rung: only the configurations "
                        "scored at this rung (epochs), e.g. the top one")
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "mixed_bfloat16", "mixed_float16"),
                        help="Keras dtype policy of every training (what tune.precision "
                        "picked for the search read)")
    parser.add_argument("--epochs", type=int, help="default: tune.final_epochs")
    parser.add_argument("--minutes", type=float, help="default: tune.final_budget_minutes")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    if args.rung is not None and not args.per_rung:
        parser.error("--rung needs --per-rung")
    params = load_params(args.params)
    t = params.tune.for_family(args.family)
    epochs = args.epochs or t.final_epochs
    seconds = 60 * (args.minutes or t.final_budget_minutes)
    folder = args.results / args.family
    for name in ("best_hparams.json", "trials.csv"):  # one line, not a traceback
        if not (folder / name).is_file():
            raise SystemExit(f"bench: {folder / name}: not found; --results should be a "
                             "finished tune stage's results folder")
    best = json.loads((folder / "best_hparams.json").read_text())
    trials = pd.read_csv(folder / "trials.csv")
    loaded = load(args.data)  # a missing or bad folder: one line
    meta = loaded["meta"]
    data = {f"{xy}_{split}": array for split in ("train", "val", "test")
            for xy, array in zip(("x", "y"), loaded[split], strict=True)}
    space_file = FAMILIES[args.family].space_file(ROOT / "search_spaces")
    space = load_space(space_file, family=args.family,
                       known=known_hyperparameters(args.family))
    hypermodel = FamilyHyperModel(args.family, space, meta, params.augmentation,
                                  n_train=len(data["y_train"]), precision=args.precision)
    hp_columns = [c for c in trials.columns if c.startswith("hp.") and "tuner/" not in c]

    def values_of(row) -> dict:
        return {c[3:]: _plain(row[c]) for c in hp_columns if not pd.isna(row[c])}

    default = values_of(trials.sort_values("trial_id").iloc[0])
    pick = {k: v for k, v in best["hyperparameters"].items()}
    same = all(pick.get(k) == v for k, v in default.items())
    print(f"{args.family}: budget {epochs} epochs or {seconds / 60:g} min; search pick = trial "
          f"{best['trial_id']}{' (the default configuration)' if same else ''}", flush=True)
    report = {"family": args.family, "epochs": epochs, "minutes": seconds / 60,
              "precision": args.precision,
              "pick_trial": best["trial_id"], "pick_is_default": same, "pairs": []}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        pair = {"default": train_and_score(hypermodel, default, seed, data, epochs, seconds)}
        pair["pick"] = pair["default"] if same else train_and_score(hypermodel, pick, seed,
                                                                    data, epochs, seconds)
        report["pairs"].append(pair)
        print(f"  seed {seed}: val default {pair['default']['val_accuracy']:.4f}, pick "
              f"{pair['pick']['val_accuracy']:.4f}; test default "
              f"{pair['default']['test_accuracy']:.4f}, pick {pair['pick']['test_accuracy']:.4f}",
              flush=True)
        write(args.out, {**report, "finished": False})  # a run cut short keeps its pairs
    if report["pairs"]:  # --seeds 0: rank correlation only
        for split in ("val", "test"):  # validation decides; test is shown beside it
            key = f"{split}_accuracy"
            for name in ("default", "pick"):
                accs = [p[name][key] for p in report["pairs"]]
                report.setdefault(name, {})[split] = _mean_sd(accs)
            # the paired change with its t interval (pipeline.stats, as the verdicts use)
            diff = paired_interval([p["default"][key] for p in report["pairs"]],
                                   [p["pick"][key] for p in report["pairs"]])
            diff["std"] = _mean_sd(diff["differences"])["std"]
            report.setdefault("difference", {})[split] = diff
            print(f"  {split} accuracy: default {_show(report['default'][split])}, pick "
                  f"{_show(report['pick'][split])}; pick - default {_show(diff, sign=True)}, "
                  f"95% interval [{diff['low']:+.4f}, {diff['high']:+.4f}] over "
                  f"{args.seeds} seeds", flush=True)

    if args.top >= 2:
        done = trials[trials["status"] == "COMPLETED"].sort_values("score", ascending=False)
        seen, top = set(), []
        for _, row in done.iterrows():  # Hyperband repeats a configuration on higher rungs
            key = json.dumps(values_of(row), sort_keys=True)
            if key not in seen:
                seen.add(key)
                top.append(row)
            if len(top) == args.top:
                break
        ranked = []
        for row in top:
            result = train_and_score(hypermodel, values_of(row), 0, data, epochs, seconds)
            ranked.append({"trial_id": row["trial_id"], "search_score": float(row["score"]),
                           **result})
            print(f"  trial {row['trial_id']}: search {row['score']:.4f} -> val "
                  f"{result['val_accuracy']:.4f}, test {result['test_accuracy']:.4f}",
                  flush=True)
        search = [r["search_score"] for r in ranked]
        report["top"] = ranked
        report["spearman_val"] = spearman_with_p(search, [r["val_accuracy"] for r in ranked])[0]
        report["spearman_test"] = spearman_with_p(search, [r["test_accuracy"] for r in ranked])[0]
        print(f"  Spearman, search score vs full training: val {report['spearman_val']:+.2f}, "
              f"test {report['spearman_test']:+.2f} ({len(ranked)} configurations)")
    if args.per_rung:
        def save_so_far(fidelity: dict) -> None:
            write(args.out, {**report, "per_rung": fidelity, "finished": False})

        report["per_rung"] = per_rung_fidelity(
            trials, values_of,
            lambda values: train_and_score(hypermodel, values, 0, data, epochs, seconds),
            only_rung=args.rung, progress=save_so_far)
    write(args.out, {**report, "finished": True})
    return 0


def write(path: Path | None, report: dict) -> None:
    """The report as JSON, replaced whole (never half-written)."""
    from pipeline.data.store import atomic_write_bytes

    if path is not None:
        atomic_write_bytes(path, (json.dumps(report, indent=1, default=_plain) + "\n").encode())


def _plain(value):
    return value.item() if hasattr(value, "item") else value


if __name__ == "__main__":
    from bench_equal_care import one_line_errors

    sys.exit(one_line_errors(main))
