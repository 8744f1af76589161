"""A quiet console: what a stage prints is the project's own progress, not TensorFlow's.

TensorFlow's C++ side writes start-up lines straight to file descriptor 2 (oneDNN notices,
"Could not find cuda drivers", "failed call to cuInit" on a machine without a GPU), some of
them before it reads ``TF_CPP_MIN_LOG_LEVEL``. So Keras is imported once, early, with that
descriptor pointed at a scratch file: nothing is shown if the import succeeds, everything if it
fails. ``--verbose`` skips all of this.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager


def quiet_native_logs() -> None:
    """Silence TensorFlow's C++ logging below fatal for this process and its children (DVC's
    stage commands inherit the environment); a value the user set stays."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_keras_quietly() -> None:
    """Import Keras (and its backend) with the start-up chatter of native code captured."""
    with _stderr_shown_only_on_failure():
        import keras  # noqa: F401


@contextmanager
def _stderr_shown_only_on_failure():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            scratch.seek(0)
            sys.stderr.write(scratch.read().decode(errors="replace"))
            raise
        _restore(saved)


def _restore(saved: int) -> None:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
