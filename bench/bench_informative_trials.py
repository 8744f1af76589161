"""Benchmark: are a search's trials informative? Runs one family's search (the tune stage's
search step only, no final training, MLflow off) once per ``--sampling`` and reports the share
of trials, the default excepted, that score at least half of the default's score at the same
rung (a failed trial counts as not informative). The default is trained once more at each
lower rung it did not run at (its search trial runs at the top rung), with the same hypermodel
and data.

Trials are budgeted in steps, and the trial cap ends the search (the wall-clock budget is
set far above it). A trial's steps are its configuration's share of its rung: its measured
speed against the defaults' (FLOPs with ``tune.deterministic``), so the scores of
configurations slower than the defaults depend on what else runs: run it alone.

    python bench/bench_informative_trials.py --family cnn --trials 12 --sampling prior uniform
    python bench/bench_informative_trials.py --family cnn --sampling prior --seed 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_search(params, family: str, data_dir: Path, sampling: str, trials: int,
               workdir: Path, budget_minutes: float = 600.0,
               first_values: list[dict] | None = None, precision: str = "float32") -> dict:
    """One search (the tune stage's search step, MLflow off, float32 unless ``precision``
    names another Keras dtype policy); its trials' rungs and scores. ``first_values``: the
    prior (default: the space's defaults)."""
    from pipeline import tune
    from pipeline.distributed import Role
    from pipeline.tracking.search_runs import SearchRuns

    t = params.tune.for_family(family).model_copy(
        update={"sampling": sampling, "max_trials": trials, "budget_minutes": budget_minutes})
    data = tune.load_search_data(t, family, ROOT / t.space_dir / f"{family}.yaml", data_dir)
    tune.configure_devices(t, family, data, params.augmentation, policy=precision)
    runs = SearchRuns.open(params.tracking.model_copy(update={"uri": "off"}))
    started = time.monotonic()
    hypermodel, tuner = tune.build_search(t, family, data, params.augmentation, workdir,
                                          f"{family}-{sampling}", started, runs,
                                          Role("standalone"), first_values, {})
    tune.search(tuner, t, data, runs, Role("standalone"), family)
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        rows.append({"trial_id": trial_id, "status": str(trial.status),
                     "values": {k: v for k, v in trial.hyperparameters.values.items()
                                if not k.startswith("tuner/")},
                     "score": trial.score if trial.status == "COMPLETED" else None,
                     "epochs": trial.hyperparameters.values.get("tuner/epochs", t.max_epochs)})
    return {"sampling": sampling, "rows": rows, "draws": dict(tuner.oracle.draws),
            "minutes": round((time.monotonic() - started) / 60, 1),
            "hypermodel": hypermodel, "data": data, "t": t}


def with_seed(params, seed: int):
    """``params`` with the search seed ``seed`` (tune.seed)."""
    return params.model_copy(update={"tune": params.tune.model_copy(update={"seed": seed})})


def default_at(result: dict, epochs: int) -> float:
    """The default configuration's score at ``epochs``: its search trial where it ran at
    that rung, else one training like a trial's (same subset, seed of trial 0000)."""
    import keras_tuner as kt

    from pipeline.training import trial_seed
    from pipeline.tune import score_like_a_trial

    first = result["rows"][0]
    if first["epochs"] == epochs and first["score"] is not None:
        return first["score"]
    hypermodel, t = result["hypermodel"], result["t"]
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    return score_like_a_trial(hypermodel, hp, result["data"], t,
                              trial_seed(t.seed, first["trial_id"]), epochs)


def summarise(result: dict) -> dict:
    defaults = {}
    informative, others = 0, 0
    for row in result["rows"][1:]:
        others += 1
        if row["epochs"] not in defaults:
            defaults[row["epochs"]] = default_at(result, row["epochs"])
        row["default_at_rung"] = round(defaults[row["epochs"]], 4)
        if row["score"] is not None and row["score"] >= 0.5 * defaults[row["epochs"]]:
            informative += 1
    return {"sampling": result["sampling"], "trials": len(result["rows"]),
            "informative": informative, "of": others,
            "share": round(informative / others, 3) if others else None,
            "draws": result["draws"], "search_minutes": result["minutes"],
            "rows": result["rows"]}


def main() -> None:
    from pipeline.config import load_params
    from pipeline.data.store import atomic_write_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["cnn", "fc"], default="cnn")
    parser.add_argument("--data", default=str(ROOT / "data" / "prepared"))
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--sampling", nargs="+", default=["prior", "uniform"])
    parser.add_argument("--seed", type=int, default=None,
                        help="the search's seed (default: tune.seed in the params file)")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.seed is not None:
        params = with_seed(params, args.seed)
    summaries = []
    with tempfile.TemporaryDirectory() as workdir:
        for sampling in args.sampling:
            result = run_search(params, args.family, Path(args.data), sampling, args.trials,
                                Path(workdir))
            summary = summarise(result)
            summaries.append(summary)
            print(json.dumps({k: v for k, v in summary.items() if k != "rows"}), flush=True)
            for row in summary["rows"]:
                print(f"  {row['trial_id']} {row['status']:<9} epochs {row['epochs']} "
                      f"score {row['score'] if row['score'] is None else round(row['score'], 4)}"
                      f" default at rung {row.get('default_at_rung', '-')}", flush=True)
    if args.out:
        atomic_write_bytes(Path(args.out),
                           (json.dumps(summaries, indent=1, default=str) + "\n").encode())


if __name__ == "__main__":
    from bench_equal_care import one_line_errors

    sys.exit(one_line_errors(main))
