"""The restricted unpickler: real CIFAR files load, a crafted payload never runs."""

import os
import pickle

import numpy as np
import pytest

from pipeline.data.safe_pickle import load_pickle
from pipeline.errors import DataError


class _Payload:
    """Unpickling this with a plain pickle.load would create ``target``."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _OpenPayload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("payload_class", [_Payload, _OpenPayload])
def test_crafted_pickle_is_refused_and_payload_never_runs(tmp_path, payload_class):
    target = tmp_path / "pwned"
    crafted = tmp_path / "data_batch_1"
    crafted.write_bytes(pickle.dumps({b"data": payload_class(target), b"labels": [0]}, protocol=2))
    # the same bytes would run the payload under plain pickle (proves the test is live) ...
    with pytest.raises(DataError, match="unsafe pickle, refused global") as info:
        load_pickle(crafted)
    assert str(crafted) in str(info.value)
    assert not target.exists()
    # ... and do so when unpickled without restriction
    pickle.loads(crafted.read_bytes())
    assert target.exists()


def test_real_batch_loads(real_cifar10):
    batch = load_pickle(real_cifar10 / "test_batch")
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (10000, 3072)
    assert len(batch["labels"]) == 10000


def test_numpy2_written_pickle_loads(tmp_path):
    path = tmp_path / "batch"
    array = np.arange(12, dtype=np.uint8).reshape(2, 6)
    for protocol in (2, 4):
        path.write_bytes(pickle.dumps({"data": array}, protocol=protocol))
        np.testing.assert_array_equal(load_pickle(path)["data"], array)


def test_truncated_pickle_names_file(tmp_path, real_cifar10):
    path = tmp_path / "test_batch"
    path.write_bytes((real_cifar10 / "test_batch").read_bytes()[:100_000])
    with pytest.raises(DataError, match="truncated or corrupt pickle") as info:
        load_pickle(path)
    assert str(path) in str(info.value)


def test_not_a_pickle(tmp_path):
    path = tmp_path / "batches.meta"
    path.write_text("hello, I am text")
    with pytest.raises(DataError, match="batches.meta: truncated or corrupt pickle"):
        load_pickle(path)
