"""The shipped schedules: each one's command really runs the retune job (which, while the test
holds the lock, exits at once with the lock code), the systemd units verify, and the GitHub
workflow has its triggers and steps."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.lock import LockHeld, RunLock
from tests.conftest import REPO, write_params

SHIPPED_PATH = "/srv/cifar-automl"
CRON_FIELD = re.compile(r"^(\*|\d+)([-,/]\d+)*$")


@pytest.fixture
def project(tmp_path, tiny_cifar10) -> Path:
    """A project folder as the schedules expect it: params.yaml and a .venv with the tool."""
    root = tmp_path / "project"
    root.mkdir()
    write_params(root / "params.yaml", prepare={"source": str(tiny_cifar10)})
    (root / ".venv").symlink_to(Path(sys.prefix))
    if not (root / ".venv" / "bin" / "cifar-automl").exists():
        pytest.skip("the cifar-automl command is not installed in this environment")
    return root


def _held_lock(project: Path) -> RunLock:
    return RunLock(project / "retune" / "retune.lock")


def test_cron_line_runs_the_retune_command(project):
    lines = [line for line in (REPO / "schedules" / "crontab").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    variables = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    (job,) = [line for line in lines if not re.match(r"^[A-Z_]+=", line)]
    fields = job.split(None, 5)
    assert all(CRON_FIELD.match(field) for field in fields[:5]), fields[:5]
    command = fields[5].replace(SHIPPED_PATH, str(project))
    env = {**os.environ, **{k: v.replace(SHIPPED_PATH, str(project))
                            for k, v in variables.items()}}
    with _held_lock(project):
        done = subprocess.run(["/bin/sh", "-c", command], env=env, timeout=120)
    assert done.returncode == LockHeld.exit_code
    log = (project / "logs" / "retune.log").read_text()
    assert "another retune is running" in log, log


def test_systemd_units_verify_and_the_service_command_runs(project, tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    for name in ("cifar-automl-retune.service", "cifar-automl-retune.timer"):
        text = (REPO / "schedules" / name).read_text().replace(SHIPPED_PATH, str(project))
        (units / name).write_text(text)
    service = (units / "cifar-automl-retune.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", service, re.M))
    assert str(LockHeld.exit_code) in settings["SuccessExitStatus"].split()
    assert "OnCalendar" in (units / "cifar-automl-retune.timer").read_text()
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(units / "cifar-automl-retune.service"),
             str(units / "cifar-automl-retune.timer")], capture_output=True, text=True,
            timeout=60)
        assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    key, value = settings["Environment"].split("=", 1)
    with _held_lock(project):
        done = subprocess.run(settings["ExecStart"].split(), cwd=settings["WorkingDirectory"],
                              env={**os.environ, key: value}, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == LockHeld.exit_code, done.stderr
    assert "another retune is running" in done.stderr


def test_github_workflow_is_scheduled_dispatchable_and_prepares_data(tmp_path):
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "retune.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    (cron,) = [entry["cron"] for entry in triggers["schedule"]]
    assert all(CRON_FIELD.match(field) for field in cron.split()) and len(cron.split()) == 5
    assert "workflow_dispatch" in triggers
    job = workflow["jobs"]["retune"]
    assert "MLFLOW_TRACKING_URI" in job["env"]
    steps = job["steps"]
    assert any(step.get("uses", "").startswith("actions/cache") for step in steps)
    runs = [step.get("run", "") for step in steps]
    assert "cifar-automl retune" in runs
    (install,) = [run for run in runs if "pip install" in run]
    assert "-c constraints.txt" in install  # the nightly job runs the tested versions
    assert not [run for run in runs if run.startswith("sed ")]
    # the step that points prepare at the Keras download sets it through DVC, which prepares
    # the data so that retune's own `dvc repro prepare` finds nothing to do
    (step,) = [run for run in runs if run.startswith("dvc exp run")]
    assert step == "dvc exp run -S prepare.source=download prepare"


def test_the_workflows_prepare_step_sets_the_source_and_retune_finds_it_done(tmp_path,
                                                                              real_cifar10):
    """The workflow's step, with the real CIFAR-10 folder for `download` (no network here), in
    a git + DVC copy of the project."""
    from tests.test_dvc import _run, make_repo

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "retune.yml").read_text())
    (step,) = [s["run"] for s in workflow["jobs"]["retune"]["steps"]
               if s.get("run", "").startswith("dvc exp run")]
    repo, original, env = make_repo(tmp_path, {"train_per_class": 20, "test_per_class": 10})
    command = [sys.executable, "-m", *step.replace("download", str(real_cifar10)).split()]
    _run(command, repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["prepare"]["source"] == str(real_cifar10)
    assert {k: v for k, v in params.items() if k != "prepare"} == \
        {k: v for k, v in original.items() if k != "prepare"}
    assert (repo / "data" / "prepared" / "meta.json").is_file()
    again = _run([sys.executable, "-m", "dvc", "repro", "prepare"], repo, env)  # as retune does
    assert "Running stage" not in again
