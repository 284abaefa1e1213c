"""Loading the pickles data sets are shipped as, without letting them run code.

``pickle.load`` can call any importable function named in the file. The CIFAR-100 and
mini-ImageNet pickles only need numpy arrays, lists, dicts and strings, so everything else
is refused: a tampered or mistaken file becomes a DataError instead of code execution.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from metalab.errors import DataError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 stores bytes
    ("collections", "OrderedDict"),
    ("builtins", "range"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which is not data")
        return super().find_class(module, name)


def load_pickle(data: bytes, source: Path, name: str, fix: str) -> Any:
    """Unpickle ``data`` (``name`` from ``source``); Python 2 strings are read as latin-1."""
    try:
        return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise DataError(f"{source}: {name} is refused as a data pickle ({err}): {fix}.") from err
    except Exception as err:  # truncated or garbled: any failure means the same to the user
        raise DataError(f"{source}: {name} is not a readable pickle ({err!r}): {fix}.") from err


def text_keys(blob: Any, source: Path, name: str, fix: str) -> dict[str, Any]:
    """A pickled dict with str keys (Python 2 pickles read with encoding='bytes' have bytes)."""
    if not isinstance(blob, dict):
        raise DataError(
            f"{source}: {name} holds a {type(blob).__name__}, not the expected dict: {fix}."
        )
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in blob.items()}


def require(blob: dict[str, Any], keys: tuple[str, ...], source: Path, name: str, fix: str) -> None:
    missing = [k for k in keys if k not in blob]
    if missing:
        raise DataError(
            f"{source}: {name} lacks the key(s) {', '.join(missing)} (it has "
            f"{', '.join(sorted(blob)) or 'none'}): {fix}."
        )
