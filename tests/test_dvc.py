"""A real `dvc repro` in a temporary git repository holding the project's pipeline."""

import os
import shutil
import subprocess
import sys

import yaml

from tests.conftest import REPO


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_repro_runs_once_then_skips_then_reruns_on_param_change(tmp_path, real_cifar10):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(REPO / "pipeline", repo / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", repo)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(source=str(real_cifar10), train_per_class=20, test_per_class=10,
                             preview_images=2, preview_samples=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    _run(["git", "init", "-q"], repo, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo, env)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo, env)

    first = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert "Running stage 'prepare'" in first
    meta = yaml.safe_load((repo / "data" / "prepared" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 200, "val": 5000, "test": 100}
    assert (repo / "reports" / "augmentation_preview.png").is_file()
    assert (repo / "dvc.lock").is_file()

    second = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert "Running stage" not in second
    assert "didn't change" in second or "up to date" in second

    params["prepare"]["seed"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = _run([sys.executable, "-m", "dvc", "status"], repo, env)
    assert "prepare" in status and "params.yaml" in status
    third = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert "Running stage 'prepare'" in third
    assert "Data and pipelines are up to date" in _run(
        [sys.executable, "-m", "dvc", "status"], repo, env)
