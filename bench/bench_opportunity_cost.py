"""Benchmark: does the laptop CNN search pay for its minutes? The opportunity-cost A/B of the
search issue, full training split, paired seeds.

Arm ``pipeline``: what the default run trains when its search keeps the space's defaults (every
laptop search so far did): the defaults for ``--final-epochs`` epochs (what the final
training's 14-minute cap buys on this machine). Arm ``recipe_longer``: the same defaults, no
search, trained for the search's and the final training's minutes together, converted to
epochs at the same rate (``--longer-epochs``). Budgets are counted in steps, so a busy machine
changes the times but not what is trained. Each run's rule is written in bench/README.md
before it starts: ``recipe_longer`` is ahead when its accuracy with flip TTA beats the
pipeline's on every seed and the mean paired gain clears the one-sided 95% t margin of
pipeline/search/selection.py. The verdict lines give it for validation and for test; the runs
since 2026-12-04 decide on validation (the first one, on the slow machine, read test).

    python bench/bench_opportunity_cost.py --seeds 3 --out <dir>
    python bench/bench_opportunity_cost.py --seeds 2 --final-epochs 12 --longer-epochs 15 \
        --precision mixed_bfloat16 --out <dir>     # an AVX-512/bfloat16 CPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_equal_care import load, resume, run_plan, summarise  # noqa: E402


def paired(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    by = {(r["arm"], r["seed"]): 100 * r[key] for r in rows}
    seeds = sorted(s for a, s in by if a == "pipeline" and ("recipe_longer", s) in by)
    return [by[("pipeline", s)] for s in seeds], [by[("recipe_longer", s)] for s in seeds]


def verdict(rows: list[dict]) -> list[str]:
    from pipeline.search.selection import paired_rule

    lines = []
    for key in ("val_flip", "test_flip"):
        first, longer = paired(rows, key)
        if len(first) < 2:
            continue
        rule = paired_rule(first, longer)
        every = all(b > a for a, b in zip(first, longer, strict=True))
        gains = ", ".join(f"{b - a:+.2f}" for a, b in zip(first, longer, strict=True))
        lines.append(f"{key}: recipe_longer - pipeline per seed {gains}; mean "
                     f"{rule['gain_mean']:+.2f} points, margin {rule['margin']:.2f}; "
                     f"ahead on every seed: {every}; clears the margin: {rule['displaces']}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--final-epochs", type=int, default=5,
                        help="what the final training's 14 minutes buy here")
    parser.add_argument("--longer-epochs", type=int, default=7,
                        help="what the search's 6 and the final's 14 minutes buy together")
    parser.add_argument("--precision", default="float32",
                        help="Keras dtype policy of both arms: what tune.precision picks here "
                             "(mixed_bfloat16 on a CPU with AVX512_BF16)")
    parser.add_argument("--out", type=Path, default=Path("bench_opportunity_cost"))
    args = parser.parse_args(argv)

    data = load(args.data)  # first: a bad folder stops it before anything is written
    rows_file, rows = resume(args.out)
    done = {(r["arm"], r["seed"]) for r in rows}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    # seed by seed: a run cut short still pairs every seed it finished
    plan = [(arm, {"family": "cnn", "overrides": {}, "seed": s, "epochs": epochs,
                   "precision": args.precision})
            for s in seeds
            for arm, epochs in (("recipe_longer", args.longer_epochs),
                                ("pipeline", args.final_epochs))
            if (arm, s) not in done]
    run_plan(plan, data, rows_file, rows)
    print("\n".join(summarise(rows) + verdict(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
