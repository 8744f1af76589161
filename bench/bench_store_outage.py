"""Benchmark: what a tracking server that is down costs, with MLflow's HTTP defaults and with
the project's settings.

Against a port on 127.0.0.1 where nothing listens it times, each in a fresh process (MLflow
reads its variables per call, but a fresh process keeps the runs apart):

- one store call (opening the experiment), under MLflow's defaults (7 retries, backoff factor
  2, 120 s timeout) and under the project's (``tracking.http_retries``, ``http_timeout_s``);
- ``cifar-automl history`` end to end (a command that stops on a store error, like publish and
  retune), under the project's settings, with the exit code and the last line it printed.

    python bench/bench_store_outage.py                 # both settings (MLflow's take minutes)
    python bench/bench_store_outage.py --skip-mlflow-defaults
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MLFLOW_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7",
                   "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "120"}
ONE_CALL = """
import sys, time
import mlflow.tracking  # imported before the clock starts: only the call is timed
from pipeline.tracking.store import TrackingError, TrackingStore
started = time.perf_counter()
try:
    TrackingStore(sys.argv[1], "bench")
except TrackingError as exc:
    print(f"{time.perf_counter() - started:.1f}")
"""


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def one_call(uri: str, env: dict) -> float:
    done = subprocess.run([sys.executable, "-c", ONE_CALL, uri], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    return float(done.stdout.strip().splitlines()[-1])


def history_command(uri: str) -> tuple[float, int, str]:
    with tempfile.TemporaryDirectory() as scratch:
        params = Path(scratch) / "params.yaml"
        params.write_text(f"tracking:\n  uri: {uri}\n")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pipeline", "history", "--params",
                               str(params)], cwd=REPO, env=clean_env(), capture_output=True,
                              text=True, timeout=900)
        seconds = time.perf_counter() - started
    return seconds, done.returncode, (done.stderr.strip().splitlines() or [""])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-mlflow-defaults", action="store_true")
    args = parser.parse_args()
    uri = f"http://127.0.0.1:{dead_port()}"
    print(f"server: {uri} (nothing listens)")
    print(f"one call, project settings (2 retries, 10 s): {one_call(uri, clean_env()):.1f} s")
    if not args.skip_mlflow_defaults:
        seconds = one_call(uri, clean_env(**MLFLOW_DEFAULTS))
        print(f"one call, MLflow's defaults (7 retries, backoff 2, 120 s): {seconds:.1f} s")
    seconds, code, last = history_command(uri)
    print(f"cifar-automl history: exit {code} after {seconds:.1f} s: {last[:160]}")


if __name__ == "__main__":
    main()
