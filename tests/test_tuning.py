"""Searches on the real CIFAR-10 (tiny subsets): MLflow records, failures, budget, resume."""

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from pipeline.config import load_params
from pipeline.errors import UserError
from pipeline.tracking.store import TrackingStore
from tests.conftest import REAL_CIFAR10, REPO, TINY_CNN_SPACE, write_params

FAILING_SPACE = """
family: cnn
hyperparameters:
  stages: {type: fixed, value: 1}
  convs_per_stage: {type: fixed, value: 1}
  base_filters: {type: fixed, value: 8}
  batch_norm: {type: fixed, value: false}
  logit_scale: {type: fixed, value: 1.0}
  optimizer: {type: fixed, value: sgd}
  schedule: {type: fixed, value: constant}
  kernel_size: {type: choice, values: [3, 0]}                # 0: the build raises
  learning_rate: {type: choice, values: [0.01, 1.0e+12]}     # 1e12: the loss turns NaN
  batch_size: {type: fixed, value: 64}
"""


def setup_search(tmp_path, space=TINY_CNN_SPACE, family="cnn",
                 tracking_uri="sqlite:///{tmp}/mlruns/mlflow.db", system_metrics_s=0, **tune):
    tune = {"tuner": "random", "max_trials": 3, "max_epochs": 1, "final_epochs": 1, **tune}
    params_file = write_params(tmp_path / "params.yaml", prepare={"source": str(REAL_CIFAR10)},
                               tune=tune, tracking={"uri": tracking_uri.format(tmp=tmp_path),
                                                    "system_metrics_s": system_metrics_s})
    space_file = tmp_path / f"{family}.yaml"
    space_file.write_text(space)
    return params_file, space_file


def run_search(tmp_path, prepared, monkeypatch, family="cnn", space=TINY_CNN_SPACE, **tune):
    from pipeline.tune import TuneFolders, run_tune

    monkeypatch.chdir(tmp_path)  # mlruns/artifacts is relative to the working folder
    params_file, space_file = setup_search(tmp_path, space, family, **tune)
    folders = TuneFolders(tmp_path / "tuning", tmp_path / "models", tmp_path / "results")
    return run_tune(load_params(params_file), family, space_file, prepared, folders)


def runs(tmp_path):
    tracker = TrackingStore(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "cifar-automl")
    runs = tracker.find_runs("", max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return tracker, parents, children


def read_csv(path):
    import csv

    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_nan_and_raising_trials_fail_and_the_search_goes_on(tmp_path, tiny_prepared,
                                                            monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.tune")
    best = run_search(tmp_path, tiny_prepared, monkeypatch, space=FAILING_SPACE, max_trials=4,
                      max_consecutive_failures=10)
    steps = [line for line in caplog.messages if line.startswith("[")]
    assert [line[:10] for line in steps] == [f"[{i}/6] cnn:" for i in range(1, 7)]
    rows = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    assert len(rows) == 4
    statuses = sorted(row["status"] for row in rows)
    assert statuses == ["COMPLETED", "FAILED", "FAILED", "FAILED"]
    errors = " | ".join(row["error"] for row in rows)
    assert "NaN" in errors and "kernel_size" in errors
    assert best["hyperparameters"]["kernel_size"] == 3
    assert best["hyperparameters"]["learning_rate"] == 0.01
    assert (tmp_path / "models" / "cnn" / "best.keras").is_file()

    _, parents, children = runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED", "FAILED", "FINISHED"]
    nan_run = [c for c in children if c.data.params.get("learning_rate") == "1000000000000.0"
               and c.data.params.get("kernel_size") == "3"]
    assert nan_run and nan_run[0].info.status == "FAILED"
    assert "NaN" in nan_run[0].data.tags["error"]


def test_consecutive_failures_stop_the_search_with_a_clear_error(tmp_path, tiny_prepared,
                                                                 monkeypatch):
    space = FAILING_SPACE.replace("values: [3, 0]", "values: [0, 0]")
    space = space.replace("{type: choice, values: [0, 0]}", "{type: fixed, value: 0}")
    with pytest.raises(UserError, match="cnn search stopped: Number of consecutive failures"):
        run_search(tmp_path, tiny_prepared, monkeypatch, space=space, max_trials=5,
                   max_consecutive_failures=2)
    _, parents, children = runs(tmp_path)
    assert parents[0].info.status == "FAILED"
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]
    assert not (tmp_path / "models" / "cnn" / "best.keras").exists()


def test_all_trials_failed_is_an_error_not_a_success(tmp_path, tiny_prepared, monkeypatch):
    space = FAILING_SPACE.replace("{type: choice, values: [3, 0]}", "{type: fixed, value: 0}")
    with pytest.raises(UserError, match="all 2 trials failed; first error: .*kernel_size"):
        run_search(tmp_path, tiny_prepared, monkeypatch, space=space, max_trials=2,
                   max_consecutive_failures=3)


def test_no_trial_starts_after_the_budget(tmp_path, tiny_prepared, monkeypatch):
    budget_s = 20.0  # the first trial (one epoch) finishes inside it; the last one is cut
    run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=50, max_epochs=1,
               budget_minutes=budget_s / 60)
    _, parents, children = runs(tmp_path)
    search_start = parents[0].info.start_time / 1000
    assert 1 <= len(children) < 50
    for child in children:
        assert child.info.start_time / 1000 <= search_start + budget_s + 1.0
        assert child.info.status in ("FINISHED", "FAILED")
    rows = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    assert len(rows) == len(children)
    # a trial the deadline cut after another was scored is not scored against it
    for row in rows[1:]:
        if row["stopped_by_budget"] == "True":
            assert row["status"] == "FAILED" and "cut short" in row["error"]


def test_a_trial_predicted_to_overrun_the_budget_does_not_start(tmp_path, tiny_prepared,
                                                                 monkeypatch, caplog):
    # each finished trial reports its seconds to the oracle; here they are read as a thousand
    # times longer, so the second trial is predicted to overrun a 5-minute budget: the search
    # ends after the first, with nothing cut short and no minute spent on a lost trial
    from pipeline.search.oracles import SearchControlMixin

    record = SearchControlMixin.record_trial_seconds
    monkeypatch.setattr(SearchControlMixin, "record_trial_seconds",
                        lambda self, seconds, epochs: record(self, 1000 * seconds, epochs))
    with caplog.at_level(logging.INFO, logger="pipeline"):
        best = run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=10, max_epochs=1,
                          budget_minutes=5, final_budget_minutes=2)
    rows = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    assert [(r["status"], r["stopped_by_budget"]) for r in rows] == [("COMPLETED", "False")]
    assert "no new trial will start" in caplog.text
    # the minutes the search left go to the final training (its cap is 2 + what was left)
    left = 5 - best["search_seconds"] / 60
    assert best["final"]["minutes_from_search"] == pytest.approx(left, abs=0.02)
    assert best["final"]["budget_minutes"] == pytest.approx(2 + left, abs=0.02)
    assert "the search left" in caplog.text


def test_every_trial_and_the_final_model_train_in_the_chosen_precision(tmp_path, tiny_prepared,
                                                                        monkeypatch):
    # KerasTuner clears the Keras session before each trial, which resets the global dtype
    # policy to float32: the hypermodel must set the search's policy again at every build
    import keras

    from pipeline.search.hypermodel import FamilyHyperModel

    policies = []
    build = FamilyHyperModel.build

    def recording_build(self, hp):
        model = build(self, hp)
        policies.append(model.dtype_policy.name)
        return model

    monkeypatch.setattr(FamilyHyperModel, "build", recording_build)
    try:
        best = run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=2,
                          precision="mixed_bfloat16")
        saved = keras.saving.load_model(tmp_path / "models" / "cnn" / "best.keras",
                                        compile=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the next tests' default
    assert best["precision"] == "mixed_bfloat16"
    assert len(policies) >= 3  # two trials and the final training
    assert set(policies) == {"mixed_bfloat16"}
    assert saved.dtype_policy.name == "mixed_bfloat16"


def test_the_only_trial_the_budget_cuts_short_ends_cleanly_and_keeps_its_score(
        tmp_path, tiny_prepared, monkeypatch):
    # one trial of up to 40 epochs cannot finish within 4 seconds: the deadline ends it; with
    # no whole trial to compare it with, it keeps its score (the search needs one)
    run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=50, max_epochs=40,
               patience=50, budget_minutes=4 / 60)
    rows = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    assert len(rows) == 1
    assert rows[0]["status"] == "COMPLETED" and rows[0]["stopped_by_budget"] == "True"
    assert 1 <= int(rows[0]["epochs_run"]) < 40
    _, _, children = runs(tmp_path)
    assert children[0].info.status == "FINISHED"
    assert children[0].data.tags["stopped_by_budget"] == "True"


def test_child_runs_hold_every_hyperparameter_and_per_epoch_metrics(tmp_path, tiny_prepared,
                                                                     monkeypatch):
    run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=2, max_epochs=2, patience=5)
    tracker, parents, children = runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.tags["family"] == "cnn" and parent.data.tags["tuner"] == "random"
    assert "final_val_accuracy" in parent.data.metrics
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"stages", "base_filters", "learning_rate", "optimizer"} <= set(child.data.params)
        history = tracker.client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [0, 1]
        for name in ("loss", "accuracy", "val_loss", "learning_rate", "epoch_seconds"):
            assert len(tracker.client.get_metric_history(child.info.run_id, name)) == 2
        assert child.data.metrics["trainable_params"] > 0


def _cli_env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _trial_states(db) -> list[tuple[str, str]]:
    """(status, trial_id) of the trial runs, read-only: the search process owns the store (a
    second MLflow client could race it while it creates its tables)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select r.status, t.value from runs r join tags t "
                               "on t.run_uuid = r.run_uuid where t.key = 'trial_id'").fetchall()
    except sqlite3.Error:  # tables not created yet, or busy
        return []


HYPERBAND = {"tuner": "hyperband", "max_trials": 4, "max_epochs": 3, "hyperband_factor": 3,
             "patience": 10}


def test_hyperband_rungs_restart_with_a_schedule_over_their_own_epochs(tmp_path, tiny_prepared,
                                                                       monkeypatch):
    run_search(tmp_path, tiny_prepared, monkeypatch, **{**HYPERBAND, "max_trials": 7})
    rows = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    history = read_csv(tmp_path / "results" / "cnn" / "trial_history.csv")
    assert [r["status"] for r in rows] == ["COMPLETED"] * 7
    # First the full-fidelity bracket: the defaults and one more configuration at 3 epochs;
    # then successive halving: 3 configurations for 1 epoch, the best goes on to 3 epochs;
    # then the full-fidelity bracket again (the trial cap and the budget end a search, not
    # KerasTuner's single iteration)
    assert [r["hp.tuner/epochs"] for r in rows] == ["3", "3", "1", "1", "1", "3", "3"]
    assert rows[0]["hp.learning_rate"] == "0.01"  # the space's default configuration
    promoted = rows[5]
    assert promoted["hp.tuner/trial_id"] in {r["trial_id"] for r in rows[2:5]}
    steps_per_epoch = -(-200 // 64)  # 200 training images, batches of 64
    # equal compute: the defaults are this space's cheapest configuration, so they train on
    # every image of their rung; a costlier configuration on its share (default FLOPs over
    # its own), and its schedule still ends with its run
    assert float(rows[0]["compute_share"]) == 1.0
    assert any(float(r["compute_share"]) < 0.9 for r in rows)
    for row in rows:
        epochs = int(row["hp.tuner/epochs"])
        share = float(row["compute_share"])
        assert 0 < share <= 1 and row["ended_by"] == "steps"
        assert float(row["schedule_progress"]) == 1.0
        assert int(row["steps"]) == max(1, round(epochs * steps_per_epoch * share))
        assert int(row["epochs_run"]) == epochs or share < 1
        rates = [float(h["learning_rate"]) for h in history if h["trial_id"] == row["trial_id"]]
        assert len(rates) == int(row["epochs_run"])
        assert epochs == 1 or len(rates) == 1 or rates[-1] < 0.3 * max(rates)
    # the promoted configuration restarted from epoch 1 (a continuation would start at 2)
    assert [int(h["epoch"]) for h in history if h["trial_id"] == promoted["trial_id"]] == \
        list(range(1, int(promoted["epochs_run"]) + 1))


def test_a_search_times_each_configuration_and_budgets_its_trial_by_that(tmp_path,
                                                                          tiny_prepared,
                                                                          monkeypatch):
    """Batches of 16 give 13 steps an epoch, enough to time: every trial records its measured
    images a second, the defaults (the first trial, the reference) train their whole rung, and
    each trial's steps are its share of the rung's (at least the timing's); the trial's MLflow
    run shows both."""
    space = TINY_CNN_SPACE.replace("value: 64", "value: 16")
    run_search(tmp_path, tiny_prepared, monkeypatch, space=space, max_trials=3)
    rows = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3
    assert {r["cost_basis"] for r in rows} == {"measured"}
    assert float(rows[0]["compute_share"]) == 1.0
    for row in rows:
        share = float(row["compute_share"])
        assert float(row["images_per_second"]) > 0 and 0 < share <= 1
        # never fewer steps than the timing took (its 2 + 8)
        assert int(row["steps"]) == max(10, round(13 * share))
    _, _, children = runs(tmp_path)
    trial_runs = [c for c in children if "trial_id" in c.data.tags]
    assert len(trial_runs) == 3
    assert all(c.data.metrics["images_per_second"] > 0 for c in trial_runs)


def test_sigkill_mid_trial_then_resume(tmp_path, tiny_prepared, monkeypatch):
    """Hyperband (the default tuner) killed mid-trial and rerun: no completed trial redone,
    and every trial starts from the same weights as in an uninterrupted search."""
    params_file, space_file = setup_search(tmp_path, **HYPERBAND)
    command = [sys.executable, "-m", "pipeline", "tune", "--family", "cnn", "--params",
               str(params_file), "--space", str(space_file), "--data", str(tiny_prepared),
               "--tuning-dir", "tuning", "--models", "models", "--results", "results"]
    process = subprocess.Popen(command, cwd=tmp_path, env=_cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_trial = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.3)
            states = _trial_states(tmp_path / "mlruns" / "mlflow.db")
            running = [trial for status, trial in states if status == "RUNNING"]
            if "FINISHED" in {status for status, _ in states} and running:
                killed_trial = running[0]
                process.send_signal(signal.SIGKILL)
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert killed_trial is not None, "never caught the search mid-trial"
    _, _, before = runs(tmp_path)
    finished_before = {c.data.tags["trial_id"] for c in before if c.info.status == "FINISHED"}

    result = subprocess.run(command, cwd=tmp_path, env=_cli_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    _, parents, children = runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    by_status = {}
    for child in children:
        by_status.setdefault(child.info.status, []).append(child.data.tags["trial_id"])
    assert sorted(by_status["FINISHED"]) == sorted(set(by_status["FINISHED"]))  # no duplicates
    assert len(by_status["FINISHED"]) == 4
    assert by_status.get("KILLED") == [killed_trial]  # the dangling run was closed
    for trial_id in finished_before:  # completed trials were not redone
        assert sum(c.data.tags["trial_id"] == trial_id for c in children) == 1
    rows = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    assert sorted(r["trial_id"] for r in rows) == sorted(by_status["FINISHED"])

    uninterrupted = tmp_path / "uninterrupted"
    uninterrupted.mkdir()
    run_search(uninterrupted, tiny_prepared, monkeypatch, **HYPERBAND)
    reference = read_csv(uninterrupted / "results" / "cnn" / "trials.csv")
    hyperparameters = lambda row: {k: v for k, v in row.items() if k.startswith("hp.")}  # noqa
    assert [r["trial_id"] for r in rows] == [r["trial_id"] for r in reference]
    for resumed, straight in zip(rows, reference, strict=True):
        assert hyperparameters(resumed) == hyperparameters(straight)
        assert resumed["initial_weights"] == straight["initial_weights"] != ""


def test_tiny_search_on_the_jax_backend_data_parallel(tmp_path, tiny_prepared):
    """JAX, with the host CPU split into two devices and data parallelism on: every batch is
    sharded over both, through keras.distribution.DataParallel."""
    pytest.importorskip("jax")
    params_file, space_file = setup_search(tmp_path, max_trials=2, max_epochs=1,
                                           data_parallel="on")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "tune", "--family", "cnn", "--params",
         str(params_file), "--space", str(space_file), "--data", str(tiny_prepared),
         "--tuning-dir", "tuning", "--models", "models", "--results", "results"],
        cwd=tmp_path, env={**_cli_env(), "KERAS_BACKEND": "jax",
                           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data parallel over 2 devices (jax): cpu:0, cpu:1" in result.stderr
    rows = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    _, parents, children = runs(tmp_path)
    assert parents[0].data.tags["keras_backend"] == "jax"
    assert parents[0].data.tags["data_parallel"] == "True"
    assert len(children) == 2


def test_config_of_tune_section_is_validated(tmp_path):
    params = write_params(tmp_path / "params.yaml", prepare={"source": str(tmp_path)},
                          tune={"tuner": "grid"})
    with pytest.raises(UserError, match="tune.tuner = 'grid'"):
        load_params(params)
    params.write_text(yaml.safe_dump({"prepare": {"source": str(tmp_path)},
                                      "tune": {"budget_minutes": -1}}))
    with pytest.raises(UserError, match="tune.budget_minutes = -1"):
        load_params(params)


def test_logging_failures_are_retried_or_skipped_and_never_stop_the_search(
        tmp_path, tiny_prepared, monkeypatch, caplog):
    from mlflow.exceptions import RestException
    from mlflow.tracking import MlflowClient

    real_log_batch = MlflowClient.log_batch
    calls = {"n": 0}

    def flaky_log_batch(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        calls["n"] += 1
        if metrics and any(m.key == "val_loss" and m.step == 0 for m in metrics):
            # a value the store refuses for good: skipped, the rest goes on
            raise RestException({"error_code": "INVALID_PARAMETER_VALUE",
                                 "message": "refused (simulated)"})
        if calls["n"] % 2 == 0:
            raise ConnectionError("store busy (simulated)")  # goes through when retried
        return real_log_batch(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky_log_batch)
    monkeypatch.setattr("pipeline.tracking.store.time.sleep", lambda s: None)
    best = run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=2, max_epochs=2)
    assert best["search_score"] > 0
    assert "log_metrics skipped" in caplog.text and "refused (simulated)" in caplog.text
    tracker, _, children = runs(tmp_path)
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert all("learning_rate" in c.data.params for c in children)  # params went through
    for child in children:  # epoch 0 was refused, epoch 1 arrived
        steps = [m.step for m in tracker.client.get_metric_history(child.info.run_id,
                                                                    "val_accuracy")]
        assert steps == [1]


def test_a_tracking_uri_mlflow_refuses_turns_tracking_off(tmp_path, caplog):
    """Not an outage but a store that can never work (a scheme MLflow does not know): one
    warning, and the search runs untracked (nothing spooled for a store that cannot come)."""
    from pipeline.config import TrackingParams
    from pipeline.tracking.search_runs import SearchRuns

    spool = tmp_path / "spool.jsonl"
    runs = SearchRuns.open(TrackingParams(uri="nosuchscheme://127.0.0.1/store"), spool)
    assert runs.store is None and runs.start("key", "cnn-search", {}, {}) is None
    assert "tracking is off for this run" in caplog.text
    assert "nosuchscheme://127.0.0.1/store" in caplog.text
    assert not spool.exists()


def test_tensorboard_logs_every_trial_with_kerastuners_hparams(tmp_path, tiny_prepared,
                                                               monkeypatch):
    params_file, _ = setup_search(tmp_path, max_trials=2, max_epochs=1)
    raw = yaml.safe_load(params_file.read_text())
    raw["tracking"]["tensorboard"] = True
    params_file.write_text(yaml.safe_dump(raw))
    from pipeline.tune import TuneFolders, run_tune

    monkeypatch.chdir(tmp_path)
    run_tune(load_params(params_file), "cnn", tmp_path / "cnn.yaml", tiny_prepared,
             TuneFolders(tmp_path / "tuning", tmp_path / "models", tmp_path / "results"))
    logs, = (tmp_path / "tuning").glob("cnn-*/tensorboard")
    trials = sorted(p.name for p in logs.iterdir())
    rows = read_csv(tmp_path / "results" / "cnn" / "trials.csv")
    assert trials == sorted(row["trial_id"] for row in rows) and len(trials) == 2, trials
    for trial in trials:
        events = list((logs / trial / "execution0").rglob("events.out.tfevents.*"))
        assert events, trial
        # KerasTuner's HParams summary: the trial's configuration, readable in TensorBoard
        assert any(b"hparams" in e.read_bytes() for e in events), trial


def test_tracking_off_runs_without_mlflow_and_publish_records_nothing(tmp_path, tiny_prepared,
                                                                       monkeypatch):
    from pipeline.publish import run_publish

    best = run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=1, max_epochs=1,
                      tracking_uri="off")
    assert best["search_score"] > 0 and best["mlflow_parent_run"] is None
    assert not (tmp_path / "mlruns").exists()  # no store was created
    params = load_params(tmp_path / "params.yaml")
    (tmp_path / "metrics.json").write_text('{"dataset": "cifar10"}')
    out = tmp_path / "results" / "registry.json"
    result = run_publish(params, tmp_path / "models", tmp_path / "results",
                         tmp_path / "metrics.json", tmp_path / "reports", out)
    assert result["models"] == {} and json.loads(out.read_text())["tracking_uri"] == "off"


def test_system_metrics_are_sampled_onto_the_search_run(tmp_path, tiny_prepared, monkeypatch):
    best = run_search(tmp_path, tiny_prepared, monkeypatch, max_trials=2, max_epochs=2,
                      system_metrics_s=1)
    tracker, parents, _ = runs(tmp_path)
    cpu = tracker.client.get_metric_history(best["mlflow_parent_run"],
                                            "system/cpu_utilization_percentage")
    assert len(cpu) >= 2 and all(0 <= m.value <= 100 for m in cpu)
