"""Benchmark: what MLflow logging costs per trial, with no training around it.

Replays the tracking calls of real trials (a child run with its hyperparameters, one
``log_batch`` per epoch, the trial's summary metrics and tags, the end) through the pipeline's
``Tracker`` against a fresh store, and reports milliseconds per trial and per epoch. Compare
with seconds per trial (tens of seconds on a CPU) to see the share it takes.

    python bench/bench_tracking.py --trials 30 --epochs 4            # local SQLite store
    python bench/bench_tracking.py --uri http://127.0.0.1:5000        # a tracking server
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HYPERPARAMETERS = {f"hp_{i}": 0.1 * i for i in range(25)}  # about a CNN trial's count
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                 "epoch_seconds")


def replay(runs, epochs: int) -> float:
    """What one trial writes: its child run, params, per-epoch metrics, summary, status."""
    started = time.perf_counter()
    run = runs.start_trial("x", HYPERPARAMETERS, {})
    for epoch in range(epochs):
        runs.log_metrics(run, {name: 0.5 for name in EPOCH_METRICS}, step=epoch)
    runs.log_metrics(run, {"epochs_run": epochs, "best_epoch": 1, "trainable_params": 1e5,
                              "seconds_per_epoch": 10.0, "best_val_accuracy": 0.5},
                        step=epochs)
    runs.set_tags(run, {"status": "COMPLETED", "stopped_by_budget": False})
    runs.end_run(run, "FINISHED")
    runs.writer.drain(60)  # the writer thread's time: what the store takes, off the training
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--uri", help="tracking URI (default: a new SQLite store)")
    args = parser.parse_args(argv)

    from pipeline.tracking.search_runs import SearchRuns
    from pipeline.tracking.store import TrackingStore

    with tempfile.TemporaryDirectory() as scratch:
        uri = args.uri or f"sqlite:///{scratch}/mlflow.db"
        runs = SearchRuns(TrackingStore(uri, "bench-tracking", Path(scratch) / "artifacts"))
        runs.start(f"bench-{time.time()}", "bench-search", {}, {"n": 1})
        replay(runs, args.epochs)  # warm-up: connections, first queries
        seconds = [replay(runs, args.epochs) for _ in range(args.trials)]
    per_trial = statistics.median(seconds) * 1000
    print(f"store {'SQLite' if not args.uri else args.uri}: {args.trials} trials of "
          f"{args.epochs} epochs")
    print(f"median {per_trial:.0f} ms per trial, {per_trial / args.epochs:.0f} ms per epoch "
          f"(fastest {min(seconds) * 1000:.0f}, slowest {max(seconds) * 1000:.0f} ms per trial)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
