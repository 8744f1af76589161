"""Benchmark: training and inference images/s of the default CNN and FC at several batch sizes.

Every configuration trains the default model of its family (as the search's first trial builds
it: augmentation on, the recipe's optimizer) on real CIFAR-10 images for ``--epochs`` epochs;
images/s comes from the fastest epoch after the first (the first includes graph tracing and
XLA compilation). Backend-agnostic (plain ``model.fit``), so it runs on TensorFlow or JAX, on
CPU or GPU. ``--mixed-precision`` and ``--jit-compile`` switch the GPU speed options on.

    python bench/bench_throughput.py --families cnn fc --batch-sizes 64 128 256 512
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar-10-batches-py"


def load_images(source: Path, n: int):
    """The first n training images (10,000 per batch file), read with the restricted
    unpickler and validated like the prepare stage does."""
    from pipeline.data.catalog import DATASETS
    from pipeline.data.cifar import load_files

    names = tuple(f"data_batch_{i}" for i in range(1, 1 + -(-n // 10000)))
    split = load_files(source, names, DATASETS["cifar10"], "fine")
    return split.images[:n], split.labels[:n]


def build(family: str, x, batch_size: int, jit_compile: bool):
    from pipeline.config import AugmentationParams
    from pipeline.families import FAMILIES
    from pipeline.training import RECIPE_DEFAULTS, compile_model

    builder, defaults = FAMILIES[family].builder, FAMILIES[family].defaults
    stats = {"mean": list(x.mean(axis=(0, 1, 2)) / 255), "std": list(x.std(axis=(0, 1, 2)) / 255)}
    cfg = {**RECIPE_DEFAULTS, **defaults, "batch_size": batch_size}
    model = builder(cfg, 10, stats, AugmentationParams(), seed=0)
    model = compile_model(model, cfg)
    if jit_compile:
        model.jit_compile = True
    return model


def measure(family: str, x, y, batch_size: int, epochs: int, jit_compile: bool) -> dict:
    import keras

    keras.backend.clear_session()
    model = build(family, x, batch_size, jit_compile)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[Timer()])
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # tracing
    started = time.perf_counter()
    model.predict(x, batch_size=batch_size, verbose=0)
    predict_s = time.perf_counter() - started
    train_s = min(times[1:]) if len(times) > 1 else times[0]
    return {"family": family, "batch_size": batch_size, "params": model.count_params(),
            "train_images_per_s": round(len(x) / train_s, 1),
            "predict_images_per_s": round(len(x) / predict_s, 1),
            "epoch_seconds": [round(t, 2) for t in times]}


def main(argv=None) -> int:
    from pipeline.families import FAMILY_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILY_NAMES),
                        choices=FAMILY_NAMES)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128, 256, 512])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--source", type=Path, default=SHARED)
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 policy")
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import keras

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = load_images(args.source, args.images)
    device = "gpu" if any("gpu" in str(d).lower() for d in _devices()) else "cpu"
    print(f"backend {keras.backend.backend()}, {device}, {len(x)} images, "
          f"mixed precision {args.mixed_precision}, XLA {args.jit_compile}", flush=True)
    print("| family | batch | parameters | train images/s | predict images/s |")
    print("|---|---:|---:|---:|---:|")
    results = []
    for family in args.families:
        for batch_size in args.batch_sizes:
            row = measure(family, x, y, batch_size, args.epochs, args.jit_compile)
            results.append(row)
            print(f"| {family} | {batch_size} | {row['params']:,} | "
                  f"{row['train_images_per_s']:,.0f} | {row['predict_images_per_s']:,.0f} |",
                  flush=True)
    if args.out:
        args.out.write_text(json.dumps({"backend": keras.backend.backend(), "device": device,
                                        "mixed_precision": args.mixed_precision,
                                        "jit_compile": args.jit_compile,
                                        "results": results}, indent=1))
    return 0


def _devices():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.config.list_physical_devices()
    return []


if __name__ == "__main__":
    sys.exit(main())
