"""Distributed search on KerasTuner's engine: a real chief and real workers on 127.0.0.1,
every process under a timeout, one real SQLite MLflow store."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TINY_FC_SPACE, free_port, write_params

TIMEOUT = 240


def _setup(tmp_path: Path, tiny_prepared: Path, **tune) -> tuple[Path, list[str]]:
    (tmp_path / "fc.yaml").write_text(TINY_FC_SPACE)
    params = write_params(tmp_path / "params.yaml", prepare={"source": str(tiny_prepared)},
                          tune={"tuner": "random", "search_train_per_class": None,
                                "final_epochs": 1, "per_family": {}, **tune},
                          tracking={"uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db"})
    base = [sys.executable, "-m", "pipeline", "tune", "--params", str(params), "--family", "fc",
            "--space", str(tmp_path / "fc.yaml"), "--data", str(tiny_prepared),
            "--tuning-dir", str(tmp_path / "tuning"), "--models", str(tmp_path / "models"),
            "--results", str(tmp_path / "results")]
    return tmp_path, base


class Process:
    """A pipeline process with its output in a file, killed with its group at the end."""

    def __init__(self, command: list[str], log: Path):
        self.log = log
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        with open(log, "w") as out:
            self.popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.log.name} did not exit:\n{self.output()}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.popen.poll() is None, self.output()
            assert time.monotonic() < deadline, f"no {text!r}:\n{self.output()}"
            time.sleep(0.2)


def _mlflow(root: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("cifar-automl").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _wait_for_trial_run(root: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not _mlflow(root)[1]:
        assert time.monotonic() < deadline, "no trial run in the store"
        time.sleep(0.05)


def _trials(root: Path) -> list[dict]:
    with open(root / "results" / "fc" / "trials.csv") as handle:
        return list(csv.DictReader(handle))


def test_chief_and_two_workers_run_every_trial_once(tmp_path, tiny_prepared):
    root, base = _setup(tmp_path, tiny_prepared, max_trials=4, max_epochs=1,
                        budget_minutes=3)
    address = f"127.0.0.1:{free_port()}"
    processes = []
    try:  # a worker that starts before the chief waits for it
        processes.append(Process([*base, "--role", "worker", "--worker-id", "1", "--chief",
                                  address, "--wait-seconds", "120"], root / "worker1.log"))
        processes.append(Process([*base, "--role", "chief", "--chief", address],
                                 root / "chief.log"))
        processes.append(Process([*base, "--role", "worker", "--worker-id", "2", "--chief",
                                  address, "--wait-seconds", "120"], root / "worker2.log"))
        codes = [p.wait() for p in processes]
    finally:
        for process in processes:
            process.kill()
    assert codes == [0, 0, 0], "\n\n".join(p.output() for p in processes)

    trials = _trials(root)
    assert [t["status"] for t in trials] == ["COMPLETED"] * 4
    assert (root / "models" / "fc" / "best.keras").is_file()  # the chief finished the stage
    parents, children = _mlflow(root)
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.tags["distributed"] == "chief"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert sorted(c.data.tags["trial_id"] for c in children) == \
        sorted(t["trial_id"] for t in trials)  # each trial exactly once
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["tuner_id"] for c in children} <= {"worker1", "worker2"}


def test_chief_reports_a_dead_workers_trial_and_a_rerun_finishes_it(tmp_path, tiny_prepared):
    root, base = _setup(tmp_path, tiny_prepared, max_trials=3, max_epochs=8,
                        budget_minutes=0.5, patience=20)
    address = f"127.0.0.1:{free_port()}"
    chief = Process([*base, "--role", "chief", "--chief", address, "--grace-seconds", "10"],
                    root / "chief.log")
    worker = Process([*base, "--role", "worker", "--worker-id", "1", "--chief", address],
                     root / "worker1.log")
    try:
        worker.wait_for("worker1: trial")
        _wait_for_trial_run(root)  # its run reached the store (writes are queued)
        worker.kill()  # mid-trial: it never reports back
        started = time.monotonic()
        code = chief.wait(timeout=120)
    finally:
        chief.kill()
        worker.kill()
    assert code == 1, chief.output()
    assert "orphaned trials (trial 0 on worker1)" in chief.output()
    assert time.monotonic() - started < 90  # by its deadline (30 s budget + 10 s grace)
    (parent,), children = _mlflow(root)
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["RUNNING"]  # the dead worker's trial

    chief = Process([*base, "--role", "chief", "--chief", address, "--grace-seconds", "30"],
                    root / "chief2.log")
    worker = Process([*base, "--role", "worker", "--worker-id", "1", "--chief", address],
                     root / "worker1-again.log")
    try:
        codes = [chief.wait(), worker.wait()]
    finally:
        chief.kill()
        worker.kill()
    assert codes == [0, 0], chief.output() + worker.output()
    trials = _trials(root)
    assert trials[0]["trial_id"] == "0" and trials[0]["status"] == "COMPLETED"
    (parent,), children = _mlflow(root)
    assert parent.info.status == "FINISHED"
    statuses = sorted((c.data.tags["trial_id"], c.info.status) for c in children)
    assert ("0", "KILLED") in statuses and ("0", "FINISHED") in statuses


def test_a_worker_without_a_chief_gives_up_in_time(tmp_path, tiny_prepared):
    root, base = _setup(tmp_path, tiny_prepared, max_trials=2, max_epochs=1)
    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    worker = Process([*base, "--role", "worker", "--worker-id", "1", "--chief", address,
                      "--wait-seconds", "3"], root / "worker.log")
    assert worker.wait(timeout=120) == 1
    assert f"error: no chief at {address} after 3 s" in worker.output()


def test_a_malformed_chief_address_is_one_line(tmp_path, tiny_prepared):
    _, base = _setup(tmp_path, tiny_prepared)
    done = subprocess.run([*base, "--role", "chief", "--chief", "localhost"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: --chief 'localhost': expected HOST:PORT, for "
                                   "example 127.0.0.1:8765")
