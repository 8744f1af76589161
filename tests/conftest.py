"""Shared fixtures: the real CIFAR-10 copy, tiny generated CIFAR files, params files."""

from __future__ import annotations

import contextlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
REAL_CIFAR10 = REPO.parent / "shared" / "data" / "cifar-10-batches-py"


@pytest.fixture
def real_cifar10() -> Path:
    if not (REAL_CIFAR10 / "data_batch_1").is_file():
        pytest.skip(f"the real CIFAR-10 copy is not at {REAL_CIFAR10}")
    return REAL_CIFAR10


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """A test that runs a search in this process leaves Keras's global dtype policy at what
    ``tune.precision: auto`` picked (mixed_bfloat16 on a CPU with AVX512_BF16); the next test
    would build its layers in it (a pad-crop test then compared bfloat16 pixels with float32)."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def heap_frozen_after_each_test():
    """What is alive after a test, frozen out of the garbage collector. Keras' clear_session,
    which KerasTuner calls before every trial, runs a full collection; in this process it
    scanned everything every earlier test left alive (2.2 million objects by the end of
    test_tuning.py, 0.76 s a collection, 29% of that file's time). Only what a test makes is
    scanned now; cycles it leaves are collected here, before the freeze."""
    yield
    import gc

    gc.collect()
    gc.freeze()


def _dump(path: Path, obj: dict) -> None:
    # protocol 2 with bytes keys, like the original Python 2 files
    path.write_bytes(pickle.dumps(obj, protocol=2))


def make_tiny_cifar(root: Path, dataset: str = "cifar10", per_class: int = 4,
                    test_per_class: int = 2, seed: int = 0) -> Path:
    """Write a small dataset in the original layout (random pixels); returns its folder."""
    rng = np.random.default_rng(seed)

    def batch(labels: list[int], label_key: bytes, extra: dict | None = None) -> dict:
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        return {b"data": data, label_key: labels, b"batch_label": b"tiny", **(extra or {})}

    if dataset == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for index in range(1, 6):
            labels = [c for c in range(10) for _ in range(per_class)]
            _dump(folder / f"data_batch_{index}", batch(labels, b"labels"))
        _dump(folder / "test_batch", batch([c for c in range(10) for _ in range(test_per_class)],
                                           b"labels"))
        names = [f"class{c}".encode() for c in range(10)]
        _dump(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
        return folder
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, count in (("train", per_class), ("test", test_per_class)):
        fine = [c for c in range(100) for _ in range(count)]
        coarse = [c // 5 for c in fine]
        _dump(folder / name, batch(fine, b"fine_labels", {b"coarse_labels": coarse}))
    _dump(folder / "meta", {
        b"fine_label_names": [f"fine{c}".encode() for c in range(100)],
        b"coarse_label_names": [f"coarse{c}".encode() for c in range(20)],
    })
    return folder


def make_archive(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def write_params(path: Path, prepare: dict | None = None, augmentation: dict | None = None,
                 **sections) -> Path:
    data = {"prepare": prepare or {}, "augmentation": augmentation or {}, **sections}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def tiny_cifar10(tmp_path) -> Path:
    return make_tiny_cifar(tmp_path / "src")


def tree_hashes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


TINY_CNN_SPACE = """
family: cnn
hyperparameters:
  stages: {type: int, min: 1, max: 2, default: 1}
  convs_per_stage: {type: int, min: 1, max: 2, default: 1}
  base_filters: {type: choice, values: [8, 12], default: 8}
  batch_norm: {type: boolean, default: true}
  optimizer: {type: choice, values: [nesterov, adam], default: nesterov}
  momentum: {type: float, min: 0.8, max: 0.95, default: 0.9, when: {optimizer: [nesterov]}}
  learning_rate: {type: float, min: 0.001, max: 0.05, sampling: log, default: 0.01}
  batch_size: {type: fixed, value: 64}
"""

TINY_FC_SPACE = """
family: fc
hyperparameters:
  layers: {type: int, min: 1, max: 2, default: 1}
  units: {type: choice, values: [32, 64], default: 32}
  optimizer: {type: choice, values: [adam, adamw], default: adam}
  learning_rate: {type: float, min: 0.0005, max: 0.005, sampling: log, default: 0.001}
  batch_size: {type: fixed, value: 64}
"""

TINY_PREPARE = {"train_per_class": 20, "val_fraction": 0.01, "test_per_class": 10,
                "preview_images": 2, "preview_samples": 1}


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """Prepared data from the real CIFAR-10: 200 training, 500 validation, 100 test images."""
    if not (REAL_CIFAR10 / "data_batch_1").is_file():
        pytest.skip(f"the real CIFAR-10 copy is not at {REAL_CIFAR10}")
    from pipeline.config import load_params
    from pipeline.prepare import run_prepare

    root = tmp_path_factory.mktemp("tiny-prepared")
    params_file = write_params(root / "params.yaml",
                               prepare={"source": str(REAL_CIFAR10), **TINY_PREPARE})
    out = root / "data" / "prepared"
    run_prepare(load_params(params_file), params_file, out, root / "preview.png")
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(port: int, server, timeout: float = 90, health: str = "/health") -> None:
    """Until the server process answers on 127.0.0.1:port (fails if it exits or times out)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=2):
                return
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.3)


@contextlib.contextmanager
def running_server(command: list[str], port: int, cwd: Path, timeout: float = 90,
                   log_path: Path | None = None, health: str = "/health",
                   env: dict | None = None):
    """Start an HTTP server process on 127.0.0.1:port, wait for its health URL, yield its base
    URL, then stop it and everything it started (its own process group). Its output goes to
    ``log_path`` (default: a temporary file)."""
    import os
    import signal
    import subprocess
    import tempfile
    import time
    import urllib.request

    log = open(log_path, "w") if log_path else tempfile.TemporaryFile("w+")  # noqa: SIM115
    server = subprocess.Popen(command, cwd=cwd, start_new_session=True, stdout=log,
                              stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"

    def output() -> str:
        log.flush()
        return Path(log_path).read_text() if log_path else (log.seek(0) or log.read())

    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}{health}", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, output()
                assert time.monotonic() < deadline, "the server did not come up: " + output()
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
    assert server.poll() is not None


def get_json(url: str) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)
