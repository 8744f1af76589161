"""Load CIFAR's pickle files without letting them run code.

A pickle can name any importable callable and call it while loading, so a crafted file could run
a payload. The CIFAR files only ever need numpy's array reconstruction, so exactly those globals
are admitted and everything else is refused before it is imported.
"""

import codecs
import io
import pickle
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

_ALLOWED = {
    # numpy arrays as written by numpy 1.x (the original files) and numpy 2.x
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1")
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals CIFAR files need."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def load_pickle(path: Path) -> dict:
    """Unpickle a CIFAR file into a dict with str keys; DataError if it is unsafe or broken."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        if str(exc).startswith("refused global"):
            raise DataError(
                f"{path}: unsafe pickle, {exc}; a CIFAR file needs only numpy arrays, "
                "so this file is refused and nothing in it was run"
            ) from None
        raise DataError(f"{path}: truncated or corrupt pickle ({exc})") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DataError(f"{path}: truncated or corrupt pickle ({reason})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in the pickle, found {type(obj).__name__}")
    return {_text(key): value for key, value in obj.items()}


def _text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value
