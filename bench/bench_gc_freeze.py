"""Benchmark: what freezing the imported objects out of Python's garbage collector saves.

The CLI calls ``gc.freeze()`` once Keras is imported (pipeline/cli.py, ``_import_keras``), so
that the full collections Keras' ``clear_session`` runs before every lesson's model and every
search trial walk only what was made since. This runs the same ``lessons`` command with and
without it (``gc.freeze`` replaced by a no-op in the second arm), alternating, and reports the
wall time of each run, the ratio per pair, and whether both arms wrote the same results.

    python bench/bench_gc_freeze.py --data data/prepared --pairs 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CLAIMS = ["batch_norm", "adam_robustness", "learning_rate"]  # the claims with most models
# the second arm: the same CLI with gc.freeze a no-op
NO_FREEZE = "import gc, sys; gc.freeze = lambda: None; from pipeline.cli import main; " \
            "sys.exit(main(sys.argv[1:]))"


def run_arm(arm: str, data: Path, params: Path, champion: Path, scratch: Path) -> tuple:
    results = scratch / f"results-{arm}-{time.monotonic_ns()}"
    prefix = [sys.executable, "-c", NO_FREEZE] if arm == "no freeze" else \
        [sys.executable, "-m", "pipeline"]
    started = time.monotonic()
    subprocess.run([*prefix, "lessons", "--params", str(params), "--data", str(data),
                    "--champion", str(champion), "--results", str(results),
                    "--out", str(scratch / "lessons.md")], cwd=REPO, check=True,
                   capture_output=True)
    seconds = time.monotonic() - started
    verdicts = {c: json.loads((results / f"{c}.json").read_text())["result"] for c in CLAIMS}
    return seconds, verdicts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared data folder")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        params = scratch / "params.yaml"
        params.write_text(yaml.safe_dump({
            "lessons": {"train_per_class": args.per_class, "eval_per_class": args.per_class // 2,
                        "epochs": 1, "seeds": 1, "confirm_seed": None, "claims": CLAIMS},
            "tracking": {"uri": f"sqlite:///{scratch}/mlflow.db", "experiment": "bench"}}))
        champion = scratch / "best_hparams.json"  # read by the ablations claim only: unused
        rows = []
        for pair in range(args.pairs):
            frozen, frozen_results = run_arm("freeze", args.data, params, champion, scratch)
            plain, plain_results = run_arm("no freeze", args.data, params, champion, scratch)
            rows.append((pair, frozen, plain, frozen_results == plain_results))
            print(f"pair {pair + 1}: freeze {frozen:.1f} s, no freeze {plain:.1f} s, "
                  f"ratio {plain / frozen:.3f}, same results: {rows[-1][3]}", flush=True)
    print("| pair | with gc.freeze (s) | without (s) | without / with | same results |")
    print("|---:|---:|---:|---:|---|")
    for pair, frozen, plain, same in rows:
        print(f"| {pair + 1} | {frozen:.1f} | {plain:.1f} | {plain / frozen:.3f} | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
