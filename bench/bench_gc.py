"""How long the garbage collector's full collections take in one run of the CLI, or in the test
process, with the project's freezes or without them: the measurement behind them (bench/README.md,
"The garbage collector out of training's way").

Keras' ``clear_session``, which KerasTuner calls before every trial and the lessons before every
training, runs a full collection, and Python runs more of them as training allocates. The CLI
freezes what importing Keras made, the lessons also what each claim leaves alive, the tests what
each test leaves alive; ``--no-freeze`` (or ``BENCH_GC_NO_FREEZE=1`` for pytest) makes every
freeze a no-op, as before them.

    .venv/bin/python bench/bench_gc.py [--no-freeze] -- tune --family cnn --params ...
    PYTHONPATH=bench .venv/bin/python -m pytest -p bench_gc tests/test_tuning.py

One line of JSON on stderr at the end: wall seconds, full collections and their seconds.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

_full = {"collections": 0, "seconds": 0.0, "began": 0.0}
_started = time.perf_counter()


def _count(phase: str, info: dict) -> None:
    if info["generation"] != 2:
        return
    if phase == "start":
        _full["began"] = time.perf_counter()
    else:
        _full["collections"] += 1
        _full["seconds"] += time.perf_counter() - _full["began"]


def _report(freeze: bool) -> None:
    line = {"freeze": freeze, "wall_s": round(time.perf_counter() - _started, 1),
            "full_collections": _full["collections"],
            "full_collection_s": round(_full["seconds"], 1)}
    os.write(2, (json.dumps(line) + "\n").encode())  # past any capture of sys.stderr


def _install(freeze: bool) -> None:
    gc.callbacks.append(_count)
    if not freeze:
        gc.freeze = lambda: None


def pytest_sessionfinish(session, exitstatus):
    _report(not os.environ.get("BENCH_GC_NO_FREEZE"))


def main(argv: list[str]) -> int:
    ours, command = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    freeze = "--no-freeze" not in ours  # not the CLI's own arguments after --
    if not command:
        print("bench: give the CLI's arguments after --, e.g. -- tune --family cnn",
              file=sys.stderr)
        return 2
    _install(freeze)
    from pipeline.cli import main as cli

    try:
        return cli(command)
    finally:
        _report(freeze)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
elif "pytest" in sys.modules:  # loaded as a pytest plugin (-p bench_gc)
    _install(not os.environ.get("BENCH_GC_NO_FREEZE"))
