"""State constraints with adjoint Jacobians, and the bridge to SciPy's optimisers.

A :class:`Constraint` is a function ``c(x_k, p)`` of the state at chosen steps
(the final state for a terminal constraint, every state for a path
constraint) with bounds ``lower ≤ c ≤ upper`` (equal bounds make an
equality).  Composed with the sequence, ``c(x_k(w), p(w))`` is a function of
the decision variables ``w`` of a :class:`~adjoint.ControlProblem`; its
Jacobian comes from the same machinery as the cost gradient:

- reverse mode, one adjoint sweep per constraint row, with the cotangent
  ``∂c_i/∂x_k`` placed on state ``k``;
- forward mode, one tangent sweep per unknown, reading every row's
  ``∂c/∂x_k · ẋ_k`` off the tangent states; chosen when there are fewer
  unknowns than rows (many path constraints).

:func:`optimise` hands a problem to :func:`scipy.optimize.minimize`: with
SLSQP or trust-constr the constraints go in natively; with the unconstrained
methods (L-BFGS-B, BFGS, ...) they are folded into the cost by a quadratic
penalty or an augmented Lagrangian, whose gradient ``∇J + Σ_i y_i ∇c_i`` still
costs a single adjoint sweep.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import BFGS, NonlinearConstraint, minimize
from scipy.sparse.linalg import LinearOperator, cg

from ._check import COMPLEX_STEP_H, check_gradients, relative_error
from ._control import ControlResult, progress_caller
from ._errors import SweepError

__all__ = [
    "Constraint",
    "ConstraintSet",
    "check_control_problem",
    "final_state",
    "optimise",
    "path_inequality",
    "state_bound",
    "terminal_equality",
    "terminal_inequality",
]

logger = logging.getLogger(__name__)

# Tolerances and factors of the penalty / augmented-Lagrangian outer loop.
PENALTY_START = 10.0  # first weight μ on the squared violations
PENALTY_GROWTH = 10.0  # μ ← growth · μ when the violation does not shrink enough
PENALTY_SUFFICIENT_DECREASE = 0.25  # "enough": violation below this × previous
PENALTY_MAX_OUTER = 30
CONSTRAINT_TOL = 1e-8  # default largest violation accepted at a solution
# Complex-step Jacobian check of constraints (relative, DESIGN.md section 2).
CONSTRAINT_JACOBIAN_RTOL = 1e-10

# Options used unless the caller gives them: SciPy's defaults stop early (SLSQP
# at ftol 1e-6, L-BFGS-B at a projected gradient of 1e-5), far from the 1e-8
# agreement the reference problems are held to.
DEFAULT_OPTIONS = {
    "slsqp": {"ftol": 1e-12, "maxiter": 1000},
    "trust-constr": {"gtol": 1e-10, "xtol": 1e-13, "maxiter": 5000},
    "l-bfgs-b": {"gtol": 1e-10, "ftol": 1e-15, "maxiter": 20000},
    "bfgs": {"gtol": 1e-9, "maxiter": 20000},
    "tnc": {"gtol": 1e-10, "ftol": 1e-15, "maxfun": 20000},
}

_METHODS_WITH_CONSTRAINTS = ("slsqp", "trust-constr")
_METHODS_WITH_BOUNDS = (
    "l-bfgs-b",
    "tnc",
    "slsqp",
    "trust-constr",
    "powell",
    "nelder-mead",
    "cobyla",
    "cobyqa",
)
_GRADIENT_FREE = ("nelder-mead", "powell", "cobyla", "cobyqa")
_HANDLINGS = ("augmented-lagrangian", "penalty")


# ---- constraints ----


class Constraint:
    """A constraint ``lower ≤ c(x_k, p) ≤ upper`` on the states at some steps.

    Parameters
    ----------
    fun : callable
        ``fun(x, p) -> array_like, shape (q,)``: the constraint at one state
        ``x`` (shape (n,)) and the full parameter vector ``p``.  Written with
        NumPy arithmetic it also runs on complex input, which the default
        Jacobian and the complex-step check use.
    jac : callable, optional
        ``jac(x, p) -> (dc_dx, dc_dp)`` with shapes (q, n) and (q, n_p).
        Default: complex step on ``fun`` (exact to rounding, ``n + n_p``
        complex evaluations per step); give ``jac`` when ``fun`` is not
        complex-safe (``abs``, ``max``, comparisons on ``x``).
    steps : 'final', 'all' or sequence of int
        The states it applies to: ``'final'`` is ``x_N`` (a terminal
        constraint), ``'all'`` is ``x_1 … x_N`` (a path constraint; ``x_0`` is
        fixed), a list names steps (negative counts from the end).
    lower, upper : float or array_like of shape (q,)
        Bounds; equal bounds make an equality, ``±inf`` drops a side.
    name : str, optional
        Label for reports (default the name of ``fun``).

    Raises
    ------
    TypeError
        If ``fun`` (or a given ``jac``) is not callable.  Steps, sizes and
        bounds are checked when a :class:`ControlProblem` binds the
        constraint (see :class:`ConstraintSet`).

    See Also
    --------
    terminal_equality, terminal_inequality, path_inequality, state_bound,
    final_state : shortcuts for common cases.

    Examples
    --------
    A bound ``x_0² + x_1² ≤ 1`` at every step; :meth:`local` gives the value
    and its partial derivatives at one state (here by complex step):

    >>> import numpy as np
    >>> from adjoint import Constraint
    >>> def radius(x, p):
    ...     return x[0] ** 2 + x[1] ** 2
    >>> c = Constraint(radius, steps="all", lower=-np.inf, upper=1.0)
    >>> c
    Constraint('radius', steps='all')
    >>> value, dc_dx, dc_dp = c.local(np.array([0.6, 0.8]), np.zeros(0))
    >>> value.round(12).tolist(), dc_dx.round(12).tolist(), dc_dp.shape
    ([1.0], [[1.2, 1.6]], (1, 0))
    """

    def __init__(
        self,
        fun: Callable,
        jac: Callable | None = None,
        *,
        steps="final",
        lower: ArrayLike = 0.0,
        upper: ArrayLike = 0.0,
        name: str | None = None,
    ):
        if not callable(fun):
            raise TypeError(f"`fun` must be callable, got {fun!r}.")
        if jac is not None and not callable(jac):
            raise TypeError(f"`jac` must be callable or None, got {jac!r}.")
        self.fun = fun
        self.jac = jac
        self.steps = steps
        self.lower = lower
        self.upper = upper
        self.name = name or getattr(fun, "__name__", "c")

    def local(self, x, p) -> tuple[NDArray, NDArray, NDArray]:
        """``(c, dc_dx, dc_dp)`` at one state (complex step when no ``jac``).

        Parameters
        ----------
        x : ndarray, shape (n,)
            The state.
        p : ndarray, shape (n_p,)
            The full parameter vector.

        Returns
        -------
        c : ndarray, shape (q,)
        dc_dx : ndarray, shape (q, n)
        dc_dp : ndarray, shape (q, n_p)
        """
        c = np.atleast_1d(np.asarray(self.fun(x, p), dtype=np.float64))
        if self.jac is not None:
            dc_dx, dc_dp = self.jac(x, p)
            dc_dx = np.asarray(dc_dx, dtype=np.float64).reshape(c.size, x.size)
            dc_dp = np.asarray(dc_dp, dtype=np.float64).reshape(c.size, p.size)
            return c, dc_dx, dc_dp
        n, n_p = x.size, p.size
        dc = np.empty((c.size, n + n_p))
        xc = x.astype(np.complex128)
        pc = p.astype(np.complex128)
        for j in range(n + n_p):
            target, i = (xc, j) if j < n else (pc, j - n)
            target[i] += 1j * COMPLEX_STEP_H
            dc[:, j] = np.atleast_1d(np.asarray(self.fun(xc, pc))).imag / COMPLEX_STEP_H
            target[i] -= 1j * COMPLEX_STEP_H
        return c, dc[:, :n], dc[:, n:]

    def __repr__(self) -> str:
        return f"Constraint({self.name!r}, steps={self.steps!r})"


def terminal_equality(
    fun, value: ArrayLike = 0.0, *, jac=None, name=None
) -> Constraint:
    """``c(x_N, p) = value``: an equality on the final state.

    Parameters
    ----------
    fun : callable
        ``fun(x, p) -> array_like, shape (q,)`` (see :class:`Constraint`).
    value : float or array_like of shape (q,)
        The value ``c`` must take (default 0).
    jac : callable, optional
        ``jac(x, p) -> (dc_dx, dc_dp)``; default complex step on ``fun``.
    name : str, optional
        Label for reports.

    Returns
    -------
    Constraint

    Raises
    ------
    TypeError
        If ``fun`` or ``jac`` is not callable.

    Examples
    --------
    >>> from adjoint import terminal_equality
    >>> c = terminal_equality(lambda x, p: x[0] - x[1], 2.0, name="gap")
    >>> c, c.lower, c.upper
    (Constraint('gap', steps='final'), 2.0, 2.0)
    """
    return Constraint(fun, jac, steps="final", lower=value, upper=value, name=name)


def terminal_inequality(
    fun, *, lower=-np.inf, upper=0.0, jac=None, name=None
) -> Constraint:
    """``lower ≤ c(x_N, p) ≤ upper`` (default ``c ≤ 0``) on the final state.

    Parameters
    ----------
    fun : callable
        ``fun(x, p) -> array_like, shape (q,)`` (see :class:`Constraint`).
    lower, upper : float or array_like of shape (q,)
        Bounds; ``±inf`` drops a side.
    jac : callable, optional
        ``jac(x, p) -> (dc_dx, dc_dp)``; default complex step on ``fun``.
    name : str, optional
        Label for reports.

    Returns
    -------
    Constraint

    Raises
    ------
    TypeError
        If ``fun`` or ``jac`` is not callable.

    Examples
    --------
    >>> from adjoint import terminal_inequality
    >>> c = terminal_inequality(lambda x, p: x[:1], upper=5.0, name="height")
    >>> c.steps, c.lower, c.upper
    ('final', -inf, 5.0)
    """
    return Constraint(fun, jac, steps="final", lower=lower, upper=upper, name=name)


def path_inequality(
    fun, *, lower=-np.inf, upper=0.0, steps="all", jac=None, name=None
) -> Constraint:
    """``lower ≤ c(x_k, p) ≤ upper`` at every state ``x_1 … x_N`` (default).

    Each step adds ``q`` rows to the problem's constraints, so a path
    constraint on a long sequence has many rows; :meth:`ConstraintSet.jacobian`
    then prefers forward mode (one tangent sweep per unknown).

    Parameters
    ----------
    fun : callable
        ``fun(x, p) -> array_like, shape (q,)`` (see :class:`Constraint`).
    lower, upper : float or array_like of shape (q,)
        Bounds (default ``c ≤ 0``); ``±inf`` drops a side.
    steps : 'all', 'final' or sequence of int
        The states it applies to (default ``'all'``, ``x_1 … x_N``).
    jac : callable, optional
        ``jac(x, p) -> (dc_dx, dc_dp)``; default complex step on ``fun``.
    name : str, optional
        Label for reports.

    Returns
    -------
    Constraint

    Raises
    ------
    TypeError
        If ``fun`` or ``jac`` is not callable.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import path_inequality
    >>> c = path_inequality(lambda x, p: x[0] * x[1], lower=-1.0, upper=1.0)
    >>> c.steps
    'all'
    >>> value, dc_dx, _ = c.local(np.array([2.0, 3.0]), np.zeros(0))
    >>> value.tolist(), dc_dx.round(12).tolist()
    ([6.0], [[3.0, 2.0]])
    """
    return Constraint(fun, jac, steps=steps, lower=lower, upper=upper, name=name)


def state_bound(
    index: int, *, lower=-np.inf, upper=np.inf, steps="all", name=None
) -> Constraint:
    """``lower ≤ x_k[index] ≤ upper`` along the path (a bound on one state).

    The constraint has an exact Jacobian (one 1 in ``dc_dx``), so it needs no
    complex step.  A bound on a control is not a state bound: give it to
    :class:`ControlProblem` as ``u_lower`` and ``u_upper``.

    Parameters
    ----------
    index : int
        Which state entry is bounded.
    lower, upper : float
        Bounds (default unbounded); ``±inf`` drops a side.
    steps : 'all', 'final' or sequence of int
        The states it applies to (default ``'all'``, ``x_1 … x_N``).
    name : str, optional
        Label for reports (default ``'x[index] bound'``).

    Returns
    -------
    Constraint

    Raises
    ------
    TypeError
        If ``index`` is not a number.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import state_bound
    >>> c = state_bound(1, upper=2.0)
    >>> c
    Constraint('x[1] bound', steps='all')
    >>> value, dc_dx, _ = c.local(np.array([0.5, 3.0]), np.zeros(0))
    >>> value.tolist(), dc_dx.tolist()
    ([3.0], [[0.0, 1.0]])
    """
    index = int(index)

    def fun(x, p):
        return x[index : index + 1]

    def jac(x, p):
        dc_dx = np.zeros((1, x.size))
        dc_dx[0, index] = 1.0
        return dc_dx, np.zeros((1, p.size))

    return Constraint(
        fun,
        jac,
        steps=steps,
        lower=lower,
        upper=upper,
        name=name or f"x[{index}] bound",
    )


def final_state(values: ArrayLike, indices=None, *, name=None) -> Constraint:
    """``x_N[indices] = values``: fix (some of) the final state.

    Parameters
    ----------
    values : float or array_like, shape (q,)
        The final values.
    indices : int or sequence of int, optional
        Which state entries they fix (default the first ``q``).
    name : str, optional
        Label for reports (default ``'final state'``).

    Returns
    -------
    Constraint
        An equality with an exact Jacobian.

    Raises
    ------
    ValueError
        If ``indices`` and ``values`` differ in length.

    Examples
    --------
    Fix the final velocity ``x_N[1] = 0``:

    >>> import numpy as np
    >>> from adjoint import final_state
    >>> c = final_state(0.0, indices=1)
    >>> c, c.lower.tolist()
    (Constraint('final state', steps='final'), [0.0])
    >>> value, dc_dx, _ = c.local(np.array([0.5, 3.0]), np.zeros(0))
    >>> value.tolist(), dc_dx.tolist()
    ([3.0], [[0.0, 1.0]])
    """
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    idx = np.arange(values.size) if indices is None else np.atleast_1d(indices)
    idx = np.asarray(idx, dtype=np.intp)
    if idx.shape != values.shape:
        raise ValueError(
            f"`indices` has {idx.size} entries and `values` {values.size}; give "
            "one value per fixed state."
        )

    def fun(x, p):
        return x[idx]

    def jac(x, p):
        dc_dx = np.zeros((idx.size, x.size))
        dc_dx[np.arange(idx.size), idx] = 1.0
        return dc_dx, np.zeros((idx.size, p.size))

    return Constraint(
        fun, jac, steps="final", lower=values, upper=values, name=name or "final state"
    )


# ---- the constraints of one problem ----


class ConstraintSet:
    """All constraints of a :class:`~adjoint.ControlProblem` as one vector ``c(w)``.

    Rows stack constraint by constraint, step by step within a constraint.
    Values and local partial derivatives are computed once per ``w`` and
    reused by :meth:`values`, :meth:`jacobian` and :meth:`vjp`.
    :class:`ControlProblem` builds one as its ``constraints`` attribute; there
    is rarely a reason to build one directly.

    Parameters
    ----------
    problem : ControlProblem
        The problem whose states the constraints read.
    constraints : Constraint or sequence of Constraint
        The constraints (none by default).

    Attributes
    ----------
    lower, upper : ndarray, shape (n_rows,)
        Bounds of every row.
    names : list of str
        A label per row (``'name[j] at step k'``).
    n_rows : int
        Number of rows; also ``len(set)``.
    is_equality : ndarray of bool, shape (n_rows,)
        Rows whose bounds are equal.

    Raises
    ------
    TypeError
        If an entry of ``constraints`` is not a :class:`Constraint`.
    ValueError
        If a constraint names a step outside ``0 … N``, has bounds of the
        wrong size or holding NaN, or a lower bound above its upper bound.

    Examples
    --------
    The problem of the :class:`ControlProblem` example with ``x_N = 1`` and
    ``x_k ≤ 0.4`` at every step: five rows.

    >>> import adjoint
    >>> def step(k, x, theta, p, consts, out):
    ...     out[0] = x[0] + consts[0] * theta[0]
    ...     return 0
    >>> def step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    ...     x_bar[0] += lam[0]
    ...     theta_bar[0] += consts[0] * lam[0]
    ...     return 0
    >>> def cost(k, x, theta, p, consts, data):
    ...     return consts[0] * theta[0] ** 2
    >>> def cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    ...     theta_bar[0] += g_bar * 2.0 * consts[0] * theta[0]
    ...     return 0
    >>> seq = adjoint.Sequence(step, step_vjp, n=1, N=4, m=1, consts=[0.25],
    ...                        running_cost=cost, running_cost_vjp=cost_vjp)
    >>> problem = adjoint.ControlProblem(
    ...     seq, [0.0],
    ...     constraints=[adjoint.final_state([1.0]), adjoint.state_bound(0, upper=0.4)])
    >>> cons = problem.constraints
    >>> len(cons), cons.names[1]
    (5, 'x[0] bound[0] at step 1')
    >>> w = problem.pack(0.5)
    >>> cons.values(w).tolist()
    [0.5, 0.125, 0.25, 0.375, 0.5]
    >>> cons.violation(w)
    0.5
    >>> cons.jacobian(w).tolist()[0]  # dx_N/du_k = h
    [0.25, 0.25, 0.25, 0.25]
    """

    def __init__(self, problem, constraints=()):
        if isinstance(constraints, Constraint):
            constraints = [constraints]
        self.problem = problem
        self.constraints = list(constraints)
        for c in self.constraints:
            if not isinstance(c, Constraint):
                raise TypeError(
                    f"`constraints` must hold Constraint objects, got {c!r}; wrap a "
                    "function with adjoint.Constraint(fun, ...)."
                )

        # Bind each constraint: its steps, its size q and its bounds
        N = problem.N
        x0, p0 = problem.x0, problem.p
        self.blocks = []  # (constraint, steps, q)
        lower, upper, names = [], [], []
        for c in self.constraints:
            steps = _steps(c.steps, N, c.name)
            q = np.atleast_1d(np.asarray(c.fun(x0, p0))).size
            lo = _broadcast(c.lower, q, f"lower of {c.name}")
            hi = _broadcast(c.upper, q, f"upper of {c.name}")
            if (lo > hi).any():
                j = int(np.flatnonzero(lo > hi)[0])
                raise ValueError(
                    f"Constraint `{c.name}` has lower > upper in row {j} "
                    f"({lo[j]:g} > {hi[j]:g})."
                )
            self.blocks.append((c, steps, q))
            for k in steps:
                lower.append(lo)
                upper.append(hi)
                names += [f"{c.name}[{j}] at step {k}" for j in range(q)]
        self.lower = np.concatenate(lower) if lower else np.zeros(0)
        self.upper = np.concatenate(upper) if upper else np.zeros(0)
        self.names = names
        self.n_rows = int(self.lower.size)
        self.is_equality = self.lower == self.upper
        self._cache_key = None
        self._cache = None

    def __len__(self) -> int:
        return self.n_rows

    def __bool__(self) -> bool:
        return self.n_rows > 0

    # ---- values and local partials ----

    def _local(self, w):
        w = self.problem._checked(w)
        key = w.tobytes()
        if self._cache_key == key:
            return self._cache
        traj = self.problem.trajectory(w)
        _, p = self.problem.unpack(w)
        values = np.empty(self.n_rows)
        parts = []  # (k, row slice, dc_dx, dc_dp)
        row = 0
        for c, steps, q in self.blocks:
            for k in steps:
                val, dc_dx, dc_dp = c.local(np.asarray(traj.xs[k]), p)
                if val.size != q:
                    raise ValueError(
                        f"Constraint `{c.name}` returned {val.size} values at step "
                        f"{k} but {q} at x_0; its size must not change."
                    )
                values[row : row + q] = val
                parts.append((k, slice(row, row + q), dc_dx, dc_dp))
                row += q
        self._cache_key, self._cache = key, (values, parts)
        return values, parts

    def values(self, w) -> NDArray:
        """``c(w)``, shape (n_rows,)."""
        return self._local(w)[0].copy()

    def violation(self, w) -> float:
        """Largest violation ``max(lower - c, c - upper, 0)`` over all rows."""
        if not self.n_rows:
            return 0.0
        c = self._local(w)[0]
        return float(max(0.0, np.max(self.lower - c), np.max(c - self.upper)))

    # ---- derivatives through the sequence ----

    def vjp(self, w, y, cost_weight: float = 0.0) -> NDArray:
        """``Σ_i y_i ∇c_i(w) + cost_weight ∇J(w)``: one adjoint sweep."""
        problem = self.problem
        y = np.asarray(y, dtype=np.float64)
        _, parts = self._local(w)
        xs_bar = np.zeros((problem.N + 1, problem.n))
        p_bar = np.zeros(problem.n_p)
        for k, rows, dc_dx, dc_dp in parts:
            xs_bar[k] += y[rows] @ dc_dx
            p_bar += y[rows] @ dc_dp
        grad = problem.vjp(w, xs_bar, cost_weight)
        grad[problem.n_nodes * problem.m :] += p_bar[problem.free_p]
        return grad

    def jacobian(self, w, *, mode: str = "auto") -> NDArray:
        """``dc/dw``, shape (n_rows, size).

        Parameters
        ----------
        mode : {'auto', 'forward', 'reverse'}
            ``'reverse'``: one adjoint sweep per row; ``'forward'``: one
            tangent sweep per unknown; ``'auto'`` takes forward mode when there
            are fewer unknowns than rows and the sequence has tangents.
        """
        if mode not in ("auto", "forward", "reverse"):
            raise ValueError(
                f"`mode` must be 'auto', 'forward' or 'reverse'; got {mode!r}."
            )
        problem = self.problem
        if mode == "auto":
            fewer_unknowns = problem.size < self.n_rows
            mode = "forward" if fewer_unknowns and problem.has_tangent else "reverse"
        _, parts = self._local(w)
        jac = np.zeros((self.n_rows, problem.size))
        n_u = problem.n_nodes * problem.m
        p_part = np.zeros((self.n_rows, len(problem.free_p)))
        for _, rows, _, dc_dp in parts:
            p_part[rows] = dc_dp[:, problem.free_p]
        if mode == "reverse":
            # One adjoint sweep per row: cotangent ∂c_i/∂x_k on state k
            xs_bar = np.zeros((problem.N + 1, problem.n))
            for k, rows, dc_dx, _ in parts:
                for j, i in enumerate(range(rows.start, rows.stop)):
                    xs_bar[k] = dc_dx[j]
                    jac[i] = problem.vjp(w, xs_bar, 0.0)
                    xs_bar[k] = 0.0
        else:
            # One tangent sweep per unknown: row block ∂c/∂x_k · ẋ_k
            v = np.zeros(problem.size)
            for j in range(problem.size):
                v[j] = 1.0
                xs_tan, _ = problem.jvp(w, v)
                for k, rows, dc_dx, _ in parts:
                    jac[rows, j] = dc_dx @ np.asarray(xs_tan[k])
                v[j] = 0.0
        jac[:, n_u:] += p_part
        return jac

    # ---- complex step ----

    def values_complex(self, w) -> NDArray:
        """``c(w)`` on complex ``w`` through the complex forward sweep."""
        xs, _ = self.problem.fun_complex(w)
        _, p = self.problem.unpack(np.asarray(w, dtype=np.complex128))
        out = []
        for c, steps, _ in self.blocks:
            for k in steps:
                out.append(np.atleast_1d(np.asarray(c.fun(xs[k], p))))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.complex128)

    def check_jacobian(
        self, w, *, mode: str = "auto", n_directions: int = 3, rng=None
    ) -> float:
        """Relative error of ``(dc/dw) v`` against complex step along random ``v``.

        Each direction costs one complex forward sweep; the constraint
        functions must be complex-safe.
        """
        rng = np.random.default_rng(4) if rng is None else rng
        w = self.problem._checked(w)
        jac = self.jacobian(w, mode=mode)
        V = rng.standard_normal((n_directions, self.problem.size))
        ref = np.array(
            [
                self.values_complex(w + 1j * COMPLEX_STEP_H * v).imag / COMPLEX_STEP_H
                for v in V
            ]
        )
        return relative_error(V @ jac.T, ref)


def _steps(steps, N, name) -> list[int]:
    if isinstance(steps, str):
        if steps == "final":
            return [N]
        if steps == "all":
            return list(range(1, N + 1))
        raise ValueError(
            f"`steps` of constraint `{name}` is {steps!r}; use 'final', 'all' or "
            "a list of step indices."
        )
    out = []
    for k in np.atleast_1d(steps):
        k = int(k)
        k = N + 1 + k if k < 0 else k
        if not 0 <= k <= N:
            raise ValueError(
                f"Constraint `{name}` names step {k}; "
                f"states are numbered 0 … N = {N}."
            )  # fmt: skip
        out.append(k)
    if not out:
        raise ValueError(f"Constraint `{name}` applies to no step.")
    return out


def _broadcast(value, q, what) -> NDArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(q, float(arr))
    if arr.shape != (q,):
        raise ValueError(
            f"The {what} has shape {arr.shape}; expected one number or ({q},)."
        )
    if np.isnan(arr).any():
        raise ValueError(f"The {what} holds NaN; use ±inf for no bound.")
    return arr


# ---- optimisers ----


def optimise(
    problem,
    w0: ArrayLike | None = None,
    *,
    method: str | None = None,
    constraint_handling: str | None = None,
    options: dict | None = None,
    tol: float | None = None,
    constraint_tol: float = CONSTRAINT_TOL,
    jacobian_mode: str = "auto",
    progress=None,
) -> ControlResult:
    """Minimise a :class:`~adjoint.ControlProblem` with SciPy, with its constraints.

    Everyday use is ``optimise(problem, w0)``: SLSQP when the problem has
    constraints, L-BFGS-B when it has none.

    Parameters
    ----------
    problem : ControlProblem
    w0 : array_like, shape (size,), optional
        Initial guess (default zeros); clipped into the bounds with a warning
        if it lies outside them.
    method : str, optional
        Any :func:`scipy.optimize.minimize` method, or ``'quadratic'``.
        ``'SLSQP'`` and ``'trust-constr'`` take the constraints natively (their
        Jacobians by adjoint or tangent sweeps, see ``jacobian_mode``).  Other
        methods take them through ``constraint_handling``.  ``'quadratic'``
        is for costs quadratic in ``w`` without bounds or constraints (LQR):
        conjugate gradients on ``H w = -∇J(0)``, with Hessian–vector
        products ``∇J(v) - ∇J(0)``.
    constraint_handling : {'augmented-lagrangian', 'penalty'}, optional
        How an unconstrained method meets constraints (default the augmented
        Lagrangian).  Both solve a sequence of bound-constrained problems
        ``J + Σ_eq (λ h + μ/2 h²) + 1/(2μ) Σ_ineq (max(0, ν + μ g)² - ν²)``,
        raising ``μ`` while the violation does not shrink; the quadratic
        penalty keeps ``λ = ν = 0`` and so needs a much larger ``μ``.
    options : dict, optional
        Passed to SciPy, on top of :data:`DEFAULT_OPTIONS` for the method
        (tighter than SciPy's own); for the outer loop also ``'max_outer'``
        and ``'penalty'``, the first ``μ``.
    tol : float, optional
        SciPy's ``tol``; when given, :data:`DEFAULT_OPTIONS` are not applied.
    constraint_tol : float
        Largest violation accepted by the outer loop (and reported as failure
        by the others when exceeded).
    jacobian_mode : {'auto', 'forward', 'reverse'}
        How constraint Jacobians are computed.
    progress : callable, optional
        Called once per iteration with ``(iteration, cost)`` (or with one
        ``intermediate_result`` having ``nit`` and ``fun``).

    Returns
    -------
    ControlResult
        ``x``, ``fun`` (the cost ``J``, not the penalised one), ``nit``,
        ``nfev``, ``njev``, ``success``, ``message``, ``max_violation``,
        ``constraint_values``, ``multipliers`` (outer loop only),
        ``sweeps`` and ``wall_time``.

    Raises
    ------
    NotImplementedError
        For a method that takes neither bounds nor constraints when the
        problem has them (the message names the alternatives).
    ValueError
        For an unknown ``constraint_handling``, a ``w0`` of the wrong shape,
        or options that ``'quadratic'`` does not take.

    Warns
    -----
    UserWarning
        When ``w0`` lies outside the bounds (it is clipped), or when
        ``constraint_handling`` has no effect.

    See Also
    --------
    ControlProblem, check_control_problem

    Notes
    -----
    A sweep that fails at a trial point (:class:`SweepError`, a state gone
    non-finite) counts as an infinite cost, so line searches step back; the
    result's ``failed_sweeps`` says how often that happened.

    Examples
    --------
    Steer ``x_{k+1} = x_k + h u_k`` from 0 to 1 in four steps at least
    ``Σ_k h u_k²`` (optimum ``u = 1``, ``J = 1``), first with SLSQP, then with
    L-BFGS-B and the augmented Lagrangian:

    >>> import adjoint
    >>> def step(k, x, theta, p, consts, out):
    ...     out[0] = x[0] + consts[0] * theta[0]
    ...     return 0
    >>> def step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    ...     x_bar[0] += lam[0]
    ...     theta_bar[0] += consts[0] * lam[0]
    ...     return 0
    >>> def cost(k, x, theta, p, consts, data):
    ...     return consts[0] * theta[0] ** 2
    >>> def cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    ...     theta_bar[0] += g_bar * 2.0 * consts[0] * theta[0]
    ...     return 0
    >>> seq = adjoint.Sequence(step, step_vjp, n=1, N=4, m=1, consts=[0.25],
    ...                        running_cost=cost, running_cost_vjp=cost_vjp)
    >>> problem = adjoint.ControlProblem(
    ...     seq, [0.0], constraints=[adjoint.final_state([1.0])])
    >>> result = adjoint.optimise(problem)
    >>> result.success, result.x.round(6).tolist(), round(result.fun, 6)
    (True, [1.0, 1.0, 1.0, 1.0], 1.0)
    >>> result = adjoint.optimise(problem, method="L-BFGS-B")
    >>> result.success, result.x.round(6).tolist(), result.max_violation < 1e-8
    (True, [1.0, 1.0, 1.0, 1.0], True)
    """
    # Check inputs and choose the route
    cons = problem.constraints
    if method is None:
        method = "SLSQP" if cons else "L-BFGS-B"
    key = method.lower()
    if constraint_handling is not None and constraint_handling not in _HANDLINGS:
        raise ValueError(
            f"`constraint_handling` must be one of {_HANDLINGS}; got "
            f"{constraint_handling!r}."
        )
    if key == "quadratic":
        if cons or problem.has_bounds:
            raise NotImplementedError(
                "`method='quadratic'` solves unbounded, unconstrained quadratic "
                "problems only; use 'SLSQP' or 'trust-constr' for this problem."
            )
    elif problem.has_bounds and key not in _METHODS_WITH_BOUNDS:
        raise NotImplementedError(
            f"Method {method!r} does not take bounds and this problem has some; "
            "use 'L-BFGS-B', 'TNC', 'SLSQP' or 'trust-constr'."
        )
    if cons and key in _GRADIENT_FREE + ("quadratic",):
        raise NotImplementedError(
            f"Method {method!r} cannot take the constraints; use 'SLSQP', "
            "'trust-constr' or a gradient method with `constraint_handling`."
        )
    if constraint_handling is not None and (
        not cons or key in _METHODS_WITH_CONSTRAINTS
    ):
        reason = (
            "the problem has no constraints"
            if not cons
            else (f"{method} takes the constraints itself")
        )
        warnings.warn(
            f"`constraint_handling={constraint_handling!r}` has no effect: {reason}.",
            UserWarning,
            stacklevel=2,
        )
    if tol is None:
        options = {**DEFAULT_OPTIONS.get(key, {}), **(options or {})}
    w0 = np.zeros(problem.size) if w0 is None else w0
    w0 = problem.clip(w0, name="w0")
    notify = progress_caller(progress)
    counts_before = dict(problem.counts)
    start = time.perf_counter()

    # Solve
    if key == "quadratic":
        res = _solve_quadratic(problem, w0, options or {}, notify)
    elif cons and key not in _METHODS_WITH_CONSTRAINTS:
        res = _solve_outer(
            problem,
            w0,
            method,
            constraint_handling or "augmented-lagrangian",
            options or {},
            tol,
            constraint_tol,
            notify,
        )
    else:
        res = _solve_scipy(
            problem, w0, method, options or {}, tol, jacobian_mode, notify
        )

    # Assemble the result
    res.wall_time = time.perf_counter() - start
    res.method = method
    res.fun = float(problem.fun(res.x))
    res.max_violation = cons.violation(res.x)
    res.constraint_values = cons.values(res.x) if cons else np.zeros(0)
    if res.max_violation > constraint_tol and res.success:
        res.success = False
        res.message = (
            f"{res.message} (but the largest constraint violation, "
            f"{res.max_violation:.2e}, exceeds {constraint_tol:.0e})"
        )
    res.sweeps = {
        k: problem.counts[k] - counts_before.get(k, 0) for k in problem.counts
    }
    res.setdefault("table", [])
    return res


def _guarded(func, fallback, counter):
    """``func`` that answers ``fallback(w)`` when a sweep fails at ``w``.

    A trial point of a line search can leave the region where the dynamics
    stay finite (a rocket burning more fuel than it has); answering an
    infinite cost there makes SciPy's line searches step back instead of
    stopping with a traceback.
    """

    def wrapped(w):
        try:
            return func(w)
        except SweepError as err:
            counter["failed"] += 1
            logger.debug("sweep failed at a trial point: %s", err)
            return fallback(w)

    return wrapped


def _iteration_callback(problem, notify):
    state = {"nit": 0}

    def callback(xk, *args):
        state["nit"] += 1
        x = getattr(xk, "x", xk)
        notify(state["nit"], problem.fun(np.asarray(x, dtype=np.float64)))

    return callback, state


def _solve_scipy(problem, w0, method, options, tol, jacobian_mode, notify):
    key = method.lower()
    cons = problem.constraints
    callback, state = _iteration_callback(problem, notify)
    kwargs: dict[str, Any] = {
        "method": method,
        "tol": tol,
        "options": options,
        "callback": callback,
    }
    failures = {"failed": 0}
    size = problem.size
    if key in _GRADIENT_FREE:
        kwargs["jac"] = None
        fun = _guarded(problem.fun, lambda w: np.inf, failures)
    else:
        kwargs["jac"] = True
        fun = _guarded(
            problem.value_and_grad, lambda w: (np.inf, np.zeros(size)), failures
        )
    if key in _METHODS_WITH_BOUNDS and problem.has_bounds:
        kwargs["bounds"] = problem.bounds()
    if cons:
        values = _guarded(cons.values, lambda w: np.full(cons.n_rows, np.inf), failures)
        jacobian = _guarded(
            lambda w: cons.jacobian(w, mode=jacobian_mode),
            lambda w: np.zeros((cons.n_rows, size)),
            failures,
        )
    if cons and key == "slsqp":
        kwargs["constraints"] = _slsqp_constraints(cons, values, jacobian)
    elif cons and key == "trust-constr":
        keep = np.isfinite(cons.lower) | np.isfinite(cons.upper)
        kwargs["constraints"] = [
            NonlinearConstraint(
                lambda w: values(w)[keep],
                cons.lower[keep],
                cons.upper[keep],
                jac=lambda w: jacobian(w)[keep],
                hess=BFGS(),
            )
        ]
    if key == "trust-constr":
        kwargs["hess"] = BFGS()
    raw = minimize(fun, w0, **kwargs)
    res = ControlResult(raw)
    res.nit = int(raw.get("nit", state["nit"]))
    res.nfev = int(raw.get("nfev", 0))
    res.njev = int(raw.get("njev", raw.get("ngev", 0)))
    res.success = bool(raw.success)
    res.message = str(raw.message)
    res.failed_sweeps = failures["failed"]
    return res


def _slsqp_constraints(cons, values, full_jacobian):
    eq = np.flatnonzero(cons.is_equality)
    lo = np.flatnonzero(~cons.is_equality & np.isfinite(cons.lower))
    hi = np.flatnonzero(~cons.is_equality & np.isfinite(cons.upper))
    cache = {"key": None, "jac": None}

    def jacobian(w):
        key = np.asarray(w).tobytes()
        if cache["key"] != key:
            cache["key"], cache["jac"] = key, full_jacobian(w)
        return cache["jac"]

    out = []
    if eq.size:
        out.append(
            {
                "type": "eq",
                "fun": lambda w: values(w)[eq] - cons.lower[eq],
                "jac": lambda w: jacobian(w)[eq],
            }
        )
    if lo.size or hi.size:
        # SLSQP wants g(w) ≥ 0: c - lower on one side, upper - c on the other
        def fun(w):
            c = values(w)
            return np.concatenate([c[lo] - cons.lower[lo], cons.upper[hi] - c[hi]])

        def jac(w):
            J = jacobian(w)
            return np.vstack([J[lo], -J[hi]])

        out.append({"type": "ineq", "fun": fun, "jac": jac})
    return out


def _solve_outer(problem, w0, method, handling, options, tol, constraint_tol, notify):
    """Penalty / augmented-Lagrangian outer loop around a bounded inner solver."""
    cons = problem.constraints
    options = dict(options)
    max_outer = int(options.pop("max_outer", PENALTY_MAX_OUTER))
    mu = float(options.pop("penalty", PENALTY_START))
    eq = np.flatnonzero(cons.is_equality)
    lo = np.flatnonzero(~cons.is_equality & np.isfinite(cons.lower))
    hi = np.flatnonzero(~cons.is_equality & np.isfinite(cons.upper))
    lam = np.zeros(eq.size)
    nu_lo, nu_hi = np.zeros(lo.size), np.zeros(hi.size)
    augmented = handling == "augmented-lagrangian"
    key = method.lower()
    bounds = problem.bounds() if problem.has_bounds else None
    nit = nfev = njev = 0

    def pieces(c):
        h = c[eq] - cons.lower[eq]
        g_lo = cons.lower[lo] - c[lo]  # ≤ 0 when satisfied
        g_hi = c[hi] - cons.upper[hi]
        return h, g_lo, g_hi

    failures = {"failed": 0}

    @functools.partial(
        _guarded, fallback=lambda w: (np.inf, np.zeros(problem.size)), counter=failures
    )
    def merit(w):
        J = problem.fun(w)
        c = cons.values(w)
        h, g_lo, g_hi = pieces(c)
        s_lo = np.maximum(0.0, nu_lo + mu * g_lo)
        s_hi = np.maximum(0.0, nu_hi + mu * g_hi)
        value = (
            J
            + lam @ h
            + 0.5 * mu * h @ h
            + (s_lo @ s_lo - nu_lo @ nu_lo + s_hi @ s_hi - nu_hi @ nu_hi) / (2.0 * mu)
        )
        # dL/dc for each row, then ∇J + (dc/dw)ᵀ y in one adjoint sweep
        y = np.zeros(cons.n_rows)
        y[eq] = lam + mu * h
        y[lo] -= s_lo
        y[hi] += s_hi
        return value, cons.vjp(w, y, cost_weight=1.0)

    def callback(xk, *args):
        nonlocal nit
        nit += 1
        notify(nit, problem.fun(np.asarray(getattr(xk, "x", xk), dtype=np.float64)))

    w = np.asarray(w0, dtype=np.float64)
    violation_old = np.inf
    message, success = "outer iteration limit reached", False
    for outer in range(max_outer):
        kwargs = {
            "jac": True,
            "method": method,
            "tol": tol,
            "options": options,
            "callback": callback,
        }
        if bounds is not None and key in _METHODS_WITH_BOUNDS:
            kwargs["bounds"] = bounds
        inner = minimize(merit, w, **kwargs)
        w = inner.x
        nfev += int(inner.get("nfev", 0))
        njev += int(inner.get("njev", 0))
        violation = cons.violation(w)
        logger.debug(
            "outer %d: mu=%g violation=%.3e J=%.10g",
            outer,
            mu,
            violation,
            problem.fun(w),
        )
        if violation <= constraint_tol:
            success = True
            message = (
                f"{handling}: constraints met to {violation:.1e} after "
                f"{outer + 1} outer iterations; inner: {inner.message}"
            )
            break
        h, g_lo, g_hi = pieces(cons.values(w))
        if augmented:
            lam = lam + mu * h
            nu_lo = np.maximum(0.0, nu_lo + mu * g_lo)
            nu_hi = np.maximum(0.0, nu_hi + mu * g_hi)
        if not augmented or violation > PENALTY_SUFFICIENT_DECREASE * violation_old:
            mu *= PENALTY_GROWTH
        violation_old = violation

    res = ControlResult(
        x=w,
        nit=nit,
        nfev=nfev,
        njev=njev,
        success=success,
        message=message,
        status=0 if success else 1,
    )
    # Multiplier estimates dL/dc at the last iterate: ∇J + (dc/dw)ᵀ y ≈ 0
    h, g_lo, g_hi = pieces(cons.values(w))
    multipliers = np.zeros(cons.n_rows)
    multipliers[eq] = lam + mu * h
    multipliers[lo] -= np.maximum(0.0, nu_lo + mu * g_lo)
    multipliers[hi] += np.maximum(0.0, nu_hi + mu * g_hi)
    res.multipliers = multipliers
    res.penalty = mu
    res.failed_sweeps = failures["failed"]
    return res


def _solve_quadratic(problem, w0, options, notify):
    """Conjugate gradients on ``H w = -g(0)`` for a cost quadratic in ``w``."""
    options = dict(options)
    rtol = float(options.pop("rtol", 1e-13))
    maxiter = int(options.pop("maxiter", 10 * problem.size))
    if options:
        raise ValueError(
            f"`options` for method 'quadratic' takes 'rtol' and 'maxiter'; got "
            f"{sorted(options)}."
        )
    zero = np.zeros(problem.size)
    _, g0 = problem.value_and_grad(zero)
    counter = {"nit": 0, "njev": 1}

    def hessian_vector(v):
        counter["njev"] += 1
        return problem.grad(np.asarray(v, dtype=np.float64)) - g0

    def callback(xk):
        counter["nit"] += 1
        notify(counter["nit"], problem.fun(xk))

    H = LinearOperator(
        (problem.size, problem.size), matvec=hessian_vector, dtype=np.float64
    )
    w, info = cg(H, -g0, x0=w0, rtol=rtol, atol=0.0, maxiter=maxiter, callback=callback)
    success = info == 0
    message = (
        "conjugate gradients converged"
        if success
        else f"conjugate gradients stopped after {maxiter} iterations (info {info})"
    )
    return ControlResult(
        x=w,
        nit=counter["nit"],
        nfev=counter["njev"],
        njev=counter["njev"],
        success=success,
        message=message,
        status=int(info),
    )


# ---- checks ----


def check_control_problem(problem, w=None, *, rng=None):
    """Gradient checks of a problem's cost and constraints, as one report.

    Runs :func:`adjoint.check_gradients` on the problem's inner objective at
    ``w`` (default a point inside the bounds), then checks every constraint
    Jacobian, in forward and in reverse mode, against complex step.

    Parameters
    ----------
    problem : ControlProblem
    w : array_like, shape (size,), optional
        Where to check.  Default: the midpoint of the bounds where both are
        finite, 0.5 inside a single finite bound, 0 where unbounded.  A point
        where controls sit on a bound or vanish can hide errors; prefer a
        varied ``w``.
    rng : numpy.random.Generator, optional
        For the random directions (default seeded, so reports repeat).

    Returns
    -------
    GradientReport
        ``str(report)`` is a table; ``report.passed`` is True when every
        check met its target.

    Raises
    ------
    ValueError
        If ``w`` has the wrong shape or is not finite.
    NotImplementedError
        If the problem has constraints and the sequence has no complex-step
        forward sweep (the constraint-Jacobian check needs one).

    Examples
    --------
    >>> import adjoint
    >>> def step(k, x, theta, p, consts, out):
    ...     out[0] = x[0] + consts[0] * theta[0]
    ...     return 0
    >>> def step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    ...     x_bar[0] += lam[0]
    ...     theta_bar[0] += consts[0] * lam[0]
    ...     return 0
    >>> def cost(k, x, theta, p, consts, data):
    ...     return consts[0] * theta[0] ** 2
    >>> def cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    ...     theta_bar[0] += g_bar * 2.0 * consts[0] * theta[0]
    ...     return 0
    >>> seq = adjoint.Sequence(step, step_vjp, n=1, N=4, m=1, consts=[0.25],
    ...                        running_cost=cost, running_cost_vjp=cost_vjp)
    >>> problem = adjoint.ControlProblem(
    ...     seq, [0.0], constraints=[adjoint.final_state([1.0])])
    >>> w = problem.pack([0.3, -1.0, 2.0, 0.5])
    >>> report = adjoint.check_control_problem(problem, w)
    >>> report.passed
    True
    >>> [line[0] for line in report.lines]  # doctest: +NORMALIZE_WHITESPACE
    ['complex step vs adjoint (rel.)', 'central differences vs adjoint',
     'Taylor remainder orders', 'constraint Jac. reverse vs cstep']
    """
    rng = np.random.default_rng(5) if rng is None else rng
    if w is None:
        lo, hi = problem.lower(), problem.upper()
        mid = np.where(
            np.isfinite(lo) & np.isfinite(hi),
            0.5 * (lo + hi),
            np.where(
                np.isfinite(lo), lo + 0.5, np.where(np.isfinite(hi), hi - 0.5, 0.0)
            ),
        )
        w = mid
    w = problem._checked(w)
    report = check_gradients(problem.objective, problem.to_z(w), rng=rng)
    cons = problem.constraints
    if cons:
        modes = ("reverse", "forward") if problem.has_tangent else ("reverse",)
        for mode in modes:
            err = cons.check_jacobian(w, mode=mode, rng=rng)
            report.lines.append(
                (
                    f"constraint Jac. {mode} vs cstep",
                    err,
                    f"< {CONSTRAINT_JACOBIAN_RTOL:.0e}",
                    err < CONSTRAINT_JACOBIAN_RTOL,
                )
            )
    return report
