"""Benchmark: is the search robust to a poor prior? Runs a family's search at its default
budget (the tune section's wall clock, the prior oracle) with a poor recipe as its prior, the
configuration the oracle tries first and draws around, in place of the space's defaults; then
compares the search's pick (the best trial at the highest rung reached, as the tune stage picks)
with the good recipe (the space's defaults) trained like a trial at that same rung and seed.

Rule (bench/README.md, "Robust to a poor prior", written before the runs): the search is
robust on a seed when its pick scores at least 90% of the good recipe's score at the same rung.
Float32 (``--precision`` for another policy) and MLflow off, as the other search benchmarks;
search seeds from ``--seeds``.

    python bench/bench_poor_prior.py --family cnn --seeds 1 2 --out poor_cnn.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_informative_trials import default_at, run_search, with_seed  # noqa: E402

# No batch norm, Adam at three times its reference rate, no augmentation, no label smoothing:
# the example of a poor recipe, the same in both families
POOR_PRIOR = {
    "cnn": {"batch_norm": False, "optimizer": "adam", "lr_multiplier": 3.0, "aug_flip": False,
            "aug_crop": 0, "label_smoothing": 0.0},
    "fc": {"batch_norm": False, "optimizer": "adam", "lr_multiplier": 3.0, "aug_flip": False,
           "aug_crop": 0, "label_smoothing": 0.0, "dropout": 0.0},
}
SHARE = 0.9


def pick_of(rows: list[dict]) -> dict | None:
    """The tune stage's pick: the best completed trial at the highest rung reached."""
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    if not done:
        return None
    top = max(r["epochs"] for r in done)
    return max((r for r in done if r["epochs"] == top), key=lambda r: r["score"])


def one_seed(params, family: str, data_dir: Path, seed: int, workdir: Path,
             precision: str = "float32") -> dict:
    t = params.tune.for_family(family)
    seeded = with_seed(params, seed)
    result = run_search(seeded, family, data_dir, "prior", t.max_trials, workdir,
                        budget_minutes=t.budget_minutes, first_values=[POOR_PRIOR[family]],
                        precision=precision)
    pick = pick_of(result["rows"])
    if pick is None:
        return {"seed": seed, "robust": False, "why": "no trial completed",
                "rows": result["rows"]}
    # the good recipe (the space's defaults) trained as this search's first trial would be
    good = default_at({**result, "rows": [{**result["rows"][0], "score": None}]}, pick["epochs"])
    poor_first = result["rows"][0]
    return {"seed": seed, "precision": precision, "budget_minutes": t.budget_minutes,
            "search_minutes": result["minutes"], "trials": len(result["rows"]),
            "draws": result["draws"], "rung_epochs": pick["epochs"],
            "poor_prior_score": poor_first["score"], "poor_prior_epochs": poor_first["epochs"],
            "pick_trial": pick["trial_id"], "pick_score": pick["score"],
            "pick_values": pick["values"], "good_recipe_score": good,
            "share": pick["score"] / good if good else None,
            "robust": bool(good and pick["score"] >= SHARE * good), "rows": result["rows"]}


def main(argv=None) -> int:
    from pipeline.config import load_params
    from pipeline.data.store import atomic_write_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(POOR_PRIOR), default="cnn")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "mixed_bfloat16", "mixed_float16"),
                        help="Keras dtype policy of the searches and the good recipe's training "
                        "(the default run's, e.g. mixed_bfloat16, fits more trials in the "
                        "budget where it is faster)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    results = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as workdir:
            result = one_seed(params, args.family, args.data, seed, Path(workdir),
                              args.precision)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, default=str),
              flush=True)
        for row in result["rows"]:
            score = "-" if row["score"] is None else f"{row['score']:.4f}"
            print(f"  {row['trial_id']} {row['status']:<9} epochs {row['epochs']} "
                  f"score {score}", flush=True)
        if args.out:
            atomic_write_bytes(args.out, (json.dumps(results, indent=1, default=str)
                                          + "\n").encode())  # each seed as it ends, whole
    robust = sum(r["robust"] for r in results)
    print(f"{args.family}: robust on {robust} of {len(results)} seeds "
          f"(pick >= {SHARE:.0%} of the good recipe at the same rung)")
    return 0


if __name__ == "__main__":
    from bench_equal_care import one_line_errors

    sys.exit(one_line_errors(main))
