"""The MLflow store going away mid-search: training keeps its pace and nothing is lost (a real
`mlflow server` on 127.0.0.1, killed and restarted by the test); the spool replays the writes a
killed process left undone."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import free_port
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
    _wait_healthy(port, server)
    return server


def _wait_healthy(port, server, timeout=90):
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "no mlflow server"
            time.sleep(0.3)


def _stop(server):
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=20)


def test_a_store_outage_mid_search_blocks_no_epoch_and_loses_nothing(tmp_path, tiny_prepared,
                                                                      monkeypatch, caplog):
    from mlflow.tracking import MlflowClient

    root, port = tmp_path / "server", free_port()
    root.mkdir()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    servers = [_start_server(root, port)]
    outage = {}

    def kill_then_restart():
        deadline = time.monotonic() + 240  # until the second trial starts
        while len(list((tmp_path / "tuning").glob("cnn-*/trial_*"))) < 2 and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        _stop(servers[0])
        outage["start"] = time.time()
        time.sleep(OUTAGE_S)
        servers.append(_start_server(root, port))
        outage["end"] = time.time()

    chaos = threading.Thread(target=kill_then_restart, daemon=True)
    chaos.start()
    try:
        best = run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=8, max_epochs=4,
                          tracking_uri=f"http://127.0.0.1:{port}")
        chaos.join(timeout=120)
        assert "end" in outage, "the search ended before the store came back"
        _check_nothing_lost(MlflowClient(f"http://127.0.0.1:{port}"), best, tmp_path, outage)
    finally:
        for server in servers:
            if server.poll() is None:
                _stop(server)
    history = read_csv(tmp_path / "results" / "cnn" / "trial_history.csv")
    assert max(float(h["logging_seconds"]) for h in history) < LOGGING_BOUND_S
    assert "waits for the store" in caplog.text


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
