"""The prepare stage: CIFAR source -> verified, split, summarised uint8 arrays + preview PNG."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.config import Params, resolve_source
from pipeline.data import store
from pipeline.data.catalog import DATASETS
from pipeline.data.cifar import check_class_counts, load_class_names, load_files
from pipeline.data.sources import open_source
from pipeline.data.split import channel_mean_std, per_class_subset, stratified_split
from pipeline.errors import DataError

log = logging.getLogger(__name__)


def run_prepare(params: Params, params_file: Path, out_dir: Path, preview_path: Path,
                download_url: str | None = None) -> dict:
    """Run the stage; returns the meta.json content. Outputs appear whole or not at all."""
    p = params.prepare
    spec = DATASETS[p.dataset]
    num_classes = spec.num_classes(p.label_mode)
    started = time.perf_counter()
    source = resolve_source(params_file, p.source)

    with open_source(spec, source, scratch=out_dir.parent, checksums=p.checksums,
                     url=download_url) as found:
        log.info("[1/4] reading %s from %s (%s); checksums: %s", spec.title, found.origin,
                 found.kind, _summary(found.checksum_status))
        class_names = load_class_names(found.folder, spec, p.label_mode)
        full_train = load_files(found.folder, spec.train_files, spec, p.label_mode)
        full_test = load_files(found.folder, spec.test_files, spec, p.label_mode)

    check_class_counts(full_train, num_classes, f"{spec.title} training files", minimum=2)
    check_class_counts(full_test, num_classes, f"{spec.title} test files")
    _check_subset_fits(full_train, full_test, p, num_classes)

    log.info("[2/4] splitting %d training images (validation fraction %g, holdout fraction %g, "
             "seed %d)", len(full_train.labels), p.val_fraction, p.holdout_fraction, p.seed)
    train_idx, val_idx, holdout_idx = stratified_split(full_train.labels, p.val_fraction, p.seed,
                                                       p.train_per_class, p.holdout_fraction)
    test_idx = per_class_subset(full_test.labels, p.test_per_class, p.seed)
    splits = {
        "train": (full_train.images[train_idx], full_train.labels[train_idx]),
        "val": (full_train.images[val_idx], full_train.labels[val_idx]),
        # the retune job's promotion split: no search and no training ever reads it
        "holdout": (full_train.images[holdout_idx], full_train.labels[holdout_idx]),
        "test": (full_test.images[test_idx], full_test.labels[test_idx]),
    }
    mean, std = channel_mean_std(splits["train"][0])

    log.info("[3/4] rendering the augmentation preview")
    from pipeline.preview import pick_examples, render_preview  # imports Keras

    train_images, train_labels = splits["train"]
    picks = pick_examples(train_labels, p.preview_images)
    preview_png = render_preview(train_images[picks], train_labels[picks], class_names,
                                 params.augmentation, p.preview_samples, p.seed)

    log.info("[4/4] writing %s", out_dir)
    meta = {
        "dataset": spec.name,
        "title": spec.title,
        "label_mode": p.label_mode,
        "num_classes": num_classes,
        "class_names": class_names,
        "image_shape": [32, 32, 3],
        "sizes": {name: int(len(labels)) for name, (_, labels) in splits.items()},
        "class_counts": {
            name: np.bincount(labels, minlength=num_classes).tolist()
            for name, (_, labels) in splits.items()
        },
        # per-channel (R, G, B) statistics of the training split, pixel values / 255
        "mean": [round(value, 6) for value in mean],
        "std": [round(value, 6) for value in std],
        "params": p.model_dump(),
        "inputs": {
            "source": p.source,
            "kind": found.kind,
            "archive_md5": found.archive_md5,
            "files": {name: {"md5": found.file_md5[name], "checksum": found.checksum_status[name]}
                      for name in spec.files},
        },
        "outputs": {},
        "created_by": f"cifar-automl {__version__}",
    }
    with store.atomic_directory(out_dir) as scratch:
        for name, (images, labels) in splits.items():
            store.save_split(scratch, name, images, labels)
        meta["outputs"] = {path.name: {"sha256": store.file_sha256(path)}
                           for path in sorted(scratch.iterdir())}
        store.write_json(scratch / store.META, meta)
        store.atomic_write_bytes(preview_path, preview_png)
    log.info("prepared %s: %s in %.1f s", spec.title,
             ", ".join(f"{k} {v}" for k, v in meta["sizes"].items()),
             time.perf_counter() - started)
    return meta


def _summary(status: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for value in status.values():
        counts[value] = counts.get(value, 0) + 1
    return ", ".join(f"{count} {value}" for value, count in sorted(counts.items()))


def _check_subset_fits(train, test, p, num_classes: int) -> None:
    """The config checks sizes against the published dataset; this checks the actual files."""
    smallest_train = int(np.bincount(train.labels, minlength=num_classes).min())
    left = (smallest_train - max(1, round(smallest_train * p.val_fraction))
            - round(smallest_train * p.holdout_fraction))
    if p.train_per_class is not None and p.train_per_class > left:
        raise DataError(f"prepare.train_per_class = {p.train_per_class}: larger than the data "
                        f"(the smallest class has {left} training images after validation)")
    smallest_test = int(np.bincount(test.labels, minlength=num_classes).min())
    if p.test_per_class is not None and p.test_per_class > smallest_test:
        raise DataError(f"prepare.test_per_class = {p.test_per_class}: larger than the data "
                        f"(the smallest class has {smallest_test} test images)")
