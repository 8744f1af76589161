"""Benchmark: training images/s of Keras' loop against a bare training step, and
inference images/s, for the default CNN and FC at several batch sizes.

Each configuration builds its family's default model (as the search's first trial does:
augmentation inside the model, the recipe's optimizer) and measures
- fit: ``model.fit`` from host arrays with the callbacks every training uses (the budget
  schedule, which sets the learning rate between batches, and the NaN guard), the fastest
  epoch after the first (the first includes tracing and compilation). The pipeline itself
  feeds one tf.data pipeline (``pipeline/feed.py``), not arrays: its own ``fit`` is timed by
  ``bench_precision_fit.py``;
- bare: ``train_on_batch`` on one batch already on the device, no input pipeline, no
  callbacks: what the device does when nothing feeds it;
- feed ratio: fit / bare. Near 1: the input pipeline keeps up; well under 1: it starves the
  device;
- training GFLOP/s (3x the analytic forward cost a training image) against a 2048x2048 matmul
  in the policy's compute dtype, timed first: how close the training runs to the device's peak.
Backend-agnostic, so it runs on TensorFlow or JAX, on CPU or GPU.

    python bench/bench_throughput.py --families cnn fc --batch-sizes 64 128 256 512
    python bench/bench_throughput.py --synthetic 20000 --precision profile-gpu --base-filters 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.models.flops import forward_flops  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar-10-batches-py"
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "profile-gpu")


def load_images(source: Path, n: int):
    """The first n training images (10,000 per batch file), read with the restricted
    unpickler and validated like the prepare stage does."""
    from pipeline.data.catalog import DATASETS
    from pipeline.data.cifar import load_files

    names = tuple(f"data_batch_{i}" for i in range(1, 1 + -(-n // 10000)))
    split = load_files(source, names, DATASETS["cifar10"], "fine")
    return split.images[:n], split.labels[:n]


def synthetic_images(n: int, seed: int = 0):
    """Random pixels and labels: speed does not depend on what the images show."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.uint8))


def build(family: str, x, batch_size: int, overrides: dict):
    from pipeline.config import AugmentationParams
    from pipeline.families import FAMILIES
    from pipeline.training import RECIPE_DEFAULTS, compile_model

    builder, defaults = FAMILIES[family].builder, FAMILIES[family].defaults
    stats = {"mean": list(x.mean(axis=(0, 1, 2)) / 255), "std": list(x.std(axis=(0, 1, 2)) / 255)}
    cfg = {**RECIPE_DEFAULTS, **defaults, "batch_size": batch_size,
           **{k: v for k, v in overrides.items() if k in defaults}}
    model = builder(cfg, 10, stats, AugmentationParams(), seed=0)
    return compile_model(model, cfg), cfg


def epoch_timer(times: list):
    """A Keras callback that appends each epoch's seconds to ``times``."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    return EpochTimer()


def measure(family: str, x, y, batch_size: int, epochs: int, overrides: dict,
            jit: bool | None = None) -> dict:
    import keras

    from pipeline.training import budget_schedule

    keras.backend.clear_session()
    model, cfg = build(family, x, batch_size, overrides)
    if jit is not None:
        model.jit_compile = jit
    times = []
    steps = epochs * -(-len(x) // batch_size)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=[budget_schedule(cfg, steps, None), keras.callbacks.TerminateOnNaN(),
                         epoch_timer(times)])
    fit_s = min(times[1:]) if len(times) > 1 else times[0]
    bare_s, bare_images = bare_steps(model, x[:batch_size], y[:batch_size], len(x) // batch_size)
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # tracing
    started = time.perf_counter()
    model.predict(x, batch_size=batch_size, verbose=0)
    predict_s = time.perf_counter() - started
    fit_rate, bare_rate = len(x) / fit_s, bare_images / bare_s
    flops = forward_flops(model)
    return {"family": family, "batch_size": batch_size, "params": model.count_params(),
            "jit_compile": bool(model.jit_compile),
            "forward_mflop_per_image": round(flops / 1e6, 1),
            "train_gflop_per_s": round(3 * flops * fit_rate / 1e9, 1),
            "train_images_per_s": round(fit_rate, 1),
            "bare_step_images_per_s": round(bare_rate, 1),
            "feed_ratio": round(fit_rate / bare_rate, 3),
            "predict_images_per_s": round(len(x) / predict_s, 1),
            "epoch_seconds": [round(t, 2) for t in times]}


def matmul_gflops(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """The device's rate on one dense ``n`` x ``n`` matmul in ``dtype`` (the best of
    ``repeats``, after a warm-up): the peak a training's GFLOP/s are read against."""
    from keras import ops

    rng = np.random.default_rng(0)
    a, b = (ops.convert_to_tensor(rng.standard_normal((n, n)), dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):
        started = time.perf_counter()
        # one element back (as float32: numpy has no bfloat16): the whole product is done
        ops.convert_to_numpy(ops.cast(ops.matmul(a, b)[0, 0], "float32"))
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best / 1e9


def bare_steps(model, x_batch, y_batch, steps: int) -> tuple[float, int]:
    """Seconds for ``steps`` training steps on one device-resident batch (after two warm-up
    steps), and the images they saw."""
    from keras import ops

    xb, yb = ops.convert_to_tensor(x_batch), ops.convert_to_tensor(y_batch)
    for _ in range(2):
        model.train_on_batch(xb, yb)
    steps = max(steps, 3)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(xb, yb)  # returns host numbers: each step has finished
    return time.perf_counter() - started, steps * len(x_batch)


def main(argv=None) -> int:
    from pipeline.families import FAMILY_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILY_NAMES),
                        choices=FAMILY_NAMES)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128, 256, 512])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--source", type=Path, default=SHARED)
    parser.add_argument("--synthetic", type=int, metavar="N",
                        help="N random images instead of CIFAR-10 from --source")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="Keras dtype policy; profile-gpu: what tune.profile gpu picks here")
    parser.add_argument("--base-filters", type=int, help="CNN stem width (default: the "
                        "family default; 64 is ResNet-9's full 64-128-256-512)")
    parser.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                        help="XLA compilation of the training step (auto: Keras's choice, "
                             "off on a CPU-only TensorFlow; %(default)s)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import keras

    from pipeline.devices import precision_policy

    policy = precision_policy("gpu") if args.precision == "profile-gpu" else args.precision
    keras.mixed_precision.set_global_policy(policy)
    if args.synthetic:
        x, y = synthetic_images(args.synthetic)
    else:
        x, y = load_images(args.source, args.images)
    overrides = {"base_filters": args.base_filters} if args.base_filters else {}
    jit = {"auto": None, "on": True, "off": False}[args.jit]
    device = "gpu" if any("gpu" in str(d).lower() for d in _devices()) else "cpu"
    print(f"backend {keras.backend.backend()}, {device}, {len(x)} images, precision {policy}, "
          f"{overrides or 'family defaults'}, jit {args.jit}", flush=True)
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    peak = round(matmul_gflops(compute_dtype), 1)
    print(f"2048x2048 matmul in {compute_dtype}: {peak:,.0f} GFLOP/s (the training's peak)",
          flush=True)
    print("| family | batch | parameters | fit images/s | bare step images/s | feed ratio "
          "| predict images/s | training GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for family in args.families:
        for batch_size in args.batch_sizes:
            row = measure(family, x, y, batch_size, args.epochs, overrides, jit)
            results.append(row)
            print(f"| {family} | {batch_size} | {row['params']:,} | "
                  f"{row['train_images_per_s']:,.0f} | {row['bare_step_images_per_s']:,.0f} | "
                  f"{row['feed_ratio']:.2f} | {row['predict_images_per_s']:,.0f} | "
                  f"{row['train_gflop_per_s']:.0f} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"backend": keras.backend.backend(), "device": device,
                                        "precision": policy, "overrides": overrides,
                                        "images": len(x), "matmul_dtype": compute_dtype,
                                        "matmul_gflop_per_s": peak, "results": results},
                                       indent=1))
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
