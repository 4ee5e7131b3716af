"""Butcher tableaus of the explicit Runge–Kutta schemes, and the names of all
schemes an :class:`~adjoint.ODESequence` accepts.

A tableau ``(A, b, c)`` with ``s`` stages defines one step of size ``h``::

    K_i     = f(t + c_i h, x + h Σ_{j<i} A_ij K_j, p, u)     i = 0 … s-1
    x_new   = x + h Σ_i b_i K_i

Only explicit tableaus (strictly lower-triangular ``A``) run through the
stage-by-stage sweeps; the implicit schemes are separate one-stage methods
(:mod:`adjoint._integrators._implicit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "EXPLICIT_SCHEMES",
    "IMPLICIT_SCHEMES",
    "SCHEME_ORDERS",
    "Tableau",
]


@dataclass(frozen=True, eq=False)
class Tableau:
    """A Butcher tableau ``(A, b, c)`` of an explicit Runge–Kutta scheme.

    Parameters
    ----------
    A : array_like, shape (s, s)
        Stage coefficients; must be strictly lower triangular (explicit).
    b : array_like, shape (s,)
        Weights of the stages in the new state.
    c : array_like, shape (s,)
        Stage times as fractions of the step; usually the row sums of ``A``.
    name : str, optional
        Shown in messages and reprs.
    order : int, optional
        The classical order, if known (used by convergence studies).

    Raises
    ------
    ValueError
        If ``A`` is not a non-empty square matrix, ``b`` or ``c`` does not
        have one entry per stage, or a coefficient is not finite.
    TypeError
        If a coefficient is not a real number.

    Examples
    --------
    Ralston's second-order method:

    >>> from adjoint import Tableau
    >>> ralston = Tableau([[0, 0], [2 / 3, 0]], [1 / 4, 3 / 4], [0, 2 / 3],
    ...                   name="ralston", order=2)
    >>> ralston.n_stages, ralston.is_explicit
    (2, True)
    """

    A: np.ndarray
    b: np.ndarray
    c: np.ndarray
    name: str = "custom"
    order: int | None = field(default=None)

    def __post_init__(self):
        A = _coefficients("A", self.A, 2)
        s = A.shape[0]
        if A.shape != (s, s) or s == 0:
            raise ValueError(
                f"`A` must be a non-empty square matrix; got shape {A.shape}."
            )
        b = _coefficients("b", self.b, 1)
        c = _coefficients("c", self.c, 1)
        for name, vec in (("b", b), ("c", c)):
            if vec.shape != (s,):
                raise ValueError(
                    f"`{name}` has shape {vec.shape}; `A` has {s} stages, so `{name}` "
                    f"must have shape ({s},)."
                )
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)

    @property
    def n_stages(self) -> int:
        """Number of stages ``s``.

        Examples
        --------
        >>> from adjoint import Tableau
        >>> Tableau([[0.0]], [1.0], [0.0], name="euler").n_stages
        1
        """
        return int(self.b.shape[0])

    @property
    def is_explicit(self) -> bool:
        """True when ``A`` is strictly lower triangular.

        Only explicit tableaus run in an :class:`~adjoint.ODESequence`.

        Examples
        --------
        >>> from adjoint import Tableau
        >>> Tableau([[0.5]], [1.0], [0.5], name="midpoint").is_explicit
        False
        """
        return bool(np.all(np.triu(self.A) == 0.0))

    def __repr__(self) -> str:
        order = "" if self.order is None else f", order {self.order}"
        return f"Tableau({self.name!r}, {self.n_stages} stages{order})"


def _coefficients(name, value, ndim):
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must hold real numbers: {err}") from err
    if arr.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}-dimensional; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` holds a non-finite coefficient.")
    return np.ascontiguousarray(arr)


# ---- explicit tableaus ----

EULER = Tableau([[0.0]], [1.0], [0.0], name="euler", order=1)

HEUN = Tableau([[0.0, 0.0], [1.0, 0.0]], [0.5, 0.5], [0.0, 1.0], name="heun", order=2)

RK4 = Tableau(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.5, 0.0, 0.0, 0.0],
        [0.0, 0.5, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ],
    [1 / 6, 1 / 3, 1 / 3, 1 / 6],
    [0.0, 0.5, 0.5, 1.0],
    name="rk4",
    order=4,
)

# Dormand–Prince 5(4) [1]_ at fixed step with its fifth-order weights.  The
# seventh (first-same-as-last) stage only feeds the embedded error estimate,
# which a fixed step does not use, so it is left out: six stages per step.
# [1] J. R. Dormand and P. J. Prince, "A family of embedded Runge-Kutta
#     formulae", J. Comput. Appl. Math. 6 (1980) 19-26.
DOPRI5 = Tableau(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1 / 5, 0.0, 0.0, 0.0, 0.0, 0.0],
        [3 / 40, 9 / 40, 0.0, 0.0, 0.0, 0.0],
        [44 / 45, -56 / 15, 32 / 9, 0.0, 0.0, 0.0],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0.0, 0.0],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0.0],
    ],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
    [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0],
    name="dopri5",
    order=5,
)

EXPLICIT_SCHEMES = {"euler": EULER, "heun": HEUN, "rk4": RK4, "dopri5": DOPRI5}

# ---- implicit one-stage schemes ----
# name -> integer code of the compiled sweeps (adjoint._integrators._kernels)
IMPLICIT_SCHEMES = {"backward_euler": 0, "implicit_midpoint": 1, "crank_nicolson": 2}

SCHEME_ORDERS = {
    **{name: tab.order for name, tab in EXPLICIT_SCHEMES.items()},
    "backward_euler": 1,
    "implicit_midpoint": 2,
    "crank_nicolson": 2,
}
