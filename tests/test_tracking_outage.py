"""The MLflow store going away mid-search, or down when the search starts: training keeps its
pace, the wait costs seconds, and nothing is lost (a real `mlflow server` on 127.0.0.1, killed,
started and restarted by the test, reached with the settings a user has); the spool replays
the writes a killed process left undone, also when the kill lands between two of its steps."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import free_port, wait_healthy
from tests.test_tuning import read_csv, run_search

OUTAGE_S = 12  # the store is down this long, mid-search
LOGGING_BOUND_S = 1.0  # what one epoch may wait on MLflow, outage or not


def _start_server(root, port):
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
               "--default-artifact-root", (root / "artifacts").as_uri()]
    server = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_healthy(port, server)
    return server


def _wait_for_trials(tmp_path, count, timeout=240):
    """Until ``count`` trials of the search have started (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while len(list((tmp_path / "tuning").glob("cnn-*/trial_*"))) < count and \
            time.monotonic() < deadline:
        time.sleep(0.2)


def _stop(server):
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=20)


def test_a_store_outage_mid_search_blocks_no_epoch_and_loses_nothing(tmp_path, tiny_prepared,
                                                                      monkeypatch, caplog):
    from mlflow.tracking import MlflowClient

    root, port = tmp_path / "server", free_port()
    root.mkdir()
    servers = [_start_server(root, port)]
    outage, restored = {}, threading.Event()

    def kill_then_restart():
        _wait_for_trials(tmp_path, 2)
        _stop(servers[0])
        outage["start"] = time.time()
        time.sleep(OUTAGE_S)
        servers.append(_start_server(root, port))
        outage["end"] = time.time()
        restored.set()

    # the search's end waits for the restart, however slow the machine: the store is back
    # seconds before the final drain, while the writer still sleeps in its backoff
    from pipeline.tracking.search_runs import SearchRuns
    finish = SearchRuns.finish
    monkeypatch.setattr(SearchRuns, "finish",
                        lambda self, *a, **k: (restored.wait(120), finish(self, *a, **k))[1])

    def check(best):
        assert "end" in outage, "the search ended before the store came back"
        _check_nothing_lost(MlflowClient(f"http://127.0.0.1:{port}"), best, tmp_path, outage)

    _search_while(kill_then_restart, check, servers, tmp_path, tiny_prepared, monkeypatch,
                  port, max_trials=8, max_epochs=4)
    history = read_csv(tmp_path / "results" / "cnn" / "trial_history.csv")
    assert max(float(h["logging_seconds"]) for h in history) < LOGGING_BOUND_S
    assert "waits for the store" in caplog.text


def _search_while(action, check, servers, tmp_path, prepared, monkeypatch, port, **tune):
    """A search logging to the server on ``port`` while ``action`` runs beside it;
    ``check(best)`` while the servers still run; then every server in ``servers`` stopped."""
    beside = threading.Thread(target=action, daemon=True)
    beside.start()
    try:
        best = run_search(tmp_path, prepared, monkeypatch,
                          tracking_uri=f"http://127.0.0.1:{port}", **tune)
        beside.join(timeout=120)
        check(best)
    finally:
        for server in servers:
            if server.poll() is None:
                _stop(server)


def _check_nothing_lost(client, best, tmp_path, outage):
    """Every trial's run holds its per-epoch metrics and final status, epochs measured while
    the store was down included; the spool is empty."""
    experiment = client.get_experiment_by_name("cifar-automl").experiment_id
    found = client.search_runs([experiment], max_results=1000)
    parent = [r for r in found if r.info.run_id == best["mlflow_parent_run"]]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId")
                == best["mlflow_parent_run"]]
    trials = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    assert parent and parent[0].info.status == "FINISHED"
    assert len(children) == len(trials) >= 3
    measured = []  # when each epoch ended, as logged
    for child in children:
        row = next(t for t in trials if t["trial_id"] == child.data.tags["trial_id"])
        assert child.info.status == "FINISHED"
        epochs = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert len(epochs) == int(row["epochs_run"]) >= 1
        measured += [m.timestamp / 1000 for m in epochs]
        assert "label_smoothing" in child.data.params  # the full configuration, not the space
    assert any(outage["start"] < t < outage["end"] for t in measured)
    assert parent[0].data.tags["best_trial_run"] in {c.info.run_id for c in children}
    assert not list((tmp_path / "tuning").rglob("mlflow-spool*.jsonl"))  # all sent


def test_writes_a_killed_process_left_in_the_spool_are_replayed(tmp_path):
    from pipeline.tracking.spool import SpooledWriter
    from pipeline.tracking.store import TrackingStore

    store = TrackingStore(f"sqlite:///{tmp_path}/mlflow.db", "spool", tmp_path / "artifacts")
    parent = store.create_run("search", {})
    spool = tmp_path / "spool.jsonl"
    # what a process killed mid-search leaves: a created run, and writes not yet applied
    trial = store.create_run("trial-0000", {}, parent)
    lines = [{"seq": 1, "op": "create_run", "args": {"key": "local:a", "name": "trial-0000",
                                                      "tags": {}, "parent": parent}},
             {"run": "local:a", "id": trial},
             {"done": 1},
             {"seq": 2, "op": "log_metrics", "args": {"run": "local:a", "step": 0,
                                                      "metrics": {"val_accuracy": 0.5},
                                                      "timestamp_ms": 1}},
             {"seq": 3, "op": "end_run", "args": {"run": "local:a", "status": "FINISHED"}}]
    spool.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"seq": 4, "o')
    writer = SpooledWriter(store, spool)
    assert writer.drain(30) == 0
    assert [m.value for m in store.client.get_metric_history(trial, "val_accuracy")] == [0.5]
    assert store.client.get_run(trial).info.status == "FINISHED"
    assert len(store.find_runs("")) == 2  # the trial's run was not created a second time
    writer.forget_spool()
    assert not spool.exists()


def test_a_store_down_when_the_search_starts_costs_seconds_and_loses_nothing(
        tmp_path, tiny_prepared, monkeypatch, caplog):
    """Nothing listens at the tracking URI when the search starts (the user's own settings:
    no MLflow variables set); the server comes up during the search and gets every write."""
    import logging

    from mlflow.tracking import MlflowClient

    caplog.set_level(logging.INFO)
    for variable in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                     "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(variable, raising=False)
    root, port = tmp_path / "server", free_port()
    root.mkdir()
    servers = []

    up = threading.Event()

    def start_once_training():
        _wait_for_trials(tmp_path, 1)
        servers.append(_start_server(root, port))
        up.set()

    # the search's results wait for the server, however slow the machine is to start it: it
    # comes up during the search, and the results must then name the search's run
    import pipeline.tune
    tabulate = pipeline.tune.tabulate_trials
    monkeypatch.setattr(pipeline.tune, "tabulate_trials",
                        lambda *a, **k: (up.wait(120), tabulate(*a, **k))[1])

    def check(best):
        assert servers, "the server never started"
        _check_nothing_lost(MlflowClient(f"http://127.0.0.1:{port}"), best, tmp_path,
                            {"start": 0, "end": time.time()})

    _search_while(start_once_training, check, servers, tmp_path, tiny_prepared, monkeypatch,
                  port, max_trials=4, max_epochs=2)
    warned = [r for r in caplog.records if f"127.0.0.1:{port}" in r.getMessage()
              and "the search goes on" in r.getMessage()]
    assert warned, caplog.text
    assert len(warned[0].getMessage().splitlines()) == 1
    # opening the search's run (step 2) up to the search (step 3): one short try, no minutes
    steps = {r.getMessage()[:5]: r.created for r in caplog.records
             if r.getMessage().startswith(("[2/6]", "[3/6]"))}
    assert steps["[3/6]"] - steps["[2/6]"] < 60, steps


def test_a_search_whose_store_never_answers_keeps_its_writes_for_the_next_run(
        tmp_path, tiny_prepared, monkeypatch, caplog):
    """Down from start to end: the search finishes, its end waits seconds, not the two-minute
    drain, and the writes stay in the spool, where the next run of the same search sends them."""
    import logging

    from mlflow.tracking import MlflowClient

    caplog.set_level(logging.INFO)
    port = free_port()
    started = time.monotonic()
    best = run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=1, max_epochs=1,
                      tracking_uri=f"http://127.0.0.1:{port}")
    assert best["search_score"] > 0 and best["mlflow_parent_run"] is None
    assert "still wait for the store" in caplog.text
    spool, = (tmp_path / "tuning").rglob("mlflow-spool.jsonl")
    pending = [json.loads(line) for line in spool.read_text().splitlines()]
    assert any(p.get("op") == "create_run" for p in pending)
    assert time.monotonic() - started < 115  # the end did not wait the 120 s drain

    root = tmp_path / "server"
    root.mkdir()
    server = _start_server(root, port)
    try:  # the same search again: resumed from its project, the spool goes out first
        run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=1, max_epochs=1,
                   tracking_uri=f"http://127.0.0.1:{port}")
        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("cifar-automl")
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        found = client.search_runs([experiment.experiment_id])
        trials = [r for r in found if r.info.run_name == "trial-0"]
        searches = {r.info.run_id: r for r in found if r.info.run_name == "cnn-search"}
        assert len(trials) == 1, [r.info.run_name for r in found]  # sent once, not twice
        parent = searches[trials[0].data.tags["mlflow.parentRunId"]]  # the first run's own
        assert parent.info.status == trials[0].info.status == "FINISHED"
        assert client.get_metric_history(trials[0].info.run_id, "val_accuracy")
        assert not spool.exists()
    finally:
        _stop(server)


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from pipeline.tracking.spool import SpooledWriter
from pipeline.tracking.store import TrackingStore

root, gap = Path(sys.argv[1]), sys.argv[2]
store = TrackingStore(f"sqlite:///{root}/mlflow.db", "spool", root / "artifacts")
die = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
if gap == "create":  # the run exists, its key's mapping is not in the spool yet
    append = SpooledWriter._append
    SpooledWriter._append = lambda self, record: die() if "run" in record else append(self,
                                                                                      record)
else:  # replaying an old spool: killed as the new one is put in place
    os.replace = die
    SpooledWriter._append = lambda self, record: die()
writer = SpooledWriter(store, root / "spool.jsonl")
key = writer.new_run("trial-0000", {})
writer.submit("log_metrics", run=key, step=0, metrics={"val_accuracy": 0.5}, timestamp_ms=1)
writer.submit("end_run", run=key, status="FINISHED")
writer.drain(30)
"""


def _killed_writer(tmp_path, gap):
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), gap],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == -signal.SIGKILL, done.stderr


def _replayed(tmp_path):
    from pipeline.tracking.spool import SpooledWriter
    from pipeline.tracking.store import TrackingStore

    store = TrackingStore(f"sqlite:///{tmp_path}/mlflow.db", "spool", tmp_path / "artifacts")
    writer = SpooledWriter(store, tmp_path / "spool.jsonl")
    assert writer.drain(30) == 0
    return store


def test_a_kill_between_creating_a_run_and_recording_it_does_not_create_it_twice(tmp_path):
    _killed_writer(tmp_path, "create")
    store = _replayed(tmp_path)
    found = store.find_runs("")
    assert [r.info.run_name for r in found] == ["trial-0000"]
    assert found[0].info.status == "FINISHED"
    history = store.client.get_metric_history(found[0].info.run_id, "val_accuracy")
    assert [m.value for m in history] == [0.5]


def test_a_kill_while_the_spool_is_rewritten_loses_no_write(tmp_path):
    (tmp_path / "spool.jsonl").write_text("".join(json.dumps(line) + "\n" for line in [
        {"seq": 1, "op": "create_run", "args": {"key": "local:a", "name": "trial-0000",
                                                 "tags": {}, "parent": None}},
        {"seq": 2, "op": "log_metrics", "args": {"run": "local:a", "step": 0,
                                                 "metrics": {"val_accuracy": 0.5},
                                                 "timestamp_ms": 1}}]))
    _killed_writer(tmp_path, "replay")  # dies while replaying that spool
    store = _replayed(tmp_path)
    found = store.find_runs("")
    assert [r.info.run_name for r in found] == ["trial-0000"]
    history = store.client.get_metric_history(found[0].info.run_id, "val_accuracy")
    assert [m.value for m in history] == [0.5]
