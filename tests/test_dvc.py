"""A real `dvc repro` in a temporary git repository holding the project's pipeline."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import yaml

from tests.conftest import REPO


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def make_repo(tmp_path, prepare: dict, tune: dict | None = None, spaces: dict | None = None):
    """A git + DVC repository holding the project's pipeline and params with the given changes;
    returns (repo, params, env)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(REPO / "pipeline", repo / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", repo)
    for family, text in (spaces or {}).items():
        (repo / "search_spaces").mkdir(exist_ok=True)
        (repo / "search_spaces" / f"{family}.yaml").write_text(text)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(prepare)
    params["tune"].update(tune or {})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    env.pop("MLFLOW_TRACKING_URI", None)
    _run(["git", "init", "-q"], repo, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo, env)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo, env)
    return repo, params, env


def test_repro_runs_once_then_skips_then_reruns_on_param_change(tmp_path, real_cifar10):
    repo, params, env = make_repo(tmp_path, {
        "source": str(real_cifar10), "train_per_class": 20, "test_per_class": 10,
        "preview_images": 2, "preview_samples": 1})

    first = _run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)
    assert "Running stage 'prepare'" in first
    meta = yaml.safe_load((repo / "data" / "prepared" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 200, "val": 5000, "test": 100}
    assert (repo / "reports" / "augmentation_preview.png").is_file()
    assert (repo / "dvc.lock").is_file()

    second = _run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)
    assert "Running stage" not in second
    assert "didn't change" in second or "up to date" in second

    params["prepare"]["seed"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = _run([sys.executable, "-m", "dvc", "status"], repo, env)
    assert "prepare" in status and "params.yaml" in status
    third = _run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)
    assert "Running stage 'prepare'" in third
    assert "Data and pipelines are up to date" in _run(
        [sys.executable, "-m", "dvc", "status", "prepare"], repo, env)


def test_repro_whole_pipeline_records_both_searches(tmp_path, real_cifar10):
    """prepare, then tune@cnn and tune@fc on ~2,000 real images; MLflow holds every trial."""
    from tests.conftest import TINY_CNN_SPACE, TINY_FC_SPACE

    repo, _, env = make_repo(
        tmp_path,
        {"source": str(real_cifar10), "train_per_class": 200, "val_fraction": 0.02,
         "test_per_class": 10, "preview_images": 2, "preview_samples": 1},
        {"tuner": "random", "max_trials": 3, "max_epochs": 2, "budget_minutes": 5,
         "search_train_per_class": None, "final_epochs": 1, "tracking_uri": None,
         "per_family": {}},
        {"cnn": TINY_CNN_SPACE, "fc": TINY_FC_SPACE})
    first = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    for stage in ("prepare", "tune@cnn", "tune@fc", "evaluate"):
        assert f"Running stage '{stage}'" in first
    for family in ("cnn", "fc"):
        assert (repo / "models" / family / "best.keras").is_file()
        assert (repo / "results" / family / "trials.csv").is_file()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["cifar-automl"])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert sorted(parents["tags.family"]) == ["cnn", "fc"]
    client = mlflow.tracking.MlflowClient()
    for _, parent in parents.iterrows():
        children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
        assert list(children["status"]) == ["FINISHED"] * 3
        space = yaml.safe_load((repo / "search_spaces" /
                                f"{parent['tags.family']}.yaml").read_text())
        for _, child in children.iterrows():
            for name, spec in space["hyperparameters"].items():
                if "when" in spec:  # conditional: present exactly when its parent allows it
                    (parent_name, allowed), = spec["when"].items()
                    active = child[f"params.{parent_name}"] in map(str, allowed)
                    assert isinstance(child.get(f"params.{name}"), str) == active, name
                else:
                    assert isinstance(child.get(f"params.{name}"), str), name
            epochs = int(child["metrics.epochs_run"])
            history = client.get_metric_history(child["run_id"], "val_accuracy")
            assert len(history) == epochs >= 1

    # the test-set verdict, through DVC's own metrics
    metrics = json.loads((repo / "metrics.json").read_text())
    for family in ("cnn", "fc"):
        low, high = metrics[family]["test_accuracy_ci95"]
        assert 0 <= low <= metrics[family]["test_accuracy"] <= high <= 1
    assert 0 <= metrics["comparison"]["mcnemar_p_value"] <= 1
    assert metrics["comparison"]["test_images"] == 100
    shown = _run([sys.executable, "-m", "dvc", "metrics", "show"], repo, env)
    assert "cnn.test_accuracy" in shown and "comparison.mcnemar_p_value" in shown
    per_class = json.loads((repo / "results" / "evaluation" / "cnn_per_class.json").read_text())
    assert np.sum(per_class["confusion_matrix"]) == 100

    second = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert "Running stage" not in second
