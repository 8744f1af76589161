"""Prepared-data files: written atomically, read back (memory-mapped) by later stages.

Layout of ``data/prepared/``: ``{train,val,test}_images.npy`` (N, 32, 32, 3) uint8,
``{train,val,test}_labels.npy`` (N,) uint8 and ``meta.json``. Plain .npy files rather than
.npz: their bytes depend only on the arrays (an .npz embeds write times, so DVC would see a
change on every rerun), and they can be memory-mapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

SPLITS = ("train", "val", "holdout", "test")
META = "meta.json"
TIMINGS = "timings.json"  # evaluate's machine facts, beside metrics.json


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty scratch folder that replaces ``target`` only if the block succeeds.

    On failure the scratch folder is removed and ``target`` is untouched. The swap is two
    renames; a crash between them leaves ``.<name>.old``, which the next call puts back.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        if target.exists():
            shutil.rmtree(old)
        else:
            old.rename(target)  # a previous swap died half-way: restore what was there
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
    scratch = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    scratch.mkdir()
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _fsync_tree(scratch)
    if target.exists():
        target.rename(old)
    scratch.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling and a rename: readers see old or new, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_tree(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir():
            _fsync_tree(child)
            continue
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())


def save_split(folder: Path, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    np.save(folder / f"{name}_images.npy", images, allow_pickle=False)
    np.save(folder / f"{name}_labels.npy", labels, allow_pickle=False)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_meta(folder: Path) -> dict:
    return read_json(Path(folder) / META, "the prepare stage")


def read_json(path: Path, made_by: str = "the earlier stages") -> dict:
    """A JSON file an earlier stage wrote; a missing or broken one is a one-line DataError."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run {made_by} first (dvc repro)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def load_split(folder: Path, name: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split; memory-mapped by default (no copy until used)."""
    mode = "r" if mmap else None
    paths = [Path(folder) / f"{name}_{part}.npy" for part in ("images", "labels")]
    try:
        images, labels = (np.load(path, mmap_mode=mode, allow_pickle=False) for path in paths)
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: not found; run the prepare stage first") from None
    except ValueError as exc:
        raise DataError(f"{paths[0].parent}: corrupt prepared split '{name}' ({exc})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise DataError(f"{paths[0]}: not a prepared split (shape {images.shape}, "
                        f"{len(labels)} labels)")
    return images, labels
