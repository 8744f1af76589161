"""The Keras dtype policy a search trains in: asked for by name, or ``auto``, measured.

``auto`` on a GPU follows the profile (pipeline/devices.py: bfloat16 on GPUs with bfloat16
units under the gpu profile). On a CPU it times a few training steps of the family's default
model in float32 and in mixed bfloat16, interleaved, and takes bfloat16 only when it is at
least ``SPEEDUP_NEEDED`` times faster: some CPUs have bfloat16 units (AVX512_BF16, AMX) and
many do not, and oneDNN's speed differs by layer type. Its accuracy is not timed here: on a
CPU with AVX512_BF16, mixed bfloat16 trained the default CNN 1.77x faster and no less accurate
(validation, 3 paired seeds; bench/README.md, "This session's machine"). The bar sits just
above parity: there the full-data ``fit`` ran 1.21x faster while this timing read 1.10-1.38
from run to run, and a bar of 1.15 kept float32 in four default runs in a row; choosing
bfloat16 at near parity costs nothing its accuracy did not already pass. A CPU that says it
has no bfloat16 units (``/proc/cpuinfo``) is not timed: there bfloat16 ran 4-8x slower, and
timing the CNN's defaults both ways took 24 s (AVX2-only CPU, bench/README.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

CANDIDATES = ("float32", "mixed_bfloat16")
SPEEDUP_NEEDED = 1.05


def resolve(requested: str, profile: str, deterministic: bool, build, x, y) -> tuple[str, dict]:
    """The policy to train in and the measurement behind it ({} when nothing was timed).
    ``build()`` returns a compiled model under the current global policy."""
    from pipeline import devices

    if requested != "auto":
        return requested, {}
    if devices.gpu_capability() is not None or deterministic:
        # a timing must not decide a deterministic run
        return devices.precision_policy(profile), {}
    if cpu_bf16_units() is False:
        log.info("precision auto on this CPU: float32 (the CPU has no bfloat16 units; "
                 "not timed)")
        return "float32", {}
    try:
        rates = calibrate(build, x, y)
    except Exception as exc:  # noqa: BLE001 - the search reports a configuration's error itself
        log.warning("precision auto: the timing failed (%s); training in float32",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return "float32", {}
    chosen = choose(rates)
    log.info("precision auto on this CPU: %s (training images/s: %s)", chosen,
             ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    return chosen, rates


# CPU flags of bfloat16 arithmetic: x86 (AVX512_BF16, AMX) and Arm (BF16)
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_bf16_units(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU lists bfloat16 units among its flags (``cpuinfo``: the text of
    /proc/cpuinfo, read when None); None where it lists no flags (no /proc/cpuinfo: not
    Linux), and then the timing decides."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86, Arm
            flags.update(value.lower().split())
    return bool(flags & BF16_FLAGS) if flags else None


def choose(rates: dict[str, float]) -> str:
    """bfloat16 only when it clears the speed-up needed; float32 otherwise."""
    if rates.get("mixed_bfloat16", 0.0) >= SPEEDUP_NEEDED * rates["float32"]:
        return "mixed_bfloat16"
    return "float32"


def calibrate(build, x, y, steps: int = 3, rounds: int = 2,
              clear_ratio: float = 2.0) -> dict[str, float]:
    """Training images/s of ``build()``'s model on the batch (x, y) under each candidate
    policy: the best of up to ``rounds`` interleaved timings of ``steps`` steps after two
    warm-up steps (tracing). Stops after a round whose ratio is already clear (one policy
    ``clear_ratio`` times the other): a CPU without bfloat16 units runs it several times
    slower, and each of its steps costs seconds. Leaves the global policy as it found it."""
    import keras

    before = keras.mixed_precision.global_policy().name
    xb, yb = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    models, best = {}, dict.fromkeys(CANDIDATES, 0.0)
    try:
        for _ in range(rounds):
            for policy in CANDIDATES:
                # built and traced under its own policy: the graph Keras traces reads it
                keras.mixed_precision.set_global_policy(policy)
                if policy not in models:
                    models[policy] = build()
                    for _ in range(2):
                        models[policy].train_on_batch(xb, yb)
                started = time.perf_counter()
                for _ in range(steps):
                    models[policy].train_on_batch(xb, yb)  # returns host numbers: finished
                rate = steps * len(x) / (time.perf_counter() - started)
                best[policy] = max(best[policy], rate)
            low, high = sorted(best.values())
            if high >= clear_ratio * low:
                break
    finally:
        keras.mixed_precision.set_global_policy(before)
    return {k: round(v, 1) for k, v in best.items()}
