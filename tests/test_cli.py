"""The command line: instant --help without TensorFlow, exit codes, one-line errors."""

import json
import subprocess
import sys
import time

from pipeline import cli
from tests.conftest import REPO, write_params


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def run_python(code: str, cwd, timeout: int = 120) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter: the modules it ends with are the ones it imported."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def test_help_does_not_import_tensorflow():
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from pipeline.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_tuner', 'mlflow', 'numpy', 'pydantic')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy, 'SECONDS', time.perf_counter() - t)\n"
    )
    result = run_python(code, REPO, timeout=60)
    assert "prepare" in result.stdout
    assert "HEAVY [] SECONDS" in result.stdout, result.stdout + result.stderr


def test_help_answers_quickly():
    started = time.perf_counter()
    result = run_cli("prepare", "--help")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0 and "--params" in result.stdout
    # generous bound for a loaded CI machine; TensorFlow alone takes 4-5 s to import
    assert elapsed < 3, elapsed


def test_bad_params_exit_2_with_one_line(tmp_path):
    params = write_params(tmp_path / "params.yaml", prepare={"val_fraction": 2.0})
    result = run_cli("prepare", "--params", str(params), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "prepare.val_fraction = 2.0" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_bad_params_file_is_refused_before_tensorflow_loads(tmp_path):
    """Every command that trains or loads models reads its params file first: a mistake there
    costs a fraction of a second, not the 5-10 s of importing TensorFlow."""
    params = write_params(tmp_path / "params.yaml", tune={"max_trials": -1})
    code = (
        "import sys\n"
        "from pipeline.cli import KERAS_COMMANDS, main\n"
        "for command in sorted(KERAS_COMMANDS):\n"
        "    extra = ['--family', 'cnn'] if command in ('tune', 'replicate') else []\n"
        f"    rc = main([command, '--params', {str(params)!r}, *extra])\n"
        "    print('RC', command, rc, 'tensorflow' in sys.modules)\n"
    )
    result = run_python(code, tmp_path)
    answers = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("RC")]
    assert [command for command, *_ in answers] == sorted(cli.KERAS_COMMANDS), result.stderr
    assert all(rc == "2" and loaded == "False" for _, rc, loaded in answers), answers
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(answers), result.stderr
    assert all("tune.max_trials = -1" in line for line in errors), result.stderr


def test_stages_with_nothing_to_train_write_their_status_without_tensorflow(tmp_path):
    """On the defaults (one seed, equal_time off) replicate and equal-time only write their
    status: every `dvc repro` runs them, so they must not pay TensorFlow's import."""
    params = write_params(tmp_path / "params.yaml", tune={"final_seeds": 1},
                          equal_time={"run": False})
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"p = {str(params)!r}\n"
        "codes = [main(['replicate', '--params', p, '--family', family]) for family in "
        "('cnn', 'fc')]\n"
        "codes.append(main(['equal-time', '--params', p]))\n"
        "print('RC', *codes, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = run_python(code, tmp_path)
    answer, = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("RC")]
    assert answer == ["0", "0", "0", "False", "False"], result.stderr
    for family in ("cnn", "fc"):
        manifest = json.loads((tmp_path / "models" / family / "seeds" / "seeds.json").read_text())
        assert manifest["seeds"] == []
    status = json.loads((tmp_path / "equal_time" / "status.json").read_text())
    assert status["ran"] is False


def test_data_error_exit_2(tmp_path, tiny_cifar10):
    params = write_params(tmp_path / "params.yaml", prepare={"source": str(tiny_cifar10)})
    result = run_cli("prepare", "--params", str(params), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "does not match the published" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_exit_2():
    assert run_cli("tunee").returncode == 2


def test_unexpected_failure_exit_1(monkeypatch, capsys):
    import pipeline.config

    def boom(path):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline.config, "load_params", boom)
    assert cli.main(["check-params"]) == 1
    assert "RuntimeError: a bug" in capsys.readouterr().err


def test_check_params_prints_resolved_values(real_cifar10):
    result = run_cli("check-params")
    assert result.returncode == 0, result.stderr
    assert "val_fraction: 0.1" in result.stdout


def test_evaluate_without_models_exit_2(tmp_path, tiny_prepared):
    result = run_cli("evaluate", "--data", str(tiny_prepared), "--models",
                     str(tmp_path / "models"), "--results", str(tmp_path / "results"),
                     "--metrics", str(tmp_path / "metrics.json"))
    assert result.returncode == 2, result.stderr
    assert "best.keras: not found; run the tune stages first" in result.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_ui_serves_the_project_store_on_loopback(tmp_path):
    from pipeline.tracking.store import TrackingStore
    from tests.conftest import free_port, get_json, running_server

    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "mlruns").mkdir()
    experiment = TrackingStore(uri, "ui-check", tmp_path / "mlruns" / "artifacts").experiment_id
    params = write_params(tmp_path / "params.yaml", prepare={"source": str(tmp_path)},
                          tracking={"uri": uri, "experiment": "ui-check"})
    port = free_port()
    command = [sys.executable, "-m", "pipeline", "ui", "--params", str(params),
               "--port", str(port)]
    log = tmp_path / "ui.log"
    with running_server(command, port, tmp_path, log_path=log) as base:
        found = get_json(f"{base}/api/2.0/mlflow/experiments/search?max_results=10")
        assert "ui-check" in [e["name"] for e in found["experiments"]]
    # the direct link to the project's runs (MLflow 3 opens on an overview page otherwise)
    assert f"{base}/#/experiments/{experiment}/runs" in log.read_text()


def test_ui_stops_with_sigterm_and_leaves_no_process(tmp_path):
    """systemd and `kill` stop a service with SIGTERM to its main process: the MLflow server it
    started goes with it, and it never started MLflow's background job consumers."""
    import os
    import signal

    import psutil

    from tests.conftest import free_port, wait_healthy

    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    params = write_params(tmp_path / "params.yaml", prepare={"source": str(tmp_path)},
                          tracking={"uri": uri})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"}
    ui = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--params", str(params),
                           "--port", str(port)], cwd=tmp_path, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, ui)
        started = psutil.Process(ui.pid).children(recursive=True)
        assert started, "the server runs as a child"
        commands = [" ".join(p.cmdline()) for p in started]
        assert not [c for c in commands if "huey" in c or "job" in c.lower()], commands
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 0
        gone, alive = psutil.wait_procs(started, timeout=15)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        if ui.poll() is None:
            ui.kill()
        for process in psutil.Process().children(recursive=True):
            if str(port) in " ".join(process.cmdline()):
                process.kill()


def test_version():
    from importlib import metadata

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"cifar-automl {metadata.version('cifar-automl')}"


def test_what_importing_keras_made_is_frozen_out_of_the_collector(tmp_path):
    """Keras' clear_session, before every trial, runs a full garbage collection: TensorFlow's
    half a million objects, frozen once after the import, are not scanned again each time (a
    CNN search here spent 42 of its 148 s in such collections before; bench/README.md)."""
    code = ("import argparse, gc\n"
            "from pipeline import cli\n"
            "before = gc.get_freeze_count()\n"
            "cli._import_keras(argparse.Namespace(verbose=False))\n"
            "print('FROZEN', before, gc.get_freeze_count())\n")
    result = run_python(code, tmp_path)
    counts, = [line.split()[1:] for line in result.stdout.splitlines()
               if line.startswith("FROZEN")]
    before, after = map(int, counts)
    assert before == 0 and after > 100_000, result.stderr


def test_a_keras_command_prints_its_own_lines_only(real_cifar10):
    """A command that loads Keras shows no start-up lines of TensorFlow's native code (on a
    machine without a GPU it prints several); --verbose shows whatever TensorFlow says."""
    quiet = run_cli("show-space", "search_spaces/cnn.yaml")
    assert quiet.returncode == 0 and "base_filters" in quiet.stdout
    assert quiet.stderr == "", quiet.stderr
    loud = run_cli("--verbose", "show-space", "search_spaces/cnn.yaml")
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    if "cuda" not in loud.stderr.lower():  # a machine where TensorFlow has nothing to say
        import pytest

        pytest.skip("TensorFlow printed nothing at start-up here, so quiet proves nothing")


def test_removed_setting_says_so(tmp_path):
    params = write_params(tmp_path / "params.yaml", tune={"objective": "val_accuracy"})
    result = run_cli("check-params", "--params", str(params))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {params}: tune.objective: no longer a setting "
                                     "(the search always maximises validation accuracy): "
                                     "delete it")
