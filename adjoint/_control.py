"""Optimal control on a sequence: control parameterisation, bounds, free final time.

A :class:`ControlProblem` turns a sequence whose per-step parameters ``θ_k``
are control values (an ODE integrator with piecewise-constant controls, or any
homogeneous :class:`~adjoint.Sequence`) into a function of one flat vector of
decision variables

    w = [ U (n_nodes × m, row-major), p_free ]

where ``U`` holds the control values at the nodes of a parameterisation and
``p_free`` the shared parameters chosen as unknowns (a free final time, say).
The parameterisation is linear, ``θ = P U`` with a sparse ``P`` of shape
``(N, n_nodes)``, so the gradient is ``Pᵀ (dJ/dθ)``: the same adjoint sweep,
followed by one sparse product.  Box bounds on the controls become bounds on
``U`` (each ``θ_k`` is a convex combination of node values, so it stays inside
them too).

A free final time is handled by scaling time: the sequence integrates
``dx/ds = T f(x, u)`` on ``s ∈ [0, 1]`` with ``T`` one entry of ``p``
(:func:`time_scaled` builds that right-hand side from SymPy expressions), and
``final_time=`` names that entry so times reported and plotted are
``t = t0 + T s``.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable
from collections.abc import Sequence as SequenceABC
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import Bounds, OptimizeResult

from . import _validate
from ._objective import Objective
from ._sequence import SequenceBase

__all__ = [
    "ControlProblem",
    "ControlResult",
    "PiecewiseConstant",
    "PiecewiseLinear",
    "time_scaled",
]

logger = logging.getLogger(__name__)


# ---- control parameterisations ----


class _Parameterisation:
    """A linear map from node values to per-step control values."""

    kind = ""

    def __init__(self, n_intervals: int | None = None):
        if n_intervals is not None:
            n_intervals = _validate.positive_int("n_intervals", n_intervals)
        self.n_intervals = n_intervals

    def _intervals(self, N: int) -> int:
        M = N if self.n_intervals is None else self.n_intervals
        if M > N:
            raise ValueError(
                f"`n_intervals` is {M} but the sequence has only N = {N} steps; "
                "a control interval must cover at least one step."
            )
        return M

    def n_nodes(self, N: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def matrix(self, N: int) -> sp.csr_matrix:  # pragma: no cover - abstract
        raise NotImplementedError

    def node_positions(self, N: int) -> NDArray[np.float64]:
        """Where each node value sits, as a fraction of the horizon."""
        raise NotImplementedError  # pragma: no cover - abstract

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_intervals={self.n_intervals})"


class PiecewiseConstant(_Parameterisation):
    """Controls constant on each of ``n_intervals`` equal intervals.

    With ``n_intervals=None`` (the default) there is one value per step,
    ``θ_k = u_k``.  Otherwise interval ``j`` covers the steps ``k`` with
    ``floor(k · n_intervals / N) = j``, so a fine integration grid can carry a
    coarser control.

    The matrix ``P`` of ``θ = P U`` has ``P[k, j] = 1`` where step ``k`` lies
    in interval ``j`` and 0 elsewhere.

    Parameters
    ----------
    n_intervals : int, optional
        Number of control intervals (at most ``N``).

    Raises
    ------
    TypeError
        If ``n_intervals`` is not an integer.
    ValueError
        If ``n_intervals`` is below 1, or (from :meth:`n_nodes` and
        :meth:`matrix`) above the number of steps ``N``.

    See Also
    --------
    PiecewiseLinear : continuous controls.
    ControlProblem : takes one as ``control=``.

    Examples
    --------
    Two intervals over four steps: steps 0 and 1 take the first node value,
    steps 2 and 3 the second.

    >>> from adjoint import PiecewiseConstant
    >>> pc = PiecewiseConstant(2)
    >>> pc.n_nodes(4)
    2
    >>> pc.matrix(4).toarray().tolist()
    [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    >>> pc.node_positions(4).tolist()
    [0.0, 0.5]
    """

    kind = "constant"

    def n_nodes(self, N: int) -> int:
        """Number of node values on ``N`` steps: one per interval."""
        return self._intervals(N)

    def matrix(self, N: int) -> sp.csr_matrix:
        """The sparse ``P`` of ``θ = P U``, shape (N, n_nodes)."""
        M = self._intervals(N)
        k = np.arange(N)
        j = (k * M) // N
        return sp.csr_matrix((np.ones(N), (k, j)), shape=(N, M))

    def node_positions(self, N: int) -> NDArray[np.float64]:
        """Start of each interval (the value holds until the next start)."""
        M = self._intervals(N)
        starts = np.array([np.ceil(j * N / M) for j in range(M)])
        return starts / N


class PiecewiseLinear(_Parameterisation):
    """Continuous controls, linear between ``n_intervals + 1`` equally spaced nodes.

    A step integrates with one control value per step, so step ``k`` applies
    the mean of the linear interpolant over ``[s_k, s_{k+1}]``, which is its
    value at the step's midpoint.  For a control that is itself linear in time
    this is second-order accurate; do not expect the order of a scheme that
    evaluates the control at its stage times.

    With ``M = n_intervals`` and the step midpoint ``μ_k = (k + ½) M / N`` in
    node units, ``θ_k = (1 - f_k) U[j_k] + f_k U[j_k + 1]`` where
    ``j_k = min(floor(μ_k), M - 1)`` and ``f_k = μ_k - j_k``.

    Parameters
    ----------
    n_intervals : int, optional
        Number of linear pieces (default: one per step, ``N + 1`` nodes).

    Raises
    ------
    TypeError
        If ``n_intervals`` is not an integer.
    ValueError
        If ``n_intervals`` is below 1, or (from :meth:`n_nodes` and
        :meth:`matrix`) above the number of steps ``N``.

    See Also
    --------
    PiecewiseConstant : one value per interval.

    Examples
    --------
    Two pieces (three nodes) over four steps; each row averages the two
    nodes around the step's midpoint:

    >>> from adjoint import PiecewiseLinear
    >>> pl = PiecewiseLinear(2)
    >>> pl.n_nodes(4)
    3
    >>> pl.matrix(4).toarray().tolist()
    [[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.75, 0.25], [0.0, 0.25, 0.75]]
    >>> pl.node_positions(4).tolist()
    [0.0, 0.5, 1.0]
    """

    kind = "linear"

    def n_nodes(self, N: int) -> int:
        """Number of node values on ``N`` steps: ``n_intervals + 1``."""
        return self._intervals(N) + 1

    def matrix(self, N: int) -> sp.csr_matrix:
        """The sparse ``P`` of ``θ = P U``, shape (N, n_nodes)."""
        M = self._intervals(N)
        mid = (np.arange(N) + 0.5) / N * M  # step midpoints in node units
        left = np.minimum(np.floor(mid).astype(int), M - 1)
        frac = mid - left
        rows = np.concatenate([np.arange(N), np.arange(N)])
        cols = np.concatenate([left, left + 1])
        vals = np.concatenate([1.0 - frac, frac])
        return sp.csr_matrix((vals, (rows, cols)), shape=(N, M + 1))

    def node_positions(self, N: int) -> NDArray[np.float64]:
        """Where each node sits, as a fraction of the horizon (ends included)."""
        M = self._intervals(N)
        return np.arange(M + 1) / M


def _as_parameterisation(control) -> _Parameterisation:
    if control is None or control == "constant":
        return PiecewiseConstant()
    if control == "linear":
        return PiecewiseLinear()
    if isinstance(control, _Parameterisation):
        return control
    raise TypeError(
        "`control` must be 'constant', 'linear', a PiecewiseConstant or a "
        f"PiecewiseLinear; got {control!r}."
    )


def time_scaled(f_exprs, T):
    """Right-hand side ``T · f`` for a free final time, on ``s ∈ [0, 1]``.

    With ``t = t0 + T s``, ``dx/ds = T f(x, u)``; integrate the returned
    expressions over ``s`` from 0 to 1 and append the symbol ``T`` to the
    parameters ``p``, then name its index with ``ControlProblem(...,
    final_time=index)``.

    Parameters
    ----------
    f_exprs : sequence of sympy.Expr, length n
        The right-hand side ``f(x, u)`` in physical time ``t``.
    T : sympy.Symbol
        The final time (the horizon ``T``), to be one of the parameters.

    Returns
    -------
    list of sympy.Expr, length n
        ``T · f_i`` for each ``i``.

    See Also
    --------
    ControlProblem : its ``final_time=`` names the index of ``T`` in ``p``.

    Examples
    --------
    >>> import sympy as sp
    >>> from adjoint import time_scaled
    >>> x, v, u, T = sp.symbols("x v u T")
    >>> time_scaled([v, u], T)
    [T*v, T*u]
    """
    return [T * f for f in f_exprs]


# ---- the result object ----


class ControlResult(OptimizeResult):
    """A :class:`scipy.optimize.OptimizeResult` with a table and a JSON view.

    Besides SciPy's fields (``x``, ``fun``, ``nit``, ``nfev``, ``njev``,
    ``success``, ``message``) it holds ``table``, rows ``(name, value,
    stderr_or_None)`` to print, ``max_violation`` (the largest constraint
    violation at ``x``, 0 without constraints) and ``sweeps`` (forward,
    adjoint and tangent sweeps run).  :func:`optimise` returns one.

    Parameters
    ----------
    **fields
        The fields, as for :class:`scipy.optimize.OptimizeResult` (a dict
        whose keys are also attributes).

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import ControlResult
    >>> res = ControlResult(x=np.array([1.0, 2.0]), fun=0.5, success=True,
    ...                     message="converged", jac=np.zeros(2))
    >>> res.fun
    0.5
    >>> res.to_json()  # arrays become lists; jac is left out
    {'x': [1.0, 2.0], 'fun': 0.5, 'success': True, 'message': 'converged'}
    """

    def to_json(self) -> dict:
        """The result as a dict of JSON-able values (lists, floats, str).

        Callables and the fields ``jac``, ``hess_inv``, ``constr`` and ``v``
        are left out; arrays become lists and non-finite floats ``None``.

        Returns
        -------
        dict
        """
        out: dict[str, Any] = {}
        for key, value in self.items():
            if callable(value) or key in ("jac", "hess_inv", "constr", "v"):
                continue
            out[key] = _jsonable(value)
        return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def progress_caller(progress) -> Callable[[int, float], None]:
    """Return ``notify(iteration, cost)`` that forwards to ``progress``.

    ``progress`` may take ``(iteration, cost)`` or, as SciPy's callbacks do,
    one ``intermediate_result`` with fields ``nit`` and ``fun`` (the command
    line's tqdm bar does); ``None`` does nothing.
    """
    if progress is None:
        return lambda iteration, cost: None
    try:
        inspect.signature(progress).bind(0, 0.0)
        two_arguments = True
    except TypeError:
        two_arguments = False
    except ValueError:  # builtins without a signature
        two_arguments = True
    if two_arguments:
        return lambda iteration, cost: progress(iteration, cost)
    return lambda iteration, cost: progress(OptimizeResult(nit=iteration, fun=cost))


# ---- the problem ----


class ControlProblem:
    """A sequence's cost as a function of control values and free parameters.

    Parameters
    ----------
    seq : SequenceBase
        A homogeneous sequence with ``θ_k`` of size ``m`` (the controls during
        step ``k``), for example an ODE integrator.
    x0 : array_like, shape (n,)
        The fixed initial state.
    control : {'constant', 'linear'} or PiecewiseConstant or PiecewiseLinear
        How node values set ``θ_k`` (default: one constant value per step).
    u_lower, u_upper : float or array_like of shape (m,), optional
        Box bounds on every control value (default unbounded).
    p : array_like, shape (n_p,), optional
        Values of the shared parameters (default zeros).
    free_p : sequence of int, optional
        Indices of ``p`` that are unknowns, in the order they follow ``U`` in
        ``w``.
    p_lower, p_upper : array_like of shape (len(free_p),), optional
        Bounds on the free parameters.
    final_time : int, optional
        Index into ``p`` of a free final time ``T``; the sequence must run on
        ``s ∈ [0, 1]`` with a right-hand side scaled by ``T`` (see
        :func:`time_scaled`).  It must be one of ``free_p``.
    t0 : float
        Initial time (for reported and plotted times).
    duration : float, optional
        Horizon of a fixed-time problem; default ``seq.dt · N`` when the
        sequence has a step ``dt``, else ``N`` (one time unit per step).
    constraints : sequence of Constraint, optional
        State constraints (see :class:`adjoint.Constraint`).
    state_names, control_names : sequence of str, optional
        Labels for tables and plots.

    Raises
    ------
    TypeError
        When ``seq`` is not a sequence, or not a homogeneous one with per-step
        parameters of shape (N, m); when ``control`` is none of the accepted
        kinds or ``free_p`` holds a non-integer.
    ValueError
        When a lower bound exceeds its upper bound, an index is out of range or
        the sequence has no per-step controls.

    See Also
    --------
    optimise : minimise the problem with SciPy.
    check_control_problem : gradient and constraint-Jacobian checks.
    Constraint : state constraints.

    Notes
    -----
    ``w`` stacks ``U`` row-major (node by node, all ``m`` controls of a node
    together), then the free parameters.  Methods that take ``w`` reuse the
    forward sweep when called twice at the same ``w``.

    Cost: :meth:`value_and_grad` is one forward and one adjoint sweep plus a
    sparse product with ``Pᵀ``, whatever the number of unknowns.

    Examples
    --------
    Steer ``x_{k+1} = x_k + h u_k`` from 0 to 1 in four steps of ``h = 1/4``
    at least control energy ``J = Σ_k h u_k²`` (the optimum is ``u = 1``,
    ``J = 1``):

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
    ...     seq, [0.0], u_lower=-2.0, u_upper=2.0,
    ...     constraints=[adjoint.final_state([1.0])])
    >>> problem.size, problem.has_bounds
    (4, True)
    >>> w = problem.pack(0.5)
    >>> J, grad = problem.value_and_grad(w)
    >>> round(J, 6), grad.round(6).tolist()
    (0.25, [0.25, 0.25, 0.25, 0.25])
    >>> problem.states(w).ravel().round(6).tolist()
    [0.0, 0.125, 0.25, 0.375, 0.5]
    >>> result = adjoint.optimise(problem, w)
    >>> result.x.round(6).tolist(), round(result.fun, 6)
    ([1.0, 1.0, 1.0, 1.0], 1.0)
    """

    def __init__(
        self,
        seq: SequenceBase,
        x0: ArrayLike,
        *,
        control=None,
        u_lower: ArrayLike | None = None,
        u_upper: ArrayLike | None = None,
        p: ArrayLike | None = None,
        free_p: SequenceABC[int] = (),
        p_lower: ArrayLike | None = None,
        p_upper: ArrayLike | None = None,
        final_time: int | None = None,
        t0: float = 0.0,
        duration: float | None = None,
        constraints=(),
        state_names: SequenceABC[str] | None = None,
        control_names: SequenceABC[str] | None = None,
    ):
        # Check inputs: the sequence and its shapes
        if not isinstance(seq, SequenceBase):
            raise TypeError(
                f"`seq` must be a sequence object, got {type(seq).__name__}."
            )
        theta_shape = getattr(seq, "theta_shape", None)
        if theta_shape is None or len(theta_shape) != 2:
            raise TypeError(
                "`seq` must be a homogeneous sequence whose per-step parameters "
                "θ_k are the controls (it has no `theta_shape` of (N, m))."
            )
        self.seq = seq
        self.N = int(seq.N)
        self.m = int(theta_shape[1])
        self.n = int(np.prod(seq.x0_shape))
        self.n_p = int(np.prod(seq.p_shape))
        self.parameterisation = _as_parameterisation(control)
        self.n_nodes = self.parameterisation.n_nodes(self.N)
        self.P = self.parameterisation.matrix(self.N)
        self.PT = self.P.T.tocsr()

        # Shared parameters, the free ones and a free final time
        p = np.zeros(self.n_p) if p is None else p
        self.p = _validate.real_array(
            "p",
            np.atleast_1d(p),
            (self.n_p,),
            what=f"the sequence has n_p = {self.n_p}",
        )
        self.free_p = np.array(
            [_index("free_p", i, self.n_p) for i in free_p], dtype=np.intp
        )
        if len(set(self.free_p.tolist())) != len(self.free_p):
            raise ValueError(f"`free_p` repeats an index: {list(free_p)}.")
        if final_time is not None:
            final_time = _index("final_time", final_time, self.n_p)
            if final_time not in self.free_p:
                raise ValueError(
                    f"`final_time` is p[{final_time}], which is not free; add "
                    f"{final_time} to `free_p` (a fixed horizon needs no "
                    "`final_time`, pass `duration=` instead)."
                )
            # time_scaled integrates over s in [0, 1] (from t0); times() and
            # horizon() rely on it, so refuse any other span rather than
            # mislabel time.
            span = getattr(seq, "dt", 1.0 / seq.N) * seq.N
            if abs(span - 1.0) > 1e-12:
                raise ValueError(
                    f"With `final_time`, the sequence must span s in [0, 1] "
                    f"(dt·N = 1); it has dt·N = {span:g}. Use dt = 1/N with "
                    "time_scaled(f, T)."
                )
        self.final_time = final_time
        if self.m == 0 and len(self.free_p) == 0:
            raise ValueError(
                "The sequence has no per-step controls (m = 0) and `free_p` is "
                "empty, so there is nothing to optimise."
            )

        # Bounds on controls and free parameters
        self.u_lower, self.u_upper = _bound_pair(
            "u_lower", u_lower, "u_upper", u_upper, self.m, "control"
        )
        self.p_lower, self.p_upper = _bound_pair(
            "p_lower", p_lower, "p_upper", p_upper, len(self.free_p), "free parameter"
        )

        # Time grid
        self.t0 = float(t0)
        if duration is None:
            dt = getattr(seq, "dt", None)
            duration = self.N * float(dt) if dt is not None else float(self.N)
        self.duration = float(duration)
        if not np.isfinite(self.duration) or self.duration <= 0:
            raise ValueError(f"`duration` must be positive, got {duration}.")

        # The inner objective over (theta, p)
        wrt = ("theta", "p") if self.n_p else ("theta",)
        self.x0 = _validate.real_array(
            "x0", x0, seq.x0_shape, what=f"the sequence has n = {self.n}"
        )
        self.objective = Objective(
            seq, x0=self.x0, thetas=np.zeros((self.N, self.m)), p=self.p, wrt=wrt
        )
        self.size = self.n_nodes * self.m + len(self.free_p)
        self.state_names = _names("state_names", state_names, self.n, "x")
        self.control_names = _names("control_names", control_names, self.m, "u")

        from ._constraints import ConstraintSet  # cycle: constraints use problems

        self.constraints = ConstraintSet(self, constraints)

    # ---- packing ----

    def pack(self, controls: ArrayLike, p_free: ArrayLike | None = None) -> NDArray:
        """``w`` from node values ``controls`` (n_nodes, m) and free parameters.

        ``controls`` may be a scalar (the same value everywhere) or, for one
        control, shape ``(n_nodes,)``; ``p_free`` defaults to the current
        values of the free entries of ``p``.

        Raises
        ------
        ValueError
            If ``controls`` or ``p_free`` has the wrong shape.
        """
        U = np.asarray(controls, dtype=np.float64)
        if U.ndim == 0:
            U = np.full((self.n_nodes, self.m), float(U))
        elif U.ndim == 1 and self.m == 1:
            U = U[:, None]
        if U.shape != (self.n_nodes, self.m):
            raise ValueError(
                f"`controls` has shape {U.shape}; the problem has {self.n_nodes} "
                f"control nodes of m = {self.m} controls, so it must have shape "
                f"({self.n_nodes}, {self.m})."
            )
        if p_free is None:
            p_free = self.p[self.free_p]
        p_free = np.atleast_1d(np.asarray(p_free, dtype=np.float64))
        if p_free.shape != (len(self.free_p),):
            raise ValueError(
                f"`p_free` has shape {p_free.shape}; the problem has "
                f"{len(self.free_p)} free parameters."
            )
        return np.concatenate([U.ravel(), p_free])

    def unpack(self, w) -> tuple[NDArray, NDArray]:
        """``(U, p)``: node values (n_nodes, m) and the full parameter vector."""
        w = np.asarray(w)
        if w.shape != (self.size,):
            raise ValueError(
                f"`w` has shape {w.shape}; the problem has {self.size} unknowns, "
                f"so `w` must have shape ({self.size},)."
            )
        n_u = self.n_nodes * self.m
        U = w[:n_u].reshape(self.n_nodes, self.m)
        p = self.p.astype(np.result_type(self.p, w), copy=True)
        p[self.free_p] = w[n_u:]
        return U, p

    def thetas(self, w) -> NDArray:
        """Per-step control values ``θ = P U``, shape (N, m)."""
        U, _ = self.unpack(w)
        return np.ascontiguousarray(self.P @ U)

    def to_z(self, w) -> NDArray:
        """The inner objective's unknowns ``(θ, p)`` at ``w``."""
        U, p = self.unpack(w)
        return self.objective.pack(self.x0, self.P @ U, p)

    def _from_z_bar(self, z_bar) -> NDArray:
        """Gradient in ``w`` from a gradient in ``z`` (the transpose of to_z)."""
        _, theta_bar, p_bar = self.objective.unpack(z_bar)
        U_bar = self.PT @ theta_bar
        return np.concatenate([np.ravel(U_bar), np.ravel(p_bar)[self.free_p]])

    def _tangent_z(self, v) -> NDArray:
        U_tan, _ = self.unpack(v)
        p_tan = np.zeros(self.n_p)
        p_tan[self.free_p] = v[self.n_nodes * self.m :]
        return self.objective.pack(np.zeros(self.n), self.P @ U_tan, p_tan)

    # ---- cost, gradient, sweeps ----

    def _checked(self, w) -> NDArray:
        return _validate.real_array(
            "w", w, (self.size,), what=f"the problem has {self.size} unknowns"
        )

    def trajectory(self, w):
        """Forward sweep at ``w`` (reused when ``w`` repeats)."""
        return self.objective.trajectory(self.to_z(self._checked(w)))

    def fun(self, w) -> float:
        """The cost ``J(w)``."""
        return self.trajectory(w).J

    def value_and_grad(self, w) -> tuple[float, NDArray]:
        """``(J, dJ/dw)``: one forward and one adjoint sweep."""
        J, g = self.objective.value_and_grad(self.to_z(self._checked(w)))
        return J, self._from_z_bar(g)

    def grad(self, w) -> NDArray:
        """``dJ/dw``, shape (size,): one forward and one adjoint sweep."""
        return self.value_and_grad(w)[1]

    def vjp(self, w, xs_bar, cost_weight: float = 0.0) -> NDArray:
        """``(d xs/dw)ᵀ xs_bar + cost_weight · dJ/dw``: one adjoint sweep."""
        z = self.to_z(self._checked(w))
        return self._from_z_bar(self.objective.vjp(z, xs_bar, cost_weight))

    def jvp(self, w, v) -> tuple[NDArray, float]:
        """Tangent sweep in direction ``v``: ``(xs_tan, J_tan)``."""
        z = self.to_z(self._checked(w))
        v = _validate.real_array(
            "v", v, (self.size,), what=f"the problem has {self.size} unknowns"
        )
        return self.objective.jvp(z, self._tangent_z(v))

    def states(self, w) -> NDArray:
        """The states ``x_0 … x_N`` at ``w``, shape (N + 1, n)."""
        return np.array(self.trajectory(w).xs)

    def fun_complex(self, w) -> tuple[NDArray, complex]:
        """States and cost on complex ``w`` (for complex-step checks)."""
        w = np.asarray(w, dtype=np.complex128)
        U, p = self.unpack(w)
        z = self.objective.pack(self.x0, self.P @ U, p)
        return self.objective.fun_complex(z)

    @property
    def counts(self):
        """Sweeps run so far (forward, adjoint, tangent)."""
        return self.objective.counts

    @property
    def has_tangent(self) -> bool:
        """True when the sequence has tangent sweeps (so :meth:`jvp` works)."""
        return self.seq._has_tangent()

    # ---- bounds ----

    def lower(self) -> NDArray:
        """Lower bounds on ``w``, shape (size,) (``-inf`` where unbounded)."""
        return np.concatenate([np.tile(self.u_lower, self.n_nodes), self.p_lower])

    def upper(self) -> NDArray:
        """Upper bounds on ``w``, shape (size,) (``inf`` where unbounded)."""
        return np.concatenate([np.tile(self.u_upper, self.n_nodes), self.p_upper])

    def bounds(self) -> Bounds:
        """Box bounds on ``w`` for :func:`scipy.optimize.minimize`."""
        return Bounds(self.lower(), self.upper())

    @property
    def has_bounds(self) -> bool:
        """True when any entry of ``w`` has a finite bound."""
        return bool(np.isfinite(self.lower()).any() or np.isfinite(self.upper()).any())

    def clip(self, w, *, name: str = "w") -> NDArray:
        """``w`` clipped into the bounds, with a warning when anything moved.

        An initial guess outside the box is moved to the nearest point inside
        it (SciPy's bounded methods would otherwise clip it silently or fail).
        """
        w = self._checked(w)
        lo, hi = self.lower(), self.upper()
        outside = (w < lo) | (w > hi)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            warnings.warn(
                f"`{name}` lies outside the bounds at {int(outside.sum())} of "
                f"{self.size} entries (first: entry {i} ({self.describe(i)}) = "
                f"{w[i]:g}, bounds [{lo[i]:g}, {hi[i]:g}]); it was clipped into "
                "the bounds.",
                UserWarning,
                stacklevel=2,
            )
            w = np.clip(w, lo, hi)
        return w

    def describe(self, i: int) -> str:
        """Name of entry ``i`` of ``w`` (``'u[3, 0]'`` or ``'p[2]'``)."""
        n_u = self.n_nodes * self.m
        if i < n_u:
            return f"{self.control_names[i % self.m]} at node {i // self.m}"
        return f"p[{int(self.free_p[i - n_u])}]"

    # ---- times ----

    def horizon(self, w=None) -> float:
        """Length of the time horizon (the free final time ``T`` at ``w``)."""
        if self.final_time is None:
            return self.duration
        if w is None:
            return float(self.p[self.final_time])
        _, p = self.unpack(np.asarray(w, dtype=np.float64))
        return float(p[self.final_time])

    def times(self, w=None) -> NDArray:
        """Times of the states ``x_0 … x_N``, shape (N + 1,)."""
        return self.t0 + self.horizon(w) * np.linspace(0.0, 1.0, self.N + 1)

    def control_times(self, w=None) -> NDArray:
        """Times of the control nodes (interval starts for piecewise constant)."""
        return self.t0 + self.horizon(w) * self.parameterisation.node_positions(self.N)

    def controls(self, w) -> NDArray:
        """Node values ``U``, shape (n_nodes, m)."""
        U, _ = self.unpack(np.asarray(w, dtype=np.float64))
        return U.copy()

    def __repr__(self) -> str:
        return (
            f"ControlProblem(n={self.n}, m={self.m}, N={self.N}, "
            f"control={self.parameterisation!r}, free_p={self.free_p.tolist()}, "
            f"constraints={self.constraints.n_rows} rows)"
        )


# ---- helpers ----


def _index(name, i, size) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"`{name}` must hold integer indices into `p`, got {i!r}.")
    if not 0 <= i < size:
        raise ValueError(
            f"`{name}` holds {i}; the sequence has n_p = {size} parameters, so "
            f"indices run 0 … {size - 1}."
        )
    return int(i)


def _bound_pair(lo_name, lo, hi_name, hi, size, what):
    def one(name, value, default):
        if value is None:
            return np.full(size, default)
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(size, float(arr))
        if arr.shape != (size,):
            raise ValueError(
                f"`{name}` has shape {arr.shape}; give one number or one per "
                f"{what} (shape ({size},))."
            )
        if np.isnan(arr).any():
            raise ValueError(f"`{name}` holds NaN; use ±inf for no bound.")
        return arr

    lower, upper = one(lo_name, lo, -np.inf), one(hi_name, hi, np.inf)
    bad = lower > upper
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"`{lo_name}` exceeds `{hi_name}` for {what} {j} ({lower[j]:g} > "
            f"{upper[j]:g}); each lower bound must be at most its upper bound."
        )
    return lower, upper


def _names(name, names, size, prefix) -> list[str]:
    if names is None:
        return [f"{prefix}{j}" for j in range(size)]
    names = [str(s) for s in names]
    if len(names) != size:
        raise ValueError(f"`{name}` holds {len(names)} names; expected {size}.")
    return names
