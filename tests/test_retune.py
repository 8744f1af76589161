"""The scheduled retuning job end to end: real searches on tiny real data, a real SQLite MLflow
store and registry, real processes (locks, kills, exit codes)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import TINY_FC_SPACE, write_params

LOCKED = 75
TINY_TUNE = {"tuner": "random", "max_epochs": 1, "search_train_per_class": None,
             "per_family": {"cnn": {}, "fc": {}}}
TINY_RETUNE = {"families": ["fc"], "max_trials": 2, "budget_minutes": 2, "final_epochs": 1,
               "final_budget_minutes": 1}


def _env() -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "DVC_NO_ANALYTICS": "1",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def retune(cwd: Path, *args: str, timeout: float = 300,
           env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "retune", *args], cwd=cwd,
                          env={**_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def set_retune(params_file: Path, **changes) -> None:
    params = yaml.safe_load(params_file.read_text())
    params["retune"] = {**params.get("retune", {}), **changes}
    params_file.write_text(yaml.safe_dump(params))


def registry_state(cwd: Path, name: str = "cifar10-fc") -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlruns/mlflow.db")
    model = client.get_registered_model(name)
    versions = client.search_model_versions(f"name = '{name}'")
    return {"aliases": {alias: str(v) for alias, v in model.aliases.items()},
            "versions": sorted(str(v.version) for v in versions),
            "client": client}


def retune_runs(client) -> list:
    experiment = client.get_experiment_by_name("cifar-automl")
    return client.search_runs([experiment.experiment_id], "tags.role = 'retune'",
                              order_by=["attributes.start_time ASC"])


def test_retunes_create_keep_and_promote_the_champion(tmp_path, real_cifar10):
    """First retune: no champion, the challenger becomes one. Second (margin +100 points):
    kept. Third (margin -100 points, alpha 1): promoted, the old champion becomes previous."""
    from tests.test_dvc import make_repo

    repo, _, _ = make_repo(tmp_path, {"source": str(real_cifar10), "train_per_class": 20,
                                      "val_fraction": 0.01, "test_per_class": 10,
                                      "preview_images": 2, "preview_samples": 1},
                           TINY_TUNE, {"fc": TINY_FC_SPACE})
    params = repo / "params.yaml"
    set_retune(params, **TINY_RETUNE)

    job_summary = tmp_path / "step_summary.md"  # what GitHub Actions shows on the run's page
    first = retune(repo, env={"GITHUB_STEP_SUMMARY": str(job_summary)})
    assert first.returncode == 0, first.stderr
    assert "no champion yet" in first.stdout and "is champion (version 1)" in first.stdout
    assert "no champion yet" in job_summary.read_text()
    assert (repo / "data" / "prepared" / "meta.json").is_file()  # dvc repro prepare ran
    state = registry_state(repo)
    assert state["aliases"] == {"champion": "1"}
    champion_hps = json.loads(state["client"].get_model_version("cifar10-fc", "1")
                              .tags["hyperparameters"])

    set_retune(params, margin=1.0)
    second = retune(repo)
    assert second.returncode == 0, second.stderr
    assert "champion kept" in second.stdout
    assert registry_state(repo)["aliases"] == {"champion": "1"}
    assert registry_state(repo)["versions"] == ["1"]  # a losing challenger is not registered
    # warm start: the second search's first trial is the champion's configuration
    with open(repo / "retune" / "current" / "fc" / "results" / "fc" / "trials.csv") as handle:
        first_trial = next(csv.DictReader(handle))
    for name in ("layers", "units", "optimizer"):
        assert str(champion_hps[name]) == first_trial[f"hp.{name}"], name

    set_retune(params, margin=-1.0, alpha=1.0)
    third = retune(repo)
    assert third.returncode == 0, third.stderr
    assert "promoted to champion (version 2)" in third.stdout
    state = registry_state(repo)
    assert state["aliases"] == {"champion": "2", "previous": "1"}

    runs = retune_runs(state["client"])
    assert [r.data.tags["fc_decision"] for r in runs] == ["created", "kept", "promoted"]
    assert all(r.info.status == "FINISHED" for r in runs)
    kept, promoted = runs[1].data, runs[2].data
    assert kept.metrics["fc_champion_accuracy"] >= 0 and "fc_p_value" in kept.metrics
    assert promoted.params["retune.margin"] == "-1.0"

    shown = subprocess.run([sys.executable, "-m", "pipeline", "history", "--png",
                            "lineage.png"], cwd=repo, env=_env(), capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "cifar10-fc: 2 version(s)" in shown.stdout and "retune runs: 3" in shown.stdout
    assert re.search(r"^\s+1\s.*\bretune\s+previous$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^\s+2\s.*\bretune\s+champion$", shown.stdout, re.M), shown.stdout
    assert (repo / "lineage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _wait_for(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert process.poll() is None, path.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in time:\n{path.read_text()}"
        time.sleep(0.5)


def test_lock_refuses_a_second_retune_and_a_killed_retune_changes_nothing(tmp_path,
                                                                          tiny_prepared):
    """A running retune holds the lock: a second one exits 75 at once. Killed with SIGKILL
    mid-search, the first leaves the champion as it was, and the next retune succeeds and
    closes the dead one's runs."""
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "fc.yaml").write_text(TINY_FC_SPACE)
    params = write_params(tmp_path / "params.yaml", prepare={"source": str(tiny_prepared)},
                          tune=TINY_TUNE, retune=TINY_RETUNE)
    data = ["--data", str(tiny_prepared)]
    created = retune(tmp_path, *data)
    assert created.returncode == 0, created.stderr
    before = registry_state(tmp_path)

    set_retune(params, max_trials=50, budget_minutes=10)  # long enough to be killed mid-search
    log_path = tmp_path / "running.log"
    with open(log_path, "w") as log:
        running = subprocess.Popen([sys.executable, "-m", "pipeline", "retune", *data],
                                   cwd=tmp_path, env=_env(), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(log_path, "trial 2 of", running, timeout=180)
        started = time.monotonic()
        second = retune(tmp_path, *data, timeout=60)
        assert second.returncode == LOCKED, second.stderr
        assert f"another retune is running (pid {running.pid}" in second.stderr
        assert time.monotonic() - started < 30  # it did not wait for the lock
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.wait(timeout=30)

    after = registry_state(tmp_path)
    assert after["aliases"] == before["aliases"] and after["versions"] == before["versions"]
    assert [r.info.status for r in retune_runs(after["client"])] == ["FINISHED", "RUNNING"]

    set_retune(params, max_trials=2, budget_minutes=2, margin=1.0)
    again = retune(tmp_path, *data)
    assert again.returncode == 0, again.stderr
    assert "champion kept" in again.stdout
    runs = retune_runs(registry_state(tmp_path)["client"])
    assert [r.info.status for r in runs] == ["FINISHED", "KILLED", "FINISHED"]
    killed_id = runs[1].data.tags["retune_id"]
    client = registry_state(tmp_path)["client"]
    experiment = client.get_experiment_by_name("cifar-automl").experiment_id
    leftovers = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert leftovers == [], [r.data.tags for r in leftovers]
    searches = client.search_runs([experiment], f"tags.retune_id = '{killed_id}'")
    assert {r.info.status for r in searches} == {"KILLED"}
