"""Validators shared by the public entry points.

Each takes a user value and the name it arrived under, and returns the
cleaned value (a C-contiguous float64 array, a positive int, ...) or raises
with a message naming the argument, what was expected and what arrived.
"""

from __future__ import annotations

import numpy as np


def real_array(
    name: str, value, shape: tuple | None = None, *, what: str = ""
) -> np.ndarray:
    """Return ``value`` as a finite C-contiguous float64 array of ``shape``.

    ``what`` explains where the expected shape comes from (for example
    ``"the system has n = 3"``) and is put in the message.
    """
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"`{name}` could not be read as an array: {err}") from err
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise TypeError(
            f"`{name}` must hold real numbers; got an array of dtype {arr.dtype}."
        )
    if arr.dtype.kind == "c":
        raise TypeError(
            f"`{name}` must be real; got dtype {arr.dtype}. Complex inputs are "
            "used internally by the complex-step check only."
        )
    if arr.dtype.kind == "b":
        raise TypeError(f"`{name}` must hold real numbers; got booleans.")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if shape is not None and arr.shape != tuple(shape):
        reason = f"; {what}, so" if what else "; it"
        raise ValueError(
            f"`{name}` has shape {arr.shape}{reason} must have shape {tuple(shape)}."
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        index_text = index[0] if len(index) == 1 else index
        raise ValueError(
            f"`{name}` contains a non-finite value ({arr[index]}) at index "
            f"{index_text}."
        )
    return arr


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    """Return ``value`` as an int at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value}.")
    return int(value)


def nonnegative_int(name: str, value) -> int:
    return positive_int(name, value, minimum=0)


def choice(name: str, value, options) -> str:
    if value not in options:
        raise ValueError(
            f"`{name}` must be one of {', '.join(repr(o) for o in options)}; "
            f"got {value!r}."
        )
    return value


def finite_float(name: str, value) -> float:
    """Return ``value`` as a finite float."""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    return value


def positive_float(name: str, value) -> float:
    """Return ``value`` as a finite float greater than zero."""
    value = finite_float(name, value)
    if value <= 0.0:
        raise ValueError(f"`{name}` must be positive, got {value}.")
    return value
