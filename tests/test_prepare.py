"""The prepare stage on the real CIFAR-10: statistics, split determinism, atomic outputs."""

import json

import numpy as np
import pytest

from pipeline.config import load_params
from pipeline.data import store
from pipeline.prepare import run_prepare
from tests.conftest import tree_hashes, write_params


def prepare_real(tmp_path, source, out_name="prepared", **prepare):
    prepare = {"source": str(source), "train_per_class": 40, "test_per_class": 10,
               "preview_images": 3, "preview_samples": 2, **prepare}
    params_file = write_params(tmp_path / "params.yaml", prepare=prepare)
    out = tmp_path / "data" / out_name
    run_prepare(load_params(params_file), params_file, out, tmp_path / "reports" / "preview.png")
    return out


def test_full_training_statistics_match_published(tmp_path, real_cifar10):
    """The whole training set (40,000 after validation and holdout), mean/std as published for
    CIFAR-10 (within the sampling of 80% of it)."""
    out = prepare_real(tmp_path, real_cifar10, train_per_class=None, test_per_class=None)
    meta = store.load_meta(out)
    assert meta["sizes"] == {"train": 40000, "val": 5000, "holdout": 5000, "test": 10000}
    np.testing.assert_allclose(meta["mean"], [0.4914, 0.4822, 0.4465], atol=2e-3)
    np.testing.assert_allclose(meta["std"], [0.2470, 0.2435, 0.2616], atol=2e-3)
    assert meta["class_counts"]["val"] == [500] * 10
    assert meta["class_counts"]["holdout"] == [500] * 10
    assert meta["class_counts"]["test"] == [1000] * 10
    assert {f["checksum"] for f in meta["inputs"]["files"].values()} == {"verified"}
    # every output is listed with a hash that matches its bytes
    for name, entry in meta["outputs"].items():
        assert store.file_sha256(out / name) == entry["sha256"]


def test_split_is_stratified_deterministic_and_disjoint(tmp_path, real_cifar10):
    first = prepare_real(tmp_path, real_cifar10, out_name="a")
    second = prepare_real(tmp_path, real_cifar10, out_name="b")
    assert tree_hashes(first) == tree_hashes(second)

    meta = store.load_meta(first)
    assert meta["class_counts"]["train"] == [40] * 10
    assert meta["class_counts"]["val"] == [500] * 10
    assert meta["class_counts"]["test"] == [10] * 10
    assert meta["class_counts"]["holdout"] == [500] * 10
    train, _ = store.load_split(first, "train")
    val, _ = store.load_split(first, "val")
    holdout, _ = store.load_split(first, "holdout")
    keys = [{image.tobytes() for image in split} for split in (train, val, holdout)]
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    # the holdout does not move the validation split: the same images as without one
    no_holdout = prepare_real(tmp_path, real_cifar10, out_name="d", holdout_fraction=0.0)
    assert tree_hashes(no_holdout)["val_images.npy"] == tree_hashes(first)["val_images.npy"]
    assert len(store.load_split(no_holdout, "holdout")[1]) == 0

    other_seed = prepare_real(tmp_path, real_cifar10, out_name="c", seed=7)
    other_train, _ = store.load_split(other_seed, "train")
    assert not np.array_equal(np.asarray(other_train), np.asarray(train))


def test_smaller_subset_is_prefix_of_larger(tmp_path, real_cifar10):
    small = prepare_real(tmp_path, real_cifar10, out_name="small", train_per_class=10)
    large = prepare_real(tmp_path, real_cifar10, out_name="large", train_per_class=40)
    small_keys = {im.tobytes() for im in store.load_split(small, "train")[0]}
    large_keys = {im.tobytes() for im in store.load_split(large, "train")[0]}
    assert small_keys < large_keys
    assert tree_hashes(small)["val_images.npy"] == tree_hashes(large)["val_images.npy"]


def test_failed_prepare_keeps_previous_outputs(tmp_path, real_cifar10, monkeypatch):
    out = prepare_real(tmp_path, real_cifar10)
    before = tree_hashes(out)
    preview_before = (tmp_path / "reports" / "preview.png").read_bytes()

    real_save = store.save_split

    def failing_save(folder, name, images, labels):
        if name == "val":
            raise OSError("disk full (simulated)")
        real_save(folder, name, images, labels)

    monkeypatch.setattr(store, "save_split", failing_save)
    with pytest.raises(OSError, match="simulated"):
        prepare_real(tmp_path, real_cifar10, seed=3)
    assert tree_hashes(out) == before
    assert (tmp_path / "reports" / "preview.png").read_bytes() == preview_before
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]


def test_failed_first_prepare_leaves_nothing(tmp_path, real_cifar10, monkeypatch):
    def failing_json(path, data):
        raise OSError("simulated")

    monkeypatch.setattr(store, "write_json", failing_json)
    with pytest.raises(OSError):
        prepare_real(tmp_path, real_cifar10)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
    assert not (tmp_path / "reports" / "preview.png").exists()


def test_leftovers_of_a_killed_run_are_cleaned_or_restored(tmp_path, real_cifar10):
    out = prepare_real(tmp_path, real_cifar10)
    before = tree_hashes(out)
    # a run killed while writing leaves a scratch folder; one killed mid-swap leaves .old only
    stale = out.with_name(f".{out.name}.tmp-99999")
    stale.mkdir()
    (stale / "train_images.npy").write_bytes(b"half")
    out.rename(out.with_name(f".{out.name}.old"))
    with store.atomic_directory(out) as scratch:
        assert tree_hashes(out) == before  # restored before the new work starts
        assert not stale.exists()
        (scratch / "x").write_bytes(b"new")
    assert tree_hashes(out) == {"x": b"new"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]


def test_meta_records_source_as_given(tmp_path, real_cifar10):
    out = prepare_real(tmp_path, real_cifar10)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["class_names"][0] == "airplane" and meta["num_classes"] == 10
    assert meta["inputs"]["source"] == str(real_cifar10)
    assert meta["inputs"]["kind"] == "folder"
