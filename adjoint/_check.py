"""Gradient checks: complex step, finite differences, Taylor remainder and
dot-product tests, and one call that runs them all with a readable report.

Each check compares the adjoint (or tangent) sweep of an :class:`Objective`
with an independent route through the same discrete computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._objective import Objective

# Default tolerances of the report's pass/fail column (DESIGN.md section 2).
COMPLEX_STEP_RTOL = 1e-10
DOT_PRODUCT_RTOL = 1e-10
JACOBIAN_RTOL = 1e-10
FD_RTOL = 1e-5
TAYLOR_ORDER_RANGE = (1.9, 2.1)
# Directions the checks use at most (unit vectors below this many unknowns).
MAX_DIRECTIONS = 60
COMPLEX_STEP_H = 1e-30  # far below roundoff of any perturbation that matters
# The Taylor test's smallest remainder must exceed this many roundings of J
# (a remainder at rounding level gives meaningless orders), and the default
# first step is enlarged at most this many times to get there.
TAYLOR_NOISE_FACTOR = 1e4
TAYLOR_MAX_ENLARGE = 4


def relative_error(a, b) -> float:
    """``max|a - b| / max|b|`` (absolute when ``b`` is zero).

    Parameters
    ----------
    a, b : array_like
        The value to judge and the reference, of the same shape.

    Returns
    -------
    float
        The largest absolute difference over the largest entry of ``b``;
        the largest absolute difference when ``b`` is all zeros.

    Examples
    --------
    >>> round(relative_error([1.0, 2.001], [1.0, 2.0]), 12)
    0.0005
    >>> relative_error([1e-9], [0.0])
    1e-09
    """
    a, b = np.asarray(a), np.asarray(b)
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if a.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def _directions(obj, z, max_directions, rng):
    """Unit vectors when there are few unknowns, random directions otherwise."""
    if obj.size <= max_directions:
        return np.eye(obj.size)
    return rng.standard_normal((max_directions, obj.size))


def complex_step_gradient(
    obj: Objective, z, *, max_directions=MAX_DIRECTIONS, rng=None
):
    """Directional derivatives of ``J`` by complex step, with the adjoint's.

    For each direction ``v``, the complex-step derivative
    ``Im J(z + i h v) / h`` (``h = 1e-30``: exact to rounding, no
    subtraction) and the adjoint gradient's ``g·v``.

    Parameters
    ----------
    obj : Objective
        Its sequence must have a complex forward sweep (kernels that run on
        complex128).
    z : array_like, shape (obj.size,)
        Where the derivatives are taken.
    max_directions : int, optional
        With at most this many unknowns the directions are the unit vectors;
        with more, this many random directions (default 60).
    rng : numpy.random.Generator, optional
        Source of the random directions (default seeded with 0).

    Returns
    -------
    directions : ndarray, shape (n_directions, obj.size)
    reference : ndarray, shape (n_directions,)
        Complex-step directional derivatives.
    adjoint : ndarray, shape (n_directions,)
        ``directions @ g`` with the adjoint gradient ``g``.

    Raises
    ------
    NotImplementedError
        If the sequence has no complex forward sweep.

    Examples
    --------
    >>> import sympy as sp
    >>> from adjoint import ODESystem, ODESequence, Objective, observation_cost
    >>> x, r = sp.symbols("x r")
    >>> system = ODESystem.from_sympy([r * x * (1 - x)], [x], [r])
    >>> obs = observation_cost([20], [0.8], N=20)
    >>> seq = ODESequence(system, dt=0.1, N=20, observations=obs)
    >>> obj = Objective(seq, x0=[0.1], p=[1.5], wrt=("x0", "p"))
    >>> V, reference, adjoint = complex_step_gradient(obj, obj.z0)
    >>> bool(relative_error(adjoint, reference) < 1e-12)
    True
    """
    rng = np.random.default_rng(0) if rng is None else rng
    z = np.asarray(z, dtype=np.float64)
    _, g = obj.value_and_grad(z)
    V = _directions(obj, z, max_directions, rng)
    ref = np.array(
        [
            obj.fun_complex(z + 1j * COMPLEX_STEP_H * v)[1].imag / COMPLEX_STEP_H
            for v in V
        ]
    )
    return V, ref, V @ g


def finite_difference_gradient(
    obj: Objective, z, *, h=None, max_directions=MAX_DIRECTIONS, rng=None
):
    """Central differences of ``J`` along unit or random directions.

    A smoke test only (truncation and rounding errors limit it to about
    1e-7 relative); prefer :func:`complex_step_gradient` where the sequence
    runs on complex numbers.

    Parameters
    ----------
    obj : Objective
    z : array_like, shape (obj.size,)
    h : float, optional
        Step; default ``1e-6 · max(1, max|z_i|)`` over the unknowns a direction
        moves.
    max_directions, rng : optional
        As for :func:`complex_step_gradient`.

    Returns
    -------
    directions, reference, adjoint : ndarray
        As for :func:`complex_step_gradient`, with central differences
        ``(J(z + h v) - J(z - h v)) / 2h`` as the reference.

    Examples
    --------
    >>> import sympy as sp
    >>> from adjoint import ODESystem, ODESequence, Objective, observation_cost
    >>> x, r = sp.symbols("x r")
    >>> system = ODESystem.from_sympy([r * x * (1 - x)], [x], [r])
    >>> obs = observation_cost([20], [0.8], N=20)
    >>> seq = ODESequence(system, dt=0.1, N=20, observations=obs)
    >>> obj = Objective(seq, x0=[0.1], p=[1.5], wrt=("x0", "p"))
    >>> V, reference, adjoint = finite_difference_gradient(obj, obj.z0)
    >>> bool(relative_error(adjoint, reference) < 1e-6)
    True
    """
    rng = np.random.default_rng(0) if rng is None else rng
    z = np.asarray(z, dtype=np.float64)
    _, g = obj.value_and_grad(z)
    V = _directions(obj, z, max_directions, rng)
    ref = []
    for v in V:
        # Step relative to the size of the unknowns the direction moves.
        scale = max(1.0, float(np.max(np.abs(z[v != 0])))) if np.any(v) else 1.0
        step = (h if h is not None else 1e-6 * scale) / max(np.max(np.abs(v)), 1e-300)
        ref.append((obj.fun(z + step * v) - obj.fun(z - step * v)) / (2 * step))
    return V, np.array(ref), V @ g


@dataclass
class TaylorResult:
    """Remainders ``|J(z + εv) − J(z) − ε g·v|`` and their observed orders.

    Attributes
    ----------
    eps : ndarray, shape (k,)
        The steps ``ε``, halving.
    remainders : ndarray, shape (k,)
        The remainder at each step.
    orders : ndarray, shape (k - 1,)
        ``log2(r(ε) / r(ε/2))`` for consecutive steps: 2 for a right
        gradient, 1 for a wrong one.

    Examples
    --------
    >>> import numpy as np
    >>> result = TaylorResult(np.array([1e-3, 5e-4, 2.5e-4]),
    ...                       np.array([4e-6, 1e-6, 2.5e-7]), np.array([2.0, 2.0]))
    >>> result.min_order
    2.0
    """

    eps: np.ndarray
    remainders: np.ndarray
    orders: np.ndarray

    @property
    def min_order(self) -> float:
        """The smallest observed order (the one a test should bound below)."""
        return float(np.min(self.orders))


def taylor_test(obj: Objective, z, v=None, *, eps0=None, n_halvings=5, rng=None):
    """Taylor remainder test of the gradient.

    With an exact gradient the remainder ``r(ε) = |J(z + εv) − J(z) − ε g·v|``
    shrinks like ``ε²``, so each halving of ``ε`` divides it by four and the
    observed order ``log2(r(ε) / r(ε/2))`` is 2; a wrong gradient gives 1.

    Parameters
    ----------
    obj : Objective
    z : array_like, shape (obj.size,)
        Where the gradient is tested.
    v : array_like, shape (obj.size,), optional
        The direction (default: random, from ``rng``).
    eps0 : float, optional
        First step; default ``1e-5 · max(1, |z|_∞) / |v|_∞``, small enough to be
        in the asymptotic range, and then enlarged (a few times at most) while
        the smallest remainder is within ``TAYLOR_NOISE_FACTOR`` roundings of
        ``J``, where the orders would measure rounding noise.
    n_halvings : int, optional
        How many times ``ε`` is halved (default 5, giving 5 orders).
    rng : numpy.random.Generator, optional
        Source of the random direction (default seeded with 1).

    Returns
    -------
    TaylorResult

    Examples
    --------
    >>> import sympy as sp
    >>> from adjoint import ODESystem, ODESequence, Objective, observation_cost
    >>> x, r = sp.symbols("x r")
    >>> system = ODESystem.from_sympy([r * x * (1 - x)], [x], [r])
    >>> obs = observation_cost([20], [0.8], N=20)
    >>> seq = ODESequence(system, dt=0.1, N=20, observations=obs)
    >>> obj = Objective(seq, x0=[0.1], p=[1.5], wrt=("x0", "p"))
    >>> result = taylor_test(obj, obj.z0)
    >>> bool(1.9 < result.min_order < 2.1)
    True
    """
    rng = np.random.default_rng(1) if rng is None else rng
    z = np.asarray(z, dtype=np.float64)
    if v is None:
        v = rng.standard_normal(obj.size)
    J, g = obj.value_and_grad(z)
    adapt = eps0 is None
    if adapt:
        eps0 = 1e-5 * max(1.0, np.max(np.abs(z))) / max(np.max(np.abs(v)), 1e-300)
    slope = float(g @ v)
    floor = TAYLOR_NOISE_FACTOR * np.finfo(np.float64).eps * max(abs(J), 1.0)
    for _ in range(TAYLOR_MAX_ENLARGE):
        eps = eps0 * 0.5 ** np.arange(n_halvings + 1)
        rem = np.array([abs(obj.fun(z + e * v) - J - e * slope) for e in eps])
        if not adapt or rem[-1] >= floor or rem[-1] == 0.0:
            break
        # The remainder grows like eps², so this aims just above the floor.
        eps0 *= min(2.0 * np.sqrt(floor / rem[-1]), 1e3)
    with np.errstate(divide="ignore", invalid="ignore"):
        orders = np.log2(rem[:-1] / rem[1:])
    return TaylorResult(eps, rem, orders)


@dataclass
class DotProductResult:
    """``<J v, w>`` from a tangent sweep against ``<v, Jᵀ w>`` from an adjoint sweep.

    Attributes
    ----------
    forward, reverse : float
        The two inner products.

    Examples
    --------
    >>> DotProductResult(forward=2.0, reverse=2.0).relative_error
    0.0
    >>> DotProductResult(forward=1.0, reverse=1.001).relative_error < 1e-3
    True
    """

    forward: float
    reverse: float

    @property
    def relative_error(self) -> float:
        """``|forward - reverse|`` over the larger of the two magnitudes."""
        return abs(self.forward - self.reverse) / max(
            abs(self.forward), abs(self.reverse), 1e-300
        )


def dot_product_test(obj: Objective, z, *, rng=None) -> DotProductResult:
    """Check the tangent and adjoint sweeps against each other.

    With random ``v`` (unknowns) and ``w`` (all states and the cost), the
    tangent sweep gives ``<J v, w>`` and the adjoint sweep ``<v, Jᵀ w>``; they
    agree to rounding when the two sweeps are transposes of each other.

    Parameters
    ----------
    obj : Objective
        Its sequence must have tangent (JVP) kernels.
    z : array_like, shape (obj.size,)
    rng : numpy.random.Generator, optional
        Source of ``v`` and ``w`` (default seeded with 2).

    Returns
    -------
    DotProductResult

    Raises
    ------
    NotImplementedError
        If the sequence has no tangent sweep.

    Examples
    --------
    >>> import sympy as sp
    >>> from adjoint import ODESystem, ODESequence, Objective, observation_cost
    >>> x, r = sp.symbols("x r")
    >>> system = ODESystem.from_sympy([r * x * (1 - x)], [x], [r])
    >>> obs = observation_cost([20], [0.8], N=20)
    >>> seq = ODESequence(system, dt=0.1, N=20, observations=obs)
    >>> obj = Objective(seq, x0=[0.1], p=[1.5], wrt=("x0", "p"))
    >>> bool(dot_product_test(obj, obj.z0).relative_error < 1e-12)
    True
    """
    rng = np.random.default_rng(2) if rng is None else rng
    traj = obj.trajectory(z)
    steps = list(range(obj.seq.N + 1))
    v = rng.standard_normal(obj.size)
    n_out = obj.seq._n_outputs(traj, steps)
    w = rng.standard_normal(n_out)
    w_cost = float(rng.standard_normal())
    xs_tan, J_tan = obj.jvp(z, v)
    forward = float(obj.seq._states_at(xs_tan, steps) @ w + J_tan * w_cost)
    xs_bar = obj.seq._states_cotangent(traj, w, steps)
    reverse = float(v @ obj.vjp(z, xs_bar, w_cost))
    return DotProductResult(forward, reverse)


@dataclass
class GradientReport:
    """What :func:`check_gradients` measured; ``str(report)`` is a short table.

    Attributes
    ----------
    n_unknowns : int
    lines : list of tuple
        One ``(name, value, target, passed)`` per check; ``passed`` is None
        for a line that only informs.
    taylor : TaylorResult or None
        The Taylor test's remainders.

    Examples
    --------
    >>> report = GradientReport(3, [("complex step vs adjoint (rel.)", 2e-16,
    ...                              "< 1e-10", True)])
    >>> report.passed, report.value("complex step vs adjoint (rel.)")
    (True, 2e-16)
    """

    n_unknowns: int
    lines: list = field(default_factory=list)  # (name, value, target, passed)
    taylor: TaylorResult | None = None

    @property
    def passed(self) -> bool:
        """True when every check met its target."""
        return all(line[3] for line in self.lines if line[3] is not None)

    def value(self, name):
        """The measured value of the check called ``name``.

        Raises
        ------
        KeyError
            If the report has no such check.
        """
        for line in self.lines:
            if line[0] == name:
                return line[1]
        raise KeyError(name)

    def __str__(self) -> str:
        rows = [f"Gradient checks on {self.n_unknowns} unknowns"]
        for name, value, target, passed in self.lines:
            mark = "-" if passed is None else ("ok" if passed else "FAIL")
            if isinstance(value, (list, tuple, np.ndarray)):
                shown = " ".join(f"{v:.3f}" for v in value)
            else:
                shown = f"{value:.2e}"
            rows.append(f"  {name:<34} {shown:<36} {target:<16} {mark}")
        rows.append("  all passed" if self.passed else "  SOME CHECKS FAILED")
        return "\n".join(rows)


def check_gradients(
    obj: Objective, z=None, *, rng=None, complex_step=None, jacobian=True
) -> GradientReport:
    """Run every gradient check on an objective and return a report.

    Runs, at ``z`` (default ``obj.z0``): complex step (where the sequence has
    a complex forward sweep) and central differences against the adjoint
    gradient; the Taylor remainder test; the dot-product test of the tangent
    and adjoint sweeps; and forward- against reverse-mode Jacobians of the
    final state.  Checks a sequence cannot run (no tangent kernel, no complex
    sweep) are left out of the report.

    Parameters
    ----------
    obj : Objective
    z : array_like, shape (obj.size,), optional
        Where to check (default ``obj.z0``).
    rng : numpy.random.Generator, optional
        Source of random directions (default seeded with 3).
    complex_step : bool, optional
        ``None`` (default): run the complex-step check where the sequence
        allows it; ``True``: require it (raise if impossible); ``False``:
        skip it.
    jacobian : bool, optional
        Also compare forward- and reverse-mode Jacobians of the final state
        (default True).

    Returns
    -------
    GradientReport
        ``report.passed`` is True when every check met its target.

    Raises
    ------
    NotImplementedError
        With ``complex_step=True`` on a sequence without a complex sweep.

    Examples
    --------
    >>> import sympy as sp
    >>> from adjoint import ODESystem, ODESequence, Objective, observation_cost
    >>> x, r = sp.symbols("x r")
    >>> system = ODESystem.from_sympy([r * x * (1 - x)], [x], [r])
    >>> obs = observation_cost([20], [0.8], N=20)
    >>> seq = ODESequence(system, dt=0.1, N=20, observations=obs)
    >>> obj = Objective(seq, x0=[0.1], p=[1.5], wrt=("x0", "p"))
    >>> report = check_gradients(obj)
    >>> report.passed
    True
    >>> print(report)  # doctest: +SKIP
    Gradient checks on 2 unknowns
      complex step vs adjoint (rel.)     1.07e-15      < 1e-10          ok
      ...
    """
    if obj.size == 0:
        raise ValueError(
            "The objective has no unknowns (its `wrt` blocks are empty), so there "
            "is no gradient to check."
        )
    rng = np.random.default_rng(3) if rng is None else rng
    z = obj.z0 if z is None else np.asarray(z, dtype=np.float64)
    report = GradientReport(obj.size)
    if complex_step is None or complex_step:
        try:
            _, ref, adj = complex_step_gradient(obj, z, rng=rng)
            err = relative_error(adj, ref)
            report.lines.append(
                (
                    "complex step vs adjoint (rel.)",
                    err,
                    f"< {COMPLEX_STEP_RTOL:.0e}",
                    err < COMPLEX_STEP_RTOL,
                )
            )
        except NotImplementedError:
            if complex_step:
                raise
    _, ref, adj = finite_difference_gradient(obj, z, rng=rng)
    err = relative_error(adj, ref)
    report.lines.append(
        ("central differences vs adjoint", err, f"< {FD_RTOL:.0e}", err < FD_RTOL)
    )
    taylor = taylor_test(obj, z, rng=rng)
    report.taylor = taylor
    lo, hi = TAYLOR_ORDER_RANGE
    ok = bool(np.all((taylor.orders >= lo) & (taylor.orders <= hi)))
    report.lines.append(
        ("Taylor remainder orders", taylor.orders, f"in [{lo}, {hi}]", ok)
    )
    if obj.seq._has_tangent():
        dot = dot_product_test(obj, z, rng=rng)
        report.lines.append(
            (
                "dot-product test (rel.)",
                dot.relative_error,
                f"< {DOT_PRODUCT_RTOL:.0e}",
                dot.relative_error < DOT_PRODUCT_RTOL,
            )
        )
        if jacobian:
            # Full Jacobians for few unknowns; otherwise the final state's
            # Jacobian along MAX_DIRECTIONS random directions (one tangent
            # sweep each) against the reverse-mode Jacobian times them.
            jr = obj.jacobian(z, mode="reverse")
            if obj.size <= MAX_DIRECTIONS:
                jf = obj.jacobian(z, mode="forward")
            else:
                V = rng.standard_normal((MAX_DIRECTIONS, obj.size))
                steps = obj.seq._output_steps(None)
                jf = np.column_stack(
                    [obj.seq._states_at(obj.jvp(z, v)[0], steps) for v in V]
                )
                jr = jr @ V.T
            err = relative_error(jf, jr)
            report.lines.append(
                (
                    "forward vs reverse Jacobian (rel.)",
                    err,
                    f"< {JACOBIAN_RTOL:.0e}",
                    err < JACOBIAN_RTOL,
                )
            )
    return report
