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
COMPLEX_STEP_H = 1e-30  # far below roundoff of any perturbation that matters
# The Taylor test's smallest remainder must exceed this many roundings of J
# (a remainder at rounding level gives meaningless orders), and the default
# first step is enlarged at most this many times to get there.
TAYLOR_NOISE_FACTOR = 1e4
TAYLOR_MAX_ENLARGE = 4


def relative_error(a, b) -> float:
    """``max|a - b| / max|b|`` (absolute when ``b`` is zero)."""
    a, b = np.asarray(a), np.asarray(b)
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if a.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def _directions(obj, z, max_directions, rng):
    """Unit vectors when there are few unknowns, random directions otherwise."""
    if obj.size <= max_directions:
        return np.eye(obj.size)
    return rng.standard_normal((max_directions, obj.size))


def complex_step_gradient(obj: Objective, z, *, max_directions=60, rng=None):
    """Directional derivatives of ``J`` by complex step, with the adjoint's.

    Returns ``(directions, reference, adjoint)``: for each direction ``v``, the
    complex-step ``Im J(z + i h v) / h`` and the adjoint gradient's ``g·v``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    z = np.asarray(z, dtype=np.float64)
    _, g = obj.value_and_grad(z)
    V = _directions(obj, z, max_directions, rng)
    ref = np.array([obj.fun_complex(z + 1j * COMPLEX_STEP_H * v)[1].imag
                    / COMPLEX_STEP_H for v in V])
    return V, ref, V @ g


def finite_difference_gradient(obj: Objective, z, *, h=None, max_directions=60,
                               rng=None):
    """Central differences of ``J`` along unit or random directions.

    Returns ``(directions, reference, adjoint)`` as :func:`complex_step_gradient`.
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
    """Remainders ``|J(z + εv) − J(z) − ε g·v|`` and their observed orders."""

    eps: np.ndarray
    remainders: np.ndarray
    orders: np.ndarray

    @property
    def min_order(self) -> float:
        return float(np.min(self.orders))


def taylor_test(obj: Objective, z, v=None, *, eps0=None, n_halvings=5, rng=None):
    """Taylor remainder test of the gradient.

    With an exact gradient the remainder ``r(ε) = |J(z + εv) − J(z) − ε g·v|``
    shrinks like ``ε²``, so each halving of ``ε`` divides it by four and the
    observed order ``log2(r(ε) / r(ε/2))`` is 2; a wrong gradient gives 1.

    Parameters
    ----------
    eps0 : float, optional
        First step; default ``1e-5 · max(1, |z|_∞) / |v|_∞``, small enough to be
        in the asymptotic range, and then enlarged (a few times at most) while
        the smallest remainder is within ``TAYLOR_NOISE_FACTOR`` roundings of
        ``J``, where the orders would measure rounding noise.

    Returns
    -------
    TaylorResult
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
    """``<J v, w>`` from a tangent sweep against ``<v, Jᵀ w>`` from an adjoint sweep."""

    forward: float
    reverse: float

    @property
    def relative_error(self) -> float:
        return abs(self.forward - self.reverse) / max(abs(self.forward),
                                                     abs(self.reverse), 1e-300)


def dot_product_test(obj: Objective, z, *, rng=None) -> DotProductResult:
    """Check the tangent and adjoint sweeps against each other.

    With random ``v`` (unknowns) and ``w`` (all states and the cost), the
    tangent sweep gives ``<J v, w>`` and the adjoint sweep ``<v, Jᵀ w>``; they
    agree to rounding when the two sweeps are transposes of each other.
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
    """What :func:`check_gradients` measured; ``str(report)`` is a short table."""

    n_unknowns: int
    lines: list = field(default_factory=list)  # (name, value, target, passed)
    taylor: TaylorResult | None = None

    @property
    def passed(self) -> bool:
        return all(line[3] for line in self.lines if line[3] is not None)

    def value(self, name):
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


def check_gradients(obj: Objective, z=None, *, rng=None, complex_step=None,
                    jacobian=True) -> GradientReport:
    """Run every gradient check on an objective and return a report.

    Runs, at ``z`` (default ``obj.z0``): complex step (where the sequence has
    a complex forward sweep) and central differences against the adjoint
    gradient; the Taylor remainder test; the dot-product test of the tangent
    and adjoint sweeps; and forward- against reverse-mode Jacobians of the
    final state.  Checks a sequence cannot run (no tangent kernel, no complex
    sweep) are left out of the report.

    Returns
    -------
    GradientReport
        ``report.passed`` is True when every check met its target.
    """
    rng = np.random.default_rng(3) if rng is None else rng
    z = obj.z0 if z is None else np.asarray(z, dtype=np.float64)
    report = GradientReport(obj.size)
    if complex_step is None or complex_step:
        try:
            _, ref, adj = complex_step_gradient(obj, z, rng=rng)
            err = relative_error(adj, ref)
            report.lines.append(("complex step vs adjoint (rel.)", err,
                                 f"< {COMPLEX_STEP_RTOL:.0e}", err < COMPLEX_STEP_RTOL))
        except NotImplementedError:
            if complex_step:
                raise
    _, ref, adj = finite_difference_gradient(obj, z, rng=rng)
    err = relative_error(adj, ref)
    report.lines.append(("central differences vs adjoint", err,
                         f"< {FD_RTOL:.0e}", err < FD_RTOL))
    taylor = taylor_test(obj, z, rng=rng)
    report.taylor = taylor
    lo, hi = TAYLOR_ORDER_RANGE
    ok = bool(np.all((taylor.orders >= lo) & (taylor.orders <= hi)))
    report.lines.append(("Taylor remainder orders", taylor.orders,
                         f"in [{lo}, {hi}]", ok))
    if obj.seq._has_tangent():
        dot = dot_product_test(obj, z, rng=rng)
        report.lines.append(("dot-product test (rel.)", dot.relative_error,
                             f"< {DOT_PRODUCT_RTOL:.0e}",
                             dot.relative_error < DOT_PRODUCT_RTOL))
        if jacobian:
            jf = obj.jacobian(z, mode="forward")
            jr = obj.jacobian(z, mode="reverse")
            err = relative_error(jf, jr)
            report.lines.append(("forward vs reverse Jacobian (rel.)", err,
                                 f"< {JACOBIAN_RTOL:.0e}", err < JACOBIAN_RTOL))
    return report
