"""Call compiled sweeps without Numba's per-call argument typing.

A Numba dispatcher types every argument on every call before it picks the
compiled version; for the tuples of first-class function pointers the sweeps
take, that typing costs more than a short sweep itself (measured: 0.34 ms of
a 0.34 ms Lotka–Volterra RK4 forward sweep of 400 steps, against 0.16 ms
through the compiled entry point).  :func:`fast` wraps a dispatcher so that
the first call with a given *kind* of arguments goes through Numba (compiling
or loading from the cache as usual) and later calls with the same kind go
straight to that compiled version.

The kind of an argument is what decides its Numba type: for an array its
dtype, dimensions, layout flags and writeability; for a kernel its signature;
for a tuple the kinds of its items; for anything else its Python type.
"""

from __future__ import annotations

import numpy as np


def _kind(value):
    if isinstance(value, np.ndarray):
        flags = value.flags
        return (
            "a",
            value.dtype.str,
            value.ndim,
            flags.c_contiguous,
            flags.f_contiguous,
            flags.writeable,
            flags.aligned,
        )
    if isinstance(value, tuple):
        return ("t",) + tuple(_kind(item) for item in value)
    signature = getattr(value, "_sig", None)  # a numba cfunc
    if signature is not None:
        return ("f", str(signature))
    return type(value)


class _Fast:
    def __init__(self, dispatcher):
        self._dispatcher = dispatcher
        self._entries = {}
        self.__doc__ = dispatcher.__doc__
        self.__name__ = getattr(dispatcher, "__name__", "sweep")

    def __call__(self, *args):
        key = tuple(_kind(a) for a in args)
        entry = self._entries.get(key)
        if entry is not None:
            return entry(*args)
        result = self._dispatcher(*args)
        signature = tuple(self._dispatcher.typeof_pyval(a) for a in args)
        compiled = self._dispatcher.overloads.get(signature)
        if compiled is not None:
            self._entries[key] = compiled.entry_point
        return result


def fast(dispatcher):
    """Wrap a Numba dispatcher as described in the module docstring."""
    return _Fast(dispatcher)
