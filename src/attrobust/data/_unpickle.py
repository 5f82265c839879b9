"""A restricted unpickler for the pickled array files of the MNIST and CIFAR-10 distributions.

Pickles can call any importable function while they load. :class:`RestrictedUnpickler` resolves only the
globals those files need and refuses everything else before it could be called:

- numpy's array reconstructors: ``_reconstruct``, ``ndarray``, ``dtype`` (protocols 0-4) and ``_frombuffer``
  (protocol 5), under both ``numpy.core`` (numpy 1) and ``numpy._core`` (numpy 2) module names; an array that
  ``_reconstruct`` or ``ndarray`` would allocate before its data is set is bounded by
  :data:`MAX_ALLOCATED_BYTES` (numpy's own pickles build an empty array and fill it from the pickle's bytes, so a
  tiny pickle asking for a gigabyte is refused before anything is allocated);
- ``_codecs.encode`` restricted to the latin-1 codec and ``bytes()`` without arguments: the two ways Python 3
  writes ``bytes`` objects into a protocol-2 pickle.

Dicts, lists, tuples, strings, bytes and numbers need no globals at all.
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np


def _numpy_attr(submodule: str, name: str) -> Any:
    """``numpy._core.<submodule>.<name>`` (numpy 2) or ``numpy.core.<submodule>.<name>`` (numpy 1)."""
    try:
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it; any codec other than latin-1 is refused."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(
            f"refused _codecs.encode call: expected (str, 'latin1'), got ({type(text).__name__}, {encoding!r})"
        )
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` as protocol-2 pickles write ``b""``; arguments (``bytes(10**12)``, ...) are refused."""
    if args:
        raise pickle.UnpicklingError(f"refused bytes{args!r}: expected bytes() without arguments")
    return b""


# What one constructor call of a pickle may allocate before the array's data is set: numpy writes
# ``_reconstruct(ndarray, (0,), b"b")`` (nothing) and then fills the array from the pickle's own bytes, whose size
# the file bounds; a larger request is a pickle asking for memory it does not carry.
MAX_ALLOCATED_BYTES = 1 << 20


def _check_allocation(shape: Any, dtype: Any, what: str) -> None:
    """Refuse an array ``shape`` x ``dtype`` built by ``what`` unless its shape is a small tuple of non-negative
    ints (or one int) and it holds at most :data:`MAX_ALLOCATED_BYTES`."""
    dims = (shape,) if isinstance(shape, int) else shape
    if not isinstance(dims, tuple) or len(dims) > 32 or not all(type(d) is int and d >= 0 for d in dims):
        raise pickle.UnpicklingError(f"refused {what}: expected a shape of at most 32 sizes >= 0, got {shape!r}")
    try:
        itemsize = np.dtype(dtype).itemsize
    except (TypeError, ValueError) as err:
        raise pickle.UnpicklingError(f"refused {what}: expected a numpy dtype, got {dtype!r} ({err})") from None
    size = itemsize * int(np.prod(dims, dtype=object))
    if size > MAX_ALLOCATED_BYTES:
        raise pickle.UnpicklingError(
            f"refused {what} of shape {dims} and dtype {np.dtype(dtype)}: expected at most {MAX_ALLOCATED_BYTES} "
            f"bytes allocated before the array's data is read, got {size} bytes"
        )


_RECONSTRUCT = _numpy_attr("multiarray", "_reconstruct")


def _ndarray(shape: Any, dtype: Any = float, *args: Any) -> np.ndarray:
    """``numpy.ndarray(shape, dtype, ...)`` as a pickle may call it, bounded by :func:`_check_allocation`."""
    _check_allocation(shape, dtype, "numpy.ndarray")
    return np.ndarray(shape, dtype, *args)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct(ndarray, shape, dtype)`` (the empty array a pickle then fills), for plain arrays only
    and bounded by :func:`_check_allocation`."""
    if subtype is not _ndarray and subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refused _reconstruct of {subtype!r}: expected numpy.ndarray")
    _check_allocation(shape, dtype, "numpy _reconstruct")
    return _RECONSTRUCT(np.ndarray, shape, dtype)


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numpy_attr("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): _numpy_attr("numeric", "_frombuffer"),
    ("numpy", "ndarray"): _ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in :data:`ALLOWED_GLOBALS` (numpy array reconstructors and
    the latin-1 ``bytes`` helpers of protocol 2).

    Any other global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` naming it, before
    it could be called.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: expected only numpy array reconstructors and bytes helpers "
                f"({allowed})"
            ) from None


def restricted_loads(data: bytes, encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    ``encoding`` decodes Python-2 ``str`` objects: ``"latin1"`` (MNIST: strings and array buffers) or
    ``"bytes"`` (CIFAR-10: keeps the dictionary keys as ``bytes``, as in the original batch files).
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
