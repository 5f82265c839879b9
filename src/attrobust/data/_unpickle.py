"""A restricted unpickler for the pickled array files of the MNIST and CIFAR-10 distributions.

Pickles can call any importable function while they load. :class:`RestrictedUnpickler` resolves only the
globals those files need and refuses everything else before it could be called:

- numpy's array reconstructors: ``_reconstruct``, ``ndarray``, ``dtype`` (protocols 0-4) and ``_frombuffer``
  (protocol 5), under both ``numpy.core`` (numpy 1) and ``numpy._core`` (numpy 2) module names;
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


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_attr("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_attr("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): _numpy_attr("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): _numpy_attr("numeric", "_frombuffer"),
    ("numpy", "ndarray"): np.ndarray,
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
