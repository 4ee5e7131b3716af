"""The fast path to compiled sweeps must never hand an argument to a version
compiled for another kind of argument."""

import numpy as np
from numba import njit

from adjoint._fastcall import fast


@njit
def _weighted_sum(a, w):
    total = a.ravel()[0] * 0
    for i in range(a.size):
        total += a.ravel()[i] * w
    return total


def test_each_argument_kind_gets_its_own_compiled_version():
    f = fast(_weighted_sum)
    c = np.arange(6.0).reshape(2, 3)
    assert f(c, 2.0) == 30.0
    assert f(c + 1, 2.0) == 42.0  # same kind: the cached entry point
    assert len(f._entries) == 1
    fortran = np.asfortranarray(c)
    assert f(fortran, 1.0) == _weighted_sum.py_func(fortran, 1.0)
    readonly = c.copy()
    readonly.flags.writeable = False
    assert f(readonly, 1.0) == 15.0
    assert f(c + 1j, 1.0) == 15.0 + 6j
    assert f(c, 2) == 30.0  # an int weight is another kind
    assert len(f._entries) == 5
