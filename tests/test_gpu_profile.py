"""The gpu profile and its GPU check, on the CPU: the profile's files, its precision guard, the
data's split into transfer-sized parts and back, and the check's script end to end at tiny
scale with TensorFlow, MLflow and DVC made unimportable (the GPU machine has none of them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_params
from pipeline.data import store
from pipeline.data.parts import MANIFEST, join_parts, split_parts
from pipeline.errors import DataError
from tests.conftest import REPO, make_tiny_cifar

GPU_PARAMS = REPO / "params-gpu.yaml"
# what the GPU machine lacks: importing any of them fails there as it does here
BLOCKER = '''import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "mlflow", "dvc", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
'''


def test_gpu_profile_reads_the_laptop_profiles_data(real_cifar10):
    """Both profiles prepare the same data (the check carries what the laptop prepared) and
    the gpu profile's spaces are valid for their families."""
    from pipeline.search.hypermodel import known_hyperparameters
    from pipeline.spaces import load_space

    laptop, gpu = load_params(REPO / "params.yaml"), load_params(GPU_PARAMS)
    assert gpu.prepare == laptop.prepare and gpu.augmentation == laptop.augmentation
    assert gpu.tune.profile == "gpu" and gpu.tune.space_dir != laptop.tune.space_dir
    for family in ("cnn", "fc"):
        space = load_space(REPO / gpu.tune.space_dir / f"{family}.yaml", family=family,
                           known=known_hyperparameters(family))
        assert space.family == family
    cnn = yaml.safe_load((REPO / gpu.tune.space_dir / "cnn.yaml").read_text())
    assert cnn["hyperparameters"]["base_filters"]["default"] == 64  # ResNet-9's full widths


def test_precision_policy_guards_the_cpu(monkeypatch):
    from pipeline import devices

    assert devices.precision_policy("laptop") == "float32"
    assert devices.gpu_capability() is None  # this machine: no GPU
    assert devices.precision_policy("gpu") == "float32"
    for capability, policy in (((9, 0), "mixed_bfloat16"), ((8, 0), "mixed_bfloat16"),
                               ((7, 5), "mixed_float16"), ((0, 0), "mixed_float16")):
        monkeypatch.setattr(devices, "gpu_capability", lambda c=capability: c)
        assert devices.precision_policy("gpu") == policy
    assert devices.parse_capability("9.0") == (9, 0)
    assert devices.parse_capability((8, 6)) == (8, 6)
    assert devices.parse_capability(None) == (0, 0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Tiny prepared data from generated CIFAR files, through the real prepare stage (read
    only: every test cuts its parts elsewhere)."""
    tmp_path = tmp_path_factory.mktemp("prepared")
    source = make_tiny_cifar(tmp_path / "src")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"prepare": {"source": str(source),
                                                  "checksums": "warn"}}))
    out = tmp_path / "prepared"
    subprocess.run([sys.executable, "-m", "pipeline", "prepare", "--params", str(params),
                    "--out", str(out), "--preview", str(tmp_path / "preview.png")],
                   check=True, cwd=REPO, capture_output=True)
    return out


def test_parts_round_trip_and_refuse_damage(prepared, tmp_path):
    max_bytes = 200 << 10  # a few parts out of ~400 KB
    parts = split_parts(prepared, tmp_path / "parts", max_bytes, ("train", "val", "test"))
    assert len(parts) >= 3
    for part in parts:
        assert sum(f.stat().st_size for f in part.iterdir()) <= max_bytes
        assert (part / MANIFEST).is_file()
    joined = tmp_path / "joined"
    meta = join_parts(tmp_path / "parts", joined)
    assert meta["dataset"] == "cifar10"
    names = {p.name for p in joined.iterdir()}
    assert names == {"meta.json"} | {f"{s}_{k}.npy" for s in ("train", "val", "test")
                                     for k in ("images", "labels")}
    for name in names:
        assert (joined / name).read_bytes() == (prepared / name).read_bytes()

    # a part that has not arrived: one line naming it, the target as it was
    before = {p.name: p.read_bytes() for p in joined.iterdir()}
    moved = tmp_path / "away"
    parts[1].rename(moved)
    with pytest.raises(DataError, match="part-01 missing"):
        join_parts(tmp_path / "parts", joined)
    moved.rename(parts[1])
    # a damaged chunk: named, nothing replaced
    chunk = next(f for f in parts[0].iterdir() if f.name != MANIFEST)
    chunk.write_bytes(b"x" + chunk.read_bytes()[1:])
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        join_parts(tmp_path / "parts", joined)
    assert {p.name: p.read_bytes() for p in joined.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".joined")) == []


def test_split_parts_refuses_bad_arguments(prepared, tmp_path):
    with pytest.raises(DataError, match="too small"):
        split_parts(prepared, tmp_path / "parts", 1000)
    for out in (prepared, prepared.parent):  # never over the data it cuts
        with pytest.raises(DataError, match="would replace the prepared data"):
            split_parts(prepared, out, 1 << 20)
    assert store.load_meta(prepared)["dataset"] == "cifar10"


@pytest.mark.slow
def test_gpu_check_runs_the_gpu_profile_without_tensorflow(prepared, tmp_path):
    """bench/gpu_check.sh as the GPU machine runs it, step for step, on the CPU: parts carried
    in two goes, joined, both searches and evaluate with the gpu profile (float32 here), with
    TensorFlow, MLflow and DVC absent."""
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    for family, shrink in (("cnn", {"base_filters": 8}), ("fc", {"units": 64})):
        space = yaml.safe_load((REPO / "search_spaces" / "gpu" / f"{family}.yaml").read_text())
        for name, value in shrink.items():  # the same space at a width the CPU trains fast
            space["hyperparameters"][name] = {"type": "fixed", "value": value}
        (spaces / f"{family}.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    params = yaml.safe_load(GPU_PARAMS.read_text())
    small = {"max_trials": 2, "max_epochs": 2, "budget_minutes": 2, "final_epochs": 1,
             "final_budget_minutes": 1}
    params["tune"].update(small, space_dir=str(spaces),
                          per_family={"cnn": {}, "fc": {}})
    params["evaluate"]["bootstrap_resamples"] = 100
    params_file = tmp_path / "params-gpu-tiny.yaml"
    params_file.write_text(yaml.safe_dump(params))
    split_parts(prepared, tmp_path / "all-parts", 300 << 10, ("train", "val", "test"))
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    out, run = tmp_path / "out", tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_PARAMS": str(params_file),
           "GPU_CHECK_RUN": str(run), "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels"),
           "OUT": str(out), "PYTHONPATH": str(blocker)}

    def check(*steps, parts: list[Path]):
        carried = tmp_path / "carried"  # what one call of the device tool brings
        subprocess.run(["rm", "-rf", str(carried)], check=True)
        carried.mkdir()
        for part in parts:
            subprocess.run(["cp", "-r", str(part), str(carried)], check=True)
        return subprocess.run(["bash", "bench/gpu_check.sh", *steps], cwd=REPO,
                              env={**env, "GPU_CHECK_PARTS": str(carried)},
                              capture_output=True, text=True, timeout=600)

    all_parts = sorted((tmp_path / "all-parts").iterdir())
    assert len(all_parts) >= 2
    first = check("receive", parts=all_parts[:1])
    assert first.returncode == 0, first.stdout + first.stderr
    early = check("tune-cnn", parts=[])  # not all parts yet: a clear refusal
    assert early.returncode != 0 and "missing" in early.stdout + early.stderr
    done = check("receive", "tune-cnn", "tune-fc", "evaluate", parts=all_parts[1:])
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    # precision auto on a CPU: the profile's bfloat16 is not assumed; timed, or float32 on a
    # CPU without bfloat16 units
    assert "precision auto on this CPU" in log
    metrics = json.loads((out / "metrics.json").read_text())
    for family in ("cnn", "fc"):
        assert 0 <= metrics[family]["test_accuracy"] <= 1
        best = json.loads((out / f"{family}-best_hparams.json").read_text())
        assert best["family"] == family and best["final"]["epochs_run"] == 1
        assert (out / f"{family}-trials.csv").read_text().count("\n") >= 2
    assert json.loads((out / "timings.json").read_text())
    assert "jax" in (out / "gpu.txt").read_text()
    assert store.load_meta(run / "data")["sizes"]["train"] == 160
