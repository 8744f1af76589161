"""The scheduled retuning job end to end: real searches on tiny real data, a real SQLite MLflow
store and registry, real processes (locks, kills, exit codes)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_FC_SPACE, write_params

LOCKED = 75
TINY_TUNE = {"tuner": "random", "max_epochs": 1, "search_train_per_class": None,
             "per_family": {"cnn": {}, "fc": {}}}
TINY_RETUNE = {"families": ["fc"], "max_trials": 2, "budget_minutes": 2, "final_epochs": 1,
               "final_budget_minutes": 1}


# eight configurations: two searches of four trials each overlap unless the second one
# skips what the first tried (without that filter they overlap in about 9 runs of 10)
DISCRETE_FC_SPACE = re.sub(r"learning_rate: \{.*\}", "learning_rate: {type: fixed, value: 0.001}",
                           TINY_FC_SPACE)


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
    # the champion's score is its registered model's on the holdout images, recomputed here
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlruns/mlflow.db")
    first_champion = mlflow.keras.load_model("models:/cifar10-fc/1")
    prepared = repo / "data" / "prepared"
    predicted = np.argmax(first_champion.predict(np.load(prepared / "holdout_images.npy"),
                                                 batch_size=512, verbose=0), axis=1)
    holdout_accuracy = float(np.mean(predicted == np.load(prepared / "holdout_labels.npy")))
    assert kept.metrics["fc_champion_accuracy"] == pytest.approx(holdout_accuracy, abs=1e-6)
    assert "fc_p_value" in kept.metrics
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
        # the first holds the lock for its 10-minute search: a second that waited for it
        # would overrun this timeout (subprocess.TimeoutExpired) instead of exiting 75
        second = retune(tmp_path, *data, timeout=60)
        assert second.returncode == LOCKED, second.stderr
        assert f"another retune is running (pid {running.pid}" in second.stderr
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


# --- the promotion rule at its boundaries -----------------------------------------------------
def _pair(n: int, both: int, only_challenger: int, only_champion: int):
    """Correctness vectors over n images: both right, one of them right, neither right."""
    import numpy as np

    challenger = np.zeros(n, bool)
    champion = np.zeros(n, bool)
    challenger[:both] = champion[:both] = True
    challenger[both:both + only_challenger] = True
    champion[both + only_challenger:both + only_challenger + only_champion] = True
    return challenger, champion


def test_the_margin_counts_exactly_at_its_boundary():
    """+0.5 points on 2,000 images is 10 images: 10 more promotes, 9 more does not. With 1,116
    champion images right, the difference of two rounded accuracies reads 10 images as
    0.00499... and would keep."""
    from pipeline.retune import decide

    assert 1126 / 2000 - 1116 / 2000 < 0.005  # the trap the count avoids
    at = decide(*_pair(2000, 1116, 10, 0), margin=0.005, alpha=0.05)
    assert at["difference"] == 0.005 and at["p_value"] < 0.05 and at["wins"]
    below = decide(*_pair(2000, 1116, 9, 0), margin=0.005, alpha=0.05)
    assert below["difference"] < 0.005 and below["p_value"] < 0.05 and not below["wins"]
    negative = decide(*_pair(2000, 1500, 0, 10), margin=-0.005, alpha=1.0)
    assert negative["wins"]  # a loosened rule: exactly -0.5 points still passes


def test_the_p_value_counts_exactly_at_alpha():
    from pipeline.retune import decide
    from pipeline.stats import mcnemar_exact

    challenger, champion = _pair(1000, 600, 30, 15)  # +1.5 points, p about 0.04
    p_value = mcnemar_exact(challenger, champion)["p_value"]
    assert 0.01 < p_value < 0.1
    assert decide(challenger, champion, margin=0.005, alpha=p_value)["wins"]
    assert not decide(challenger, champion, margin=0.005, alpha=p_value * (1 - 1e-9))["wins"]
    assert not decide(challenger, champion, margin=0.016, alpha=1.0)["wins"]


# --- fail closed ---------------------------------------------------------------------------------
@contextlib.contextmanager
def failing_proxy(target: str, fail_path: str, status: int, error_code: str):
    """A real HTTP server in front of ``target`` that forwards every request, except those
    whose path contains ``fail_path``: it answers them with ``status`` as MLflow would."""
    import http.server
    import threading
    import urllib.error
    import urllib.request

    from tests.conftest import free_port

    failed = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self):
            if fail_path in self.path:
                failed.append(self.path)
                self._answer(status, json.dumps({"error_code": error_code,
                                                 "message": "injected by the test"}).encode())
                return
            length = int(self.headers.get("Content-Length") or 0)
            request = urllib.request.Request(
                target + self.path, data=self.rfile.read(length) if length else None,
                method=self.command,
                headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    self._answer(response.status, response.read())
            except urllib.error.HTTPError as exc:
                self._answer(exc.code, exc.read())

        do_GET = do_POST = do_PATCH = do_DELETE = _forward

        def log_message(self, *args):
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", failed
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status,error_code", [(503, "TEMPORARILY_UNAVAILABLE"),
                                               (403, "PERMISSION_DENIED")])
def test_a_store_error_at_the_champion_lookup_fails_closed(tmp_path, tiny_prepared, status,
                                                            error_code):
    """A real MLflow server holds a champion; a real proxy in front of it fails the lookup of
    registered models. The retune exits 1 with one line, registers nothing, moves no alias and
    trains nothing (the old code took the error for "no champion yet" and promoted)."""
    from mlflow.tracking import MlflowClient

    from tests.conftest import free_port, running_server

    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(port), "--workers", "1", "--backend-store-uri",
               f"sqlite:///{tmp_path}/server.db", "--default-artifact-root",
               (tmp_path / "artifacts").as_uri()]
    with running_server(command, port, tmp_path) as base:
        client = MlflowClient(tracking_uri=base)
        experiment = client.create_experiment("cifar-automl")
        run = client.create_run(experiment)
        client.create_registered_model("cifar10-fc")
        client.create_model_version("cifar10-fc", f"{run.info.artifact_uri}/model",
                                    run_id=run.info.run_id)
        client.set_registered_model_alias("cifar10-fc", "champion", "1")
        with failing_proxy(base, "/registered-models/get", status, error_code) as (proxy,
                                                                                    failed):
            (tmp_path / "search_spaces").mkdir()
            (tmp_path / "search_spaces" / "fc.yaml").write_text(TINY_FC_SPACE)
            write_params(tmp_path / "params.yaml", prepare={"source": str(tiny_prepared)},
                         tune=TINY_TUNE, retune=TINY_RETUNE, tracking={"uri": proxy})
            done = retune(tmp_path, "--data", str(tiny_prepared), timeout=120)
        assert done.returncode == 1, done.stderr
        message = done.stderr.strip().splitlines()[-1]
        assert message.startswith("error: MLflow store"), message
        assert "look up the registered model failed" in message, message
        assert failed  # the lookup did reach the failing server
        model = client.get_registered_model("cifar10-fc")
        assert model.aliases == {"champion": "1"}
        assert [v.version for v in client.search_model_versions("name = 'cifar10-fc'")] == ["1"]
        assert [r.info.run_id for r in client.search_runs([experiment])] == [run.info.run_id]
    assert not (tmp_path / "retune" / "current").exists()  # no search ran


def test_publish_waits_for_a_retune_and_gives_up_cleanly(tmp_path):
    """Publish takes the retune job's lock: it waits while a retune holds it and acquires it
    when the retune ends; past its wait it raises without having done anything."""
    import threading

    from pipeline.lock import LockHeld, RunLock

    path = tmp_path / "retune.lock"
    retune_lock = RunLock(path, "retune").__enter__()
    with pytest.raises(LockHeld, match="another retune is running .* after waiting"):
        with RunLock(path, "publish", wait_s=1.5):
            pass
    threading.Timer(1.0, retune_lock.__exit__, (None, None, None)).start()
    started = time.monotonic()
    with RunLock(path, "publish", wait_s=30):
        assert 0.5 < time.monotonic() - started < 20
        assert json.loads(path.read_text())["command"] == "publish"
        with pytest.raises(LockHeld, match="another publish is running"):
            RunLock(path, "retune").__enter__()


def _trial_digests(client, retune_id: str) -> list[str]:
    """Configuration digests of one retune's search trials, in trial order."""
    experiment = client.get_experiment_by_name("cifar-automl").experiment_id
    (search,) = client.search_runs([experiment], f"tags.retune_id = '{retune_id}' and "
                                   "tags.role = 'search'")
    trials = client.search_runs([experiment], "tags.mlflow.parentRunId = "
                                f"'{search.info.run_id}'")
    return [t.data.tags["config_digest"] for t in sorted(trials,
                                                         key=lambda t: t.data.tags["trial_id"])]


def test_holdout_decides_and_a_second_retune_explores_new_configurations(tmp_path,
                                                                          tiny_prepared):
    """After a first retune made a champion, the test split is relabelled so that the champion
    gets every test image wrong, and the holdout so that it gets every holdout image right. The
    challenger is ahead on test and behind on the holdout: it is kept, so the holdout decided.
    The second search (same data, same params) starts from the champion and otherwise tries
    only configurations the first never tried; history counts them all."""
    import shutil

    import mlflow
    import numpy as np

    data = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, data)
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "fc.yaml").write_text(DISCRETE_FC_SPACE)
    params = write_params(tmp_path / "params.yaml", prepare={"source": str(tiny_prepared)},
                          tune=TINY_TUNE, retune={**TINY_RETUNE, "max_trials": 4})
    first = retune(tmp_path, "--data", str(data))
    assert first.returncode == 0, first.stderr
    assert "no champion yet" in first.stdout

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    champion = mlflow.keras.load_model("models:/cifar10-fc@champion")
    for split, shift in (("holdout", 0), ("test", 1)):
        images = np.load(data / f"{split}_images.npy")
        predicted = np.argmax(champion.predict(images, verbose=0), axis=1)
        np.save(data / f"{split}_labels.npy", ((predicted + shift) % 10).astype(np.int64))

    set_retune(params, margin=0.0001, alpha=1.0)  # any gain on the deciding split promotes
    second = retune(tmp_path, "--data", str(data))
    assert second.returncode == 0, second.stderr
    assert "champion kept" in second.stdout, second.stdout
    state = registry_state(tmp_path)
    assert state["aliases"] == {"champion": "1"} and state["versions"] == ["1"]
    runs = retune_runs(state["client"])
    kept = runs[1].data.metrics
    assert kept["fc_champion_test_accuracy"] == 0.0 < kept["fc_challenger_test_accuracy"]
    assert kept["fc_champion_accuracy"] == 1.0 > kept["fc_challenger_accuracy"]
    assert kept["fc_holdout_images"] == 5000

    before, after = (_trial_digests(state["client"], r.data.tags["retune_id"]) for r in runs)
    champion_digest = after[0]  # the warm start: the champion's configuration first
    assert champion_digest in before
    assert len(after) == 4 and not set(after[1:]) & set(before), (before, after)
    assert len(set(before) | set(after)) == 7  # of the space's 8
    assert kept["fc_configurations_tried"] == len(set(before) | set(after))

    shown = subprocess.run([sys.executable, "-m", "pipeline", "history"], cwd=tmp_path,
                           env=_env(), capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"fc: {len(set(before) | set(after))} configurations tried" in shown.stdout, \
        shown.stdout

    # the second search ranked the first one's scored trials with its own (same training
    # images, augmentation and rung: the relabelled splits are neither), read back typed
    from pipeline.lineage import earlier_trials
    from pipeline.search.oracles import config_digest
    from pipeline.tracking.store import TrackingStore

    client = state["client"]
    experiment = client.get_experiment_by_name("cifar-automl").experiment_id
    first_search, second_search = (
        client.search_runs([experiment], f"tags.retune_id = '{r.data.tags['retune_id']}' and "
                           "tags.role = 'search'")[0] for r in runs)
    first_scored = client.search_runs([experiment], "tags.mlflow.parentRunId = "
                                      f"'{first_search.info.run_id}' and tags.status = "
                                      "'COMPLETED'")
    assert int(second_search.data.params["earlier_trials"]) == len(first_scored) >= 2
    store = TrackingStore(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "cifar-automl",
                          tmp_path / "mlruns" / "artifacts")
    read = earlier_trials(store, "fc", "cifar10")
    assert len(read) == len(first_scored) + len(after)  # both searches' trials, all scored
    pairs = {(config_digest(t["values"]), t["score"]) for t in read}
    assert {(t.data.tags["config_digest"], t.data.metrics["best_val_accuracy"])
            for t in first_scored} <= pairs
    assert all(isinstance(t["values"]["units"], int) and t["epochs"] == 1 for t in read)
    assert len({t["fidelity"] for t in read}) == 1
    # the tiny searches are too short to time: their trials were costed by FLOPs, which the
    # fidelity says, so a measured search's oracle would not rank them with its own
    assert read[0]["fidelity"].endswith("-flopscost")
