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
         "search_train_per_class": None, "final_epochs": 1, "per_family": {}},
        {"cnn": TINY_CNN_SPACE, "fc": TINY_FC_SPACE})
    first = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    for stage in ("prepare", "tune@cnn", "tune@fc", "evaluate", "report", "publish"):
        assert f"Running stage '{stage}'" in first
    for family in ("cnn", "fc"):
        assert (repo / "models" / family / "best.keras").is_file()
        assert (repo / "results" / family / "trials.csv").is_file()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["cifar-automl"])
    top = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert sorted(top["tags.role"]) == ["evaluation", "search", "search"]
    parents = top[top["tags.role"] == "search"]
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

    _check_plots(repo, env)
    _check_report(repo)
    _check_registry(repo, parents)

    second = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert "Running stage" not in second


def _check_plots(repo, env):
    """`dvc plots show` renders every plot declared in dvc.yaml from the stage outputs."""
    answer = json.loads(_run([sys.executable, "-m", "dvc", "plots", "show", "--json"], repo,
                             env))
    assert not answer.get("errors"), answer["errors"]
    shown = answer["data"]
    ids = set(shown)
    assert {"final_learning_curves", "accuracy_vs_parameters",
            "results/evaluation/cnn_predictions.csv",
            "results/evaluation/fc_predictions.csv"} <= ids, ids
    assert "reports/figures/learning_curves.png" in ids
    for plot_id in ("final_learning_curves", "results/evaluation/cnn_predictions.csv"):
        (render,) = shown[plot_id]
        assert render["type"] == "vega"
        assert render["content"]["data"]["values"], plot_id  # data points, not an empty chart
    confusion = shown["results/evaluation/cnn_predictions.csv"][0]["content"]["data"]["values"]
    assert len(confusion) == 100  # one point per test image
    scatter = shown["accuracy_vs_parameters"][0]["content"]["data"]["values"]
    assert len(scatter) == 6  # three trials per family
    html = _run([sys.executable, "-m", "dvc", "plots", "show", "-o", "plots_html"], repo, env)
    assert (repo / "plots_html" / "index.html").is_file(), html


def _check_report(repo):
    report = (repo / "reports" / "comparison.md").read_text()
    metrics = json.loads((repo / "metrics.json").read_text())
    assert f"{100 * metrics['cnn']['test_accuracy']:.2f}%" in report
    assert "McNemar" in report
    for line in report.splitlines():  # every figure the report shows exists and is a PNG
        if line.startswith("!["):
            target = repo / "reports" / line[line.index("(") + 1:line.rindex(")")]
            assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", target


def _check_registry(repo, parents):
    """The champion through a real MLflow server's REST API; the registered model predicts the
    classes the saved .keras model predicts."""
    import keras
    import mlflow

    import pipeline.augment  # noqa: F401  (the .keras model holds the crop layer)
    from tests.conftest import free_port, get_json, running_server

    registry = json.loads((repo / "results" / "registry.json").read_text())
    images = np.load(repo / "data" / "prepared" / "test_images.npy")[:100]
    port = free_port()
    command = [sys.executable, "-m", "pipeline", "ui", "--port", str(port)]
    with running_server(command, port, repo) as base:
        for family in ("cnn", "fc"):
            name = f"cifar10-{family}"
            found = get_json(f"{base}/api/2.0/mlflow/registered-models/alias"
                             f"?name={name}&alias=champion")["model_version"]
            assert found["version"] == registry["models"][family]["version"]
            assert found["run_id"] == registry["evaluation_run"]
            mlflow.set_tracking_uri(base)
            served = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(images)
            saved = keras.models.load_model(repo / "models" / family / "best.keras")
            expected = np.argmax(saved.predict(images, verbose=0), axis=1)
            assert np.array_equal(np.argmax(served, axis=1), expected)
        run = get_json(f"{base}/api/2.0/mlflow/runs/get?run_id={registry['evaluation_run']}")
        tags = {t["key"]: t["value"] for t in run["run"]["data"]["tags"]}
        for _, parent in parents.iterrows():
            assert tags[f"{parent['tags.family']}_search_run"] == parent["run_id"]
        metric_names = {m["key"] for m in run["run"]["data"]["metrics"]}
        assert {"cnn_test_accuracy", "comparison_mcnemar_p_value"} <= metric_names
        listed = get_json(f"{base}/api/2.0/mlflow/artifacts/list"
                          f"?run_id={registry['evaluation_run']}&path=report")
        assert "report/comparison.md" in {f["path"] for f in listed["files"]}
