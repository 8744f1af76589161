"""Every source kind, checksums, unsafe archives and broken files."""

import os
import shutil
import socket
import tarfile

import numpy as np
import pytest

from pipeline.config import load_params
from pipeline.data.catalog import CIFAR10
from pipeline.data.sources import download, open_source
from pipeline.data.store import load_split
from pipeline.errors import DataError
from pipeline.prepare import run_prepare
from tests.conftest import make_archive, make_tiny_cifar, write_params


def prepare_from(tmp_path, source, **prepare):
    prepare = {"source": str(source), "checksums": "warn", "preview_images": 2,
               "preview_samples": 1, **prepare}
    params_file = write_params(tmp_path / "params.yaml", prepare=prepare)
    out = tmp_path / "out" / "prepared"
    meta = run_prepare(load_params(params_file), params_file, out, tmp_path / "preview.png")
    return meta, out


def test_local_folder(tmp_path, tiny_cifar10):
    meta, out = prepare_from(tmp_path, tiny_cifar10)
    assert meta["inputs"]["kind"] == "folder"
    assert meta["sizes"] == {"train": 160, "val": 20, "holdout": 20, "test": 20}
    images, labels = load_split(out, "train")
    assert images.shape == (160, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.uint8
    assert (tmp_path / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parent_folder_is_accepted(tmp_path, tiny_cifar10):
    meta, _ = prepare_from(tmp_path, tiny_cifar10.parent)
    assert meta["sizes"]["train"] == 160


def test_local_archive(tmp_path, tiny_cifar10):
    archive = make_archive(tiny_cifar10, tmp_path / "my-cifar.tar.gz")
    meta, out = prepare_from(tmp_path, archive)
    assert meta["inputs"]["kind"] == "archive"
    assert meta["sizes"]["test"] == 20
    # the temporary extraction is gone
    assert [p.name for p in out.parent.iterdir()] == ["prepared"]


def test_images_decoded_in_original_channel_order(tmp_path, tiny_cifar10):
    from pipeline.data.safe_pickle import load_pickle

    _, out = prepare_from(tmp_path, tiny_cifar10, test_per_class=None)
    raw = load_pickle(tiny_cifar10 / "test_batch")["data"][0]
    images, _ = load_split(out, "test")
    # first image of the test split: red plane, then green, then blue, each row-major
    np.testing.assert_array_equal(images[0, :, :, 0].ravel(), raw[:1024])
    np.testing.assert_array_equal(images[0, :, :, 2].ravel(), raw[2048:])


@pytest.mark.parametrize("label_mode,classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_layout(tmp_path, label_mode, classes):
    folder = make_tiny_cifar(tmp_path / "src", dataset="cifar100", per_class=5)
    archive = make_archive(folder, tmp_path / "cifar100-copy.tar.gz")
    meta, out = prepare_from(tmp_path, archive, dataset="cifar100", label_mode=label_mode,
                             val_fraction=0.2)
    assert meta["num_classes"] == classes and len(meta["class_names"]) == classes
    assert meta["class_names"][0] == ("fine0" if label_mode == "fine" else "coarse0")
    _, labels = load_split(out, "val")
    assert set(labels.tolist()) == set(range(classes))


def test_keras_cache(tmp_path, tiny_cifar10, monkeypatch):
    # Keras 3 extracts to ~/.keras/datasets/cifar-10-batches-py-target/cifar-10-batches-py
    home = tmp_path / "keras-home"
    shutil.copytree(tiny_cifar10, home / "datasets" / CIFAR10.keras_cache_dir / CIFAR10.folder)
    monkeypatch.setenv("KERAS_HOME", str(home))
    meta, _ = prepare_from(tmp_path, "keras-cache")
    assert meta["inputs"]["kind"] == "keras-cache"


def test_keras_cache_empty_says_how_to_point(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no CIFAR-10 in the Keras cache.*set prepare.source"):
        prepare_from(tmp_path, "keras-cache")


def test_offline_download_says_how_to_point(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError) as info:
        download(CIFAR10, f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    message = str(info.value)
    assert "could not download CIFAR-10" in message and "set prepare.source" in message
    assert "\n" not in message
    assert not (tmp_path / "keras-home" / "datasets" / CIFAR10.archive).exists()


def test_checksum_mismatch_strict_is_an_error(tmp_path, tiny_cifar10):
    # the tiny files carry CIFAR's names but not its bytes
    with pytest.raises(DataError, match="does not match the published") as info:
        prepare_from(tmp_path, tiny_cifar10, checksums="strict")
    assert "prepare.checksums: warn" in str(info.value)
    assert not (tmp_path / "out" / "prepared").exists()


def test_checksum_mismatch_warn_is_recorded(tmp_path, tiny_cifar10, caplog):
    meta, _ = prepare_from(tmp_path, tiny_cifar10, checksums="warn")
    assert {f["checksum"] for f in meta["inputs"]["files"].values()} == {"mismatch"}
    assert "does not match the published" in caplog.text


def test_real_files_verify(tmp_path, real_cifar10):
    found_status = {}
    with open_source(CIFAR10, real_cifar10, tmp_path) as found:
        found_status = dict(found.checksum_status)
    assert set(found_status.values()) == {"verified"} and len(found_status) == 7


def test_archive_with_parent_member_is_refused(tmp_path, tiny_cifar10):
    archive = tmp_path / "evil.tar.gz"
    evil = tmp_path / "evil.txt"
    evil.write_text("escaped")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_cifar10, arcname=tiny_cifar10.name)
        tar.add(evil, arcname="../../escaped.txt")
    evil.unlink()
    with pytest.raises(DataError, match="unsafe archive member '../../escaped.txt'"):
        prepare_from(tmp_path, archive)
    assert not list(tmp_path.parent.rglob("escaped.txt"))
    assert not (tmp_path / "out" / "prepared").exists()


def test_archive_with_absolute_member_is_refused(tmp_path, tiny_cifar10):
    archive = tmp_path / "abs.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(str(tmp_path / "absolute.txt"))
        info.size = 0
        tar.addfile(info)
    with pytest.raises(DataError, match="unsafe archive member"):
        prepare_from(tmp_path, archive)
    assert not (tmp_path / "absolute.txt").exists()


def test_truncated_batch_file_is_named(tmp_path, real_cifar10):
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(real_cifar10, folder)
    broken = folder / "data_batch_3"
    broken.write_bytes(broken.read_bytes()[:5_000_000])
    # strict: the checksum catches it first
    with pytest.raises(DataError, match="data_batch_3: MD5 .* does not match"):
        prepare_from(tmp_path, folder, checksums="strict", train_per_class=10)
    # warn: parsing catches it
    with pytest.raises(DataError, match="data_batch_3: truncated or corrupt pickle"):
        prepare_from(tmp_path, folder, checksums="warn", train_per_class=10)


def test_truncated_archive(tmp_path, tiny_cifar10):
    archive = make_archive(tiny_cifar10, tmp_path / "cut.tar.gz")
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(DataError, match="cut.tar.gz: truncated or corrupt archive"):
        prepare_from(tmp_path, archive)


def test_missing_file_is_named(tmp_path, tiny_cifar10):
    (tiny_cifar10 / "data_batch_4").unlink()
    with pytest.raises(DataError, match="missing CIFAR-10 file.*data_batch_4"):
        prepare_from(tmp_path, tiny_cifar10)


def test_wrong_dataset_folder(tmp_path, tiny_cifar10):
    with pytest.raises(DataError, match="no CIFAR-100 files found"):
        prepare_from(tmp_path, tiny_cifar10, dataset="cifar100")


def test_bad_labels_and_shapes(tmp_path):
    import pickle

    folder = make_tiny_cifar(tmp_path / "src")
    batch = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 12]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2: labels should lie in 0..9"):
        prepare_from(tmp_path, folder)
    batch = {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2: 'data' should have shape"):
        prepare_from(tmp_path, folder)
    batch = {b"data": np.zeros((3, 3072), np.float32), b"labels": [0, 1, 2]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2: 'data' should be a uint8 array"):
        prepare_from(tmp_path, folder)


def test_an_oversized_archive_member_is_refused_before_extraction(tmp_path):
    """A small archive whose member expands far beyond a CIFAR file: refused from the index,
    nothing written."""
    import io

    archive = tmp_path / "bomb.tar.gz"
    size = CIFAR10.max_bytes("data_batch_1") + 1
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    assert archive.stat().st_size < size // 100  # it is small: zeros compress well
    with pytest.raises(DataError, match="member 'cifar-10-batches-py/data_batch_1' holds "
                                        f"{size:,} bytes, more than a CIFAR-10 file can"):
        prepare_from(tmp_path, archive)
    assert not list(tmp_path.rglob("data_batch_1")) and not list(tmp_path.rglob(".extract-*"))


def test_an_oversized_dataset_file_is_refused_before_reading(tmp_path, tiny_cifar10):
    batch = tiny_cifar10 / "data_batch_2"
    os.truncate(batch, CIFAR10.max_bytes("data_batch_2") + 1)  # sparse: no disk used
    with pytest.raises(DataError, match="data_batch_2: .* bytes, more than a CIFAR-10 file "
                                        "can hold .*; not read"):
        prepare_from(tmp_path, tiny_cifar10, checksums="warn")


def test_a_download_that_does_not_match_the_checksum_says_so(tmp_path, monkeypatch):
    """Not "offline?": the server answered, with the wrong bytes."""
    import functools
    import http.server
    import threading

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    served = tmp_path / "served"
    served.mkdir()
    (served / CIFAR10.archive).write_bytes(b"not the archive")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{CIFAR10.archive}"
        with pytest.raises(DataError, match="does not match the published SHA-256") as info:
            download(CIFAR10, url)
    finally:
        server.shutdown()
    assert "offline" not in str(info.value) and "\n" not in str(info.value)

