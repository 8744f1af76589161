"""A real `dvc repro` in a temporary git repository holding the project's pipeline."""

import csv
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
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@localhost")
    for ignore in IGNORE_FILES:  # what a clone of the project has
        (repo / ignore).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / ignore, repo / ignore)
    _run(["git", "init", "-q"], repo, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo, env)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo, env)
    _commit(repo, env, "the project")
    return repo, params, env


IGNORE_FILES = (".gitignore", "data/.gitignore", "mlruns/.gitignore", "reports/.gitignore")


def _commit(repo, env, message):
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-q", "-m", message], repo, env)


def _uncommitted(repo, env) -> set[str]:
    """What `git status` shows: paths a user would be asked to commit."""
    lines = _run(["git", "status", "--porcelain", "--untracked-files=all"], repo, env)
    return {line[3:] for line in lines.splitlines() if line.strip()}


def _assert_only_what_a_user_commits(repo, env, also=()):
    """After a run: dvc.lock, the metrics and DVC's own .gitignore entries; no checkpoints,
    scratch folders, stores or files that describe this machine."""
    left = {p for p in _uncommitted(repo, env)
            if p not in ("dvc.lock", "metrics.json", "timings.json", *also)
            and not p.endswith(".gitignore")}
    assert not left, left


def test_repro_runs_once_then_skips_then_reruns_on_param_change(tmp_path, real_cifar10):
    repo, params, env = make_repo(tmp_path, {
        "source": str(real_cifar10), "train_per_class": 20, "test_per_class": 10,
        "preview_images": 2, "preview_samples": 1})

    first = _run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)
    assert "Running stage 'prepare'" in first
    meta = yaml.safe_load((repo / "data" / "prepared" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 200, "val": 5000, "holdout": 5000, "test": 100}
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
    """prepare, then tune@cnn and tune@fc on ~2,000 real images, two seeds per family, in
    reproducible mode; MLflow holds every trial; a second search and training (a temporary
    DVC experiment) gives the same weights and test scores."""
    from tests.conftest import TINY_CNN_SPACE, TINY_FC_SPACE

    repo, _, env = make_repo(
        tmp_path,
        {"source": str(real_cifar10), "train_per_class": 200, "val_fraction": 0.02,
         "holdout_fraction": 0.01, "test_per_class": 10, "preview_images": 2,
         "preview_samples": 1},
        {"tuner": "random", "max_trials": 3, "max_epochs": 2, "budget_minutes": 5,
         "search_train_per_class": None, "final_epochs": 1, "final_seeds": 2,
         "deterministic": True, "per_family": {"cnn": {}, "fc": {}}},
        {"cnn": TINY_CNN_SPACE, "fc": TINY_FC_SPACE})
    first = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    for stage in ("prepare", "tune@cnn", "tune@fc", "replicate@cnn", "replicate@fc",
                  "evaluate", "report", "publish"):
        assert f"Running stage '{stage}'" in first
    for family in ("cnn", "fc"):
        assert (repo / "models" / family / "best.keras").is_file()
        with open(repo / "results" / family / "trials.csv") as handle:
            # reproducible mode: trials are charged by their FLOPs, never by a timing
            assert {row["cost_basis"] for row in csv.DictReader(handle)} == {"flops"}

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
            # the full configuration, fixed values too, not only the searched ones
            assert isinstance(child.get("params.warmup_fraction"), str)
        # MLflow's own columns, the best trial one click away, the data it read
        assert len(parent["tags.mlflow.source.git.commit"]) == 40
        assert parent["tags.mlflow.note.content"].startswith(f"{parent['tags.family']} search")
        assert parent["tags.best_trial_run"] in set(children["run_id"])
        inputs = client.get_run(parent["run_id"]).inputs.dataset_inputs
        assert sorted(i.dataset.name for i in inputs) == ["cifar10-train", "cifar10-val"]

    # the test-set verdict, through DVC's own metrics
    metrics = json.loads((repo / "metrics.json").read_text())
    for family in ("cnn", "fc"):
        low, high = metrics[family]["test_accuracy_ci95"].values()
        assert 0 <= low <= metrics[family]["test_accuracy"] <= high <= 1
    assert 0 <= metrics["comparison"]["mcnemar_p_value"] <= 1
    assert metrics["comparison"]["test_images"] == 100
    shown = _run([sys.executable, "-m", "dvc", "metrics", "show"], repo, env)
    assert "cnn.test_accuracy" in shown and "comparison.mcnemar_p_value" in shown
    per_class = json.loads((repo / "results" / "evaluation" / "cnn_per_class.json").read_text())
    assert np.sum(per_class["confusion_matrix"]) == 100

    _check_seeds(repo, metrics)
    _check_plots(repo, env)
    _check_report(repo)
    _check_registry(repo, parents)
    _check_serving(repo, env)

    second = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert "Running stage" not in second
    _assert_only_what_a_user_commits(repo, env)
    _commit(repo, env, "a pipeline run")
    _check_one_familys_budget_reruns_its_search_only(repo, env)
    _check_experiments(repo, env)


def _dvc(repo, env, *args):
    return _run([sys.executable, "-m", "dvc", *args], repo, env)


def _check_one_familys_budget_reruns_its_search_only(repo, env):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tune"]["per_family"]["fc"] = {"budget_minutes": 4}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    changed = json.loads(_dvc(repo, env, "status", "--json"))
    assert "tune@fc" in changed and "tune@cnn" not in changed, changed
    _run(["git", "checkout", "params.yaml"], repo, env)
    # more seeds: more replicates and a new verdict, never a new search
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tune"]["final_seeds"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    changed = json.loads(_dvc(repo, env, "status", "--json"))
    assert {"replicate@cnn", "replicate@fc"} <= set(changed), changed
    assert not {"tune@cnn", "tune@fc"} & set(changed), changed
    _run(["git", "checkout", "params.yaml"], repo, env)


def _check_seeds(repo, metrics):
    """Two trainings per family: the tune stage's and one replicate, each tested."""
    import csv

    with open(repo / "results" / "evaluation" / "seeds.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["family"], r["seed"]) for r in rows] == [("cnn", "1"), ("cnn", "2"),
                                                         ("fc", "1"), ("fc", "2")]
    for family in ("cnn", "fc"):
        seeds = metrics[family]["seeds"]
        accuracies = [float(r["test_accuracy"]) for r in rows if r["family"] == family]
        assert seeds["count"] == 2
        assert seeds["test_accuracy_mean"] == round(float(np.mean(accuracies)), 4)
        assert float(rows[0 if family == "cnn" else 2]["test_accuracy"]) == \
            metrics[family]["test_accuracy"]
    assert "seed_welch_p_value" in metrics["comparison"]
    report = (repo / "reports" / "comparison.md").read_text()
    assert "trained 2 (CNN) and 2 (fully connected) times" in report
    assert "![Seeds](figures/seeds.png)" in report


def _evaluation_runs(repo):
    import sqlite3

    with sqlite3.connect(repo / "mlruns" / "mlflow.db") as db:
        return db.execute("select count(*) from runs where name = 'evaluation'").fetchone()[0]


def _model_versions(repo) -> dict:
    import sqlite3

    with sqlite3.connect(repo / "mlruns" / "mlflow.db") as db:
        return dict(db.execute("select name, count(*) from model_versions group by name"))


def _check_experiments(repo, env):
    """`dvc exp run -S` and `dvc exp show`, as DVC users reach for them; a temporary
    experiment logs into the project's own MLflow store, not into a copy DVC deletes; an
    experiment that changes only an evaluate setting registers no new model version.
    Reproducible mode: the temporary experiment searches and trains both families again,
    to the same weights (no new version) and the same test scores."""
    versions = _model_versions(repo)
    assert versions == {"cifar10-cnn": 1, "cifar10-fc": 1}, versions
    assert json.loads((repo / "metrics.json").read_text())["cnn"]["flip_tta"] is True
    _dvc(repo, env, "exp", "run", "-S", "evaluate.flip_tta=false")
    shown = json.loads(_dvc(repo, env, "exp", "show", "--json"))
    found = [data["metrics"]["metrics.json"]["data"]["cnn"] for data in _revisions(shown)
             if data["params"]["params.yaml"]["data"]["evaluate"]["flip_tta"] is False]
    assert found and found[0]["flip_tta"] is False, shown
    assert found[0]["test_accuracy"] == found[0]["test_accuracy_single_view"]
    _assert_only_what_a_user_commits(repo, env, also=("params.yaml",))
    _run(["git", "checkout", "--", "."], repo, env)

    before = _evaluation_runs(repo)
    # a temporary copy has no tuning/ (not cached), so it searches and trains again: in
    # reproducible mode to the same weights, which are registered already
    out = _dvc(repo, env, "exp", "run", "--temp", "-S", "evaluate.seed=3")
    for stage in ("tune@cnn", "tune@fc", "publish"):
        assert f"Running stage '{stage}'" in out, out
    assert _evaluation_runs(repo) == before + 1  # in the project's store
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))
    assert _model_versions(repo) == versions  # the same weights: nothing registered again
    shown = json.loads(_dvc(repo, env, "exp", "show", "--json"))
    again, = [data["metrics"]["metrics.json"]["data"] for data in _revisions(shown)
              if data["params"]["params.yaml"]["data"]["evaluate"]["seed"] == 3]
    first = json.loads((repo / "metrics.json").read_text())
    for family in ("cnn", "fc"):  # the seed draws the bootstrap CI's resamples only
        for key in ("test_accuracy", "test_accuracy_single_view"):
            assert again[family][key] == first[family][key], (family, key)


def _revisions(shown):
    """Every revision's data (params, metrics) in `dvc exp show --json`, however nested."""
    if isinstance(shown, list):
        for item in shown:
            yield from _revisions(item)
    elif isinstance(shown, dict):
        data = shown.get("data")
        if isinstance(data, dict) and "params" in data and "metrics" in data:
            yield data
        for value in shown.values():
            if isinstance(value, (list, dict)) and value is not data:
                yield from _revisions(value)


def _check_serving(repo, env):
    """README's serving recipe: `mlflow models serve` of the champion answers uint8 images
    with the classes the saved model predicts."""
    import urllib.request

    from pipeline.evaluate import load_model
    from tests.conftest import free_port, running_server

    images = np.load(repo / "data" / "prepared" / "test_images.npy")[:5]
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
               "models:/cifar10-cnn@champion", "--env-manager", "local", "-h", "127.0.0.1",
               "-p", str(port)]
    serve_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlruns/mlflow.db"}
    with running_server(command, port, repo.parent, timeout=120, health="/ping",
                        env=serve_env) as base:
        request = urllib.request.Request(
            f"{base}/invocations", data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = np.array(json.loads(response.read())["predictions"])
    saved = load_model(repo / "models" / "cnn" / "best.keras")
    expected = np.argmax(saved.predict(images, verbose=0), axis=1)
    assert np.array_equal(np.argmax(predictions, axis=1), expected)


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
    out = repo.parent / "plots_html"
    html = _run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out)], repo, env)
    assert (out / "index.html").is_file(), html


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
    import mlflow

    from pipeline.evaluate import load_model
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
            saved = load_model(repo / "models" / family / "best.keras")
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
        _check_mlflow_conventions(base, registry, tags)


def _check_mlflow_conventions(base, registry, tags):
    """What MLflow 3's UI needs to show the runs as a model-training project: the experiment's
    kind, who ran what, models as LoggedModels linked to their test metric and data, and a
    description on each registered model; no version points at a path on this machine."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(base)
    experiment = client.get_experiment_by_name("cifar-automl")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.user"] and tags["mlflow.source.name"] == "cifar-automl publish"
    assert len(tags["mlflow.source.git.commit"]) == 40
    for family in ("cnn", "fc"):
        name = f"cifar10-{family}"
        assert "uint8" in client.get_registered_model(name).description
        version = client.get_model_version(name, registry["models"][family]["version"])
        assert version.source.startswith("models:/m-"), version.source
        model = client.get_logged_model(version.source.removeprefix("models:/"))
        assert model.name == f"{family}-model"
        assert model.source_run_id == registry["evaluation_run"]
        linked = {(m.key, m.dataset_name) for m in model.metrics}
        assert ("test_accuracy", "cifar10-test") in linked, linked
        assert len(version.tags["weights_digest"]) == 16
