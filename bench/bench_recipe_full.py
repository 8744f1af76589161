"""Benchmark: the CNN recipe's parts at the laptop's full budget, each switched on alone over the
default recipe, on the whole training split, paired seeds.

``bench_recipe.py`` measured the parts at a reduced budget (4,000 images, about 94 steps), where
the seeds' spread (2.7 points) was larger than any part's effect. This one trains the same
arms (its ``ARMS`` overrides) for ``--epochs`` full epochs counted in steps, in the dtype policy
the laptop profile uses on the CPU at hand (``--precision``), with the training function of the
opportunity-cost benchmark, so its ``default`` rows and theirs (arm ``pipeline``) are the same
training. Scored on validation (single view and flip TTA); test is shown, never used. The rule
of each run is written in bench/README.md before it starts. Resumes from ``rows.json``.

    python bench/bench_recipe_full.py --data data/prepared --seeds 1 --first-seed 2 \\
        --epochs 15 --precision mixed_bfloat16 --arms alternating_flip --out <dir>
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_equal_care import load, paired_gains, resume, run_plan, summarise  # noqa: E402
from bench_recipe import ARMS  # noqa: E402

BASELINE = "default"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--precision", default="float32",
                        help="Keras dtype policy of every arm: what tune.precision picks here")
    parser.add_argument("--arms", nargs="+", required=True,
                        choices=[a for a, (_, o) in ARMS.items() if o and "epochs_factor" not in o
                                 and "jit_compile" not in o])
    parser.add_argument("--out", type=Path, default=Path("bench_recipe_full"))
    args = parser.parse_args(argv)

    data = load(args.data)  # first: a bad folder stops it before anything is written
    rows_file, rows = resume(args.out)
    done = {(r["arm"], r["seed"]) for r in rows}
    # seed by seed, the default first: a run cut short still pairs every seed it finished
    plan = [(arm, {"family": "cnn", "overrides": {} if arm == BASELINE else ARMS[arm][1],
                   "seed": s, "epochs": args.epochs, "precision": args.precision})
            for s in range(args.first_seed, args.first_seed + args.seeds)
            for arm in (BASELINE, *args.arms) if (arm, s) not in done]
    run_plan(plan, data, rows_file, rows)
    lines = summarise(rows)
    for arm in args.arms:
        per_seed = paired_gains(rows, arm, BASELINE)  # validation, flip TTA, points
        if per_seed:
            text = ", ".join(f"{g:+.2f}" for g in per_seed)
            lines.append(f"{arm}: validation (flip TTA) gain over {BASELINE} per seed {text}; "
                         f"mean {statistics.mean(per_seed):+.2f} points")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
