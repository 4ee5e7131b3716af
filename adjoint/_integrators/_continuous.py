"""The continuous adjoint: an independent route to ODE gradients via ``solve_ivp``.

"Optimise then discretise": the adjoint ODE

    λ' = −(∂f/∂x)ᵀ λ − ∂g/∂x,
    μ' = −(∂f/∂p)ᵀ λ − ∂g/∂p

is solved backward in time with SciPy's adaptive (or stiff) solvers, using
the dense output of an adaptive forward solve.  Its gradient approximates the
derivative of the *exact* cost to the solver tolerances; it is not the
derivative of any discrete scheme.  :func:`compare_adjoints` sets it beside
the discrete adjoint of an :class:`~adjoint.ODESequence`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import solve_ivp

from .. import _validate
from .._check import relative_error
from .._objective import Objective
from .._systems import ODESystem
from ._observations import ObservationCost

__all__ = [
    "AdjointComparison",
    "ContinuousAdjointResult",
    "compare_adjoints",
    "continuous_adjoint_gradient",
]

STIFF_METHODS = ("Radau", "BDF", "LSODA")
METHODS = ("RK45", "RK23", "DOP853", *STIFF_METHODS)


@dataclass
class ContinuousAdjointResult:
    """What :func:`continuous_adjoint_gradient` computed.

    Attributes
    ----------
    J : float
        The cost on the adaptive forward solution.
    grad_x0 : ndarray, shape (n,)
    grad_p : ndarray, shape (n_p,)
    grad_u : ndarray, shape (N, n_u) or None
        Gradient with respect to the piecewise-constant controls, if given.
    method : str
    nfev, njev : int
        Right-hand-side and Jacobian evaluations of both solves (SciPy's
        counts).
    n_segments : int
        Intervals solved separately (split at observation times and control
        switches).
    time_forward, time_backward : float
        Wall time of the two solves, in seconds.

    Examples
    --------
    :func:`continuous_adjoint_gradient` makes one; :meth:`gradient` stacks
    its blocks in the order of :class:`~adjoint.Objective`:

    >>> import numpy as np
    >>> from adjoint import ContinuousAdjointResult
    >>> result = ContinuousAdjointResult(
    ...     J=1.0, grad_x0=np.array([2.0]), grad_p=np.array([3.0, 4.0]),
    ...     grad_u=None, method="RK45")
    >>> result.gradient(("x0", "p"))
    array([2., 3., 4.])
    """

    J: float
    grad_x0: np.ndarray
    grad_p: np.ndarray
    grad_u: np.ndarray | None
    method: str
    nfev: int = 0
    njev: int = 0
    n_segments: int = 0
    time_forward: float = 0.0
    time_backward: float = 0.0

    def gradient(self, wrt) -> np.ndarray:
        """The gradient blocks named in ``wrt`` stacked as in :class:`Objective`.

        Parameters
        ----------
        wrt : sequence of str
            Any of ``'x0'``, ``'theta'``, ``'p'``; the result stacks them in
            that fixed order, whatever the order given.

        Returns
        -------
        ndarray

        Raises
        ------
        ValueError
            If ``wrt`` holds ``'theta'`` but there were no controls.
        """
        blocks = {"x0": self.grad_x0, "theta": self.grad_u, "p": self.grad_p}
        parts = []
        for name in ("x0", "theta", "p"):
            if name in wrt:
                if blocks[name] is None:
                    raise ValueError("There are no controls, so no 'theta' gradient.")
                parts.append(np.ravel(blocks[name]))
        return np.concatenate(parts)


def continuous_adjoint_gradient(
    system: ODESystem,
    x0,
    p,
    *,
    t1: float,
    t0: float = 0.0,
    u=None,
    observations: ObservationCost | None = None,
    terminal_cost=None,
    running_cost_density=None,
    method: str = "RK45",
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> ContinuousAdjointResult:
    """Gradient of a cost of an ODE solution by the continuous adjoint.

    The cost is

        J = Σ_r g_r(x(τ_r)) + Φ(x(t1), p) + ∫_{t0}^{t1} G(t, x, p, u) dt,

    with point costs ``g_r`` at observation times ``τ_r``, a terminal cost
    ``Φ`` and a running cost density ``G``.  The forward problem is solved
    with ``solve_ivp(..., dense_output=True)``, then, backward from
    ``λ(t1) = ∂Φ/∂x``,

        λ' = −(∂f/∂x)ᵀλ − ∂G/∂x,
        μ' = −(∂f/∂p)ᵀλ − ∂G/∂p,
        ν_k' = −(∂f/∂u)ᵀλ

    with jumps ``λ(τ_r⁻) = λ(τ_r⁺) + ∂g_r/∂x`` at point observations, so
    ``dJ/dx0 = λ(t0)``, ``dJ/dp = ∂Φ/∂p + μ(t0)`` and the gradient with
    respect to the control on ``[t_k, t_{k+1})`` is ``ν_k``.  Stiff methods
    receive the exact Jacobians of both problems.

    Parameters
    ----------
    system : ODESystem
    x0 : array_like, shape (n,)
    p : array_like, shape (n_p,)
    t1 : float
        Final time.
    t0 : float, optional
        Initial time (default 0).
    u : array_like, shape (N, n_u), optional
        Controls, constant on each of ``N`` equal intervals of ``[t0, t1]``.
        Required when the system has controls.
    observations : ObservationCost, optional
        Point costs at ``τ_r = t0 + k_r (t1 − t0)/N_obs`` for the observation
        steps ``k_r`` (``N_obs = observations.N``): the misfit of the
        discrete sequence, at exact states.
    terminal_cost : callable, optional
        ``terminal_cost(x, p) -> (phi, dphi_dx, dphi_dp)``.
    running_cost_density : callable, optional
        ``running_cost_density(t, x, p, u) -> (G, dG_dx, dG_dp[, dG_du])``.
    method : str, optional
        ``'RK45'`` (default), ``'RK23'``, ``'DOP853'``, or a stiff method
        ``'Radau'``, ``'BDF'``, ``'LSODA'`` (given the Jacobian).
    rtol, atol : float, optional
        Tolerances of both solves.

    Returns
    -------
    ContinuousAdjointResult

    Raises
    ------
    TypeError
        If ``system`` is not an :class:`~adjoint.ODESystem` or
        ``observations`` not an :class:`~adjoint.ObservationCost`.
    ValueError
        For an unknown ``method``, ``t1 <= t0``, arrays of the wrong shape,
        missing ``u`` for a system with controls, or observations that do not
        fit the system.
    RuntimeError
        If a forward or backward ``solve_ivp`` fails (the message names the
        interval).

    Warnings
    --------
    This gradient approximates the derivative of the cost of the *exact*
    solution, to the solver tolerances: it is not the gradient of the cost an
    :class:`~adjoint.ODESequence` computes, which is that of the discrete
    scheme.  The two differ by the discretisation error (order ``dt^q`` for a
    scheme of order ``q``), and the continuous adjoint is also less accurate
    than its tolerances suggest where the backward solve meets the forward
    solution's interpolation error.  For optimisation of a discretised model
    use the discrete adjoint (:class:`~adjoint.Objective`); use this route to
    check models and to study convergence.

    See Also
    --------
    compare_adjoints : The same beside the discrete adjoint of a sequence.

    Examples
    --------
    Exponential decay ``x' = −p x`` with the terminal cost ``Φ = x(t1)``, so
    that ``dJ/dx0 = e^{−p t1}`` and ``dJ/dp = −t1 x0 e^{−p t1}``:

    >>> import numpy as np
    >>> from adjoint import ODESystem, continuous_adjoint_gradient
    >>> def decay(t, x, p, u, out):
    ...     out[0] = -p[0] * x[0]
    ...     return 0
    >>> system = ODESystem.from_rhs(decay, n=1, n_p=1)
    >>> def phi(x, p):
    ...     return x[0], np.array([1.0]), np.zeros(1)
    >>> res = continuous_adjoint_gradient(system, [1.0], [0.5], t1=2.0,
    ...                                   terminal_cost=phi)
    >>> np.round(res.grad_x0, 6), np.round(res.grad_p, 6)
    (array([0.367879]), array([-0.735759]))
    """
    # ---- check inputs ----
    if not isinstance(system, ODESystem):
        raise TypeError(f"`system` must be an ODESystem, got {type(system).__name__}.")
    _validate.choice("method", method, METHODS)
    t0 = _validate.finite_float("t0", t0)
    t1 = _validate.finite_float("t1", t1)
    if not t1 > t0:
        raise ValueError(f"`t1` must be greater than `t0`; got t0 = {t0}, t1 = {t1}.")
    x0 = _validate.real_array(
        "x0", x0, (system.n,), what=f"the system has n = {system.n}"
    )
    p = _validate.real_array(
        "p",
        np.zeros(0) if p is None else p,
        (system.n_p,),
        what=f"the system has n_p = {system.n_p}",
    )
    if u is None:
        if system.n_u:
            raise ValueError(
                f"The system has n_u = {system.n_u} controls; pass `u` with shape "
                f"(N, {system.n_u})."
            )
        u = np.zeros((1, 0))
        has_u = False
    else:
        u = np.asarray(u, dtype=np.float64)
        if u.ndim != 2 or u.shape[1] != system.n_u or u.shape[0] < 1:
            raise ValueError(
                f"`u` has shape {u.shape}; the system has n_u = {system.n_u}, so `u` "
                f"must have shape (N, {system.n_u})."
            )
        u = _validate.real_array("u", u)
        has_u = True
    point_steps, point_N, point_cost = [], 1, None
    if observations is not None:
        if not isinstance(observations, ObservationCost):
            raise TypeError("`observations` must come from adjoint.observation_cost.")
        observations.check_fits(system.n, observations.N)
        point_N = observations.N
        point_steps = sorted(int(k) for k in observations.obs_steps)

        def point_cost(k, x, u_k):
            g, gx = observations.misfit(k, x)
            return g, gx, np.zeros(system.n_p), np.zeros(system.n_u)

    return _solve(
        system,
        x0,
        p,
        t0,
        t1,
        u,
        has_u,
        point_steps,
        point_N,
        point_cost,
        terminal_cost,
        running_cost_density,
        method,
        rtol,
        atol,
    )


def _solve(
    system,
    x0,
    p,
    t0,
    t1,
    u,
    has_u,
    point_steps,
    point_N,
    point_cost,
    terminal_cost,
    density,
    method,
    rtol,
    atol,
    need_u=True,
):
    """The two solves; point costs at ``t0 + k (t1 - t0)/point_N``."""
    n, n_p, n_u = system.n, system.n_p, system.n_u
    N_u = u.shape[0]
    stiff = method in STIFF_METHODS

    # ---- segment boundaries: observation times and control switches ----
    span = t1 - t0
    marks = {0.0: None, 1.0: None}
    for k in point_steps:
        marks[k / point_N] = None
    if has_u:
        for k in range(1, N_u):
            # Without control gradients, equal neighbouring controls share a
            # segment; with them, each control interval gets its own ν_k.
            if need_u or np.any(u[k] != u[k - 1]):
                marks[k / N_u] = None
    fractions = np.array(sorted(marks))
    times = t0 + span * fractions
    times[-1] = t1
    point_at = {k / point_N: k for k in point_steps}

    def control_at(fa, fb):
        k = min(int(0.5 * (fa + fb) * N_u), N_u - 1)
        return k, u[k]

    def density_terms(t, x, u_k):
        out = density(t, x, p, u_k)
        g, gx, gp = out[0], np.asarray(out[1], float), np.asarray(out[2], float)
        gu = np.asarray(out[3], float) if len(out) > 3 else np.zeros(n_u)
        return float(g), gx, gp, gu

    # ---- forward, segment by segment ----
    clock = time.perf_counter()
    sols, nfev, njev = [], 0, 0
    y = np.concatenate([x0, [0.0]]) if density is not None else x0.copy()
    f_buf = np.empty(n)
    jac_buf = np.empty((n, n))
    for i_seg in range(len(fractions) - 1):
        a, b = times[i_seg], times[i_seg + 1]
        k_u, u_k = control_at(fractions[i_seg], fractions[i_seg + 1])

        def fun(t, y, u_k=u_k):
            x = np.ascontiguousarray(y[:n])
            f = system._f(t, x, p, u_k, f_buf).copy()
            if density is None:
                return f
            return np.append(f, density_terms(t, x, u_k)[0])

        def jac(t, y, u_k=u_k):
            x = np.ascontiguousarray(y[:n])
            jx = system._jac_x(t, x, p, u_k, jac_buf).copy()
            if density is None:
                return jx
            full = np.zeros((n + 1, n + 1))
            full[:n, :n] = jx
            full[n, :n] = density_terms(t, x, u_k)[1]
            return full

        kw = {"jac": jac} if stiff else {}
        sol = solve_ivp(
            fun, (a, b), y, method=method, rtol=rtol, atol=atol, dense_output=True, **kw
        )
        if not sol.success:
            raise RuntimeError(
                f"The forward solve failed on [{a:g}, {b:g}]: {sol.message}"
            )
        nfev += sol.nfev
        njev += sol.njev
        sols.append((fractions[i_seg], a, b, k_u, u_k, sol))
        y = sol.y[:, -1].copy()
    time_forward = time.perf_counter() - clock

    # ---- cost and the starting adjoint ----
    clock = time.perf_counter()
    last = sols[-1][5]
    x_end = np.ascontiguousarray(last.y[:n, -1])
    J = float(last.y[n, -1]) if density is not None else 0.0
    lam = np.zeros(n)
    grad_p = np.zeros(n_p)
    grad_u = np.zeros((N_u, n_u))
    if terminal_cost is not None:
        phi, phi_x, phi_p = terminal_cost(x_end, p)
        J += float(phi)
        lam += np.asarray(phi_x, dtype=np.float64)
        grad_p += np.asarray(phi_p, dtype=np.float64)

    def jump(fraction, x, u_k, k_u):
        """Add the point cost at this time (if any) to J, λ and the gradients."""
        nonlocal J
        k = point_at.get(fraction)
        if k is None:
            return
        g, gx, gp, gu = point_cost(k, x, u_k)
        J += g
        lam[:] += gx
        grad_p[:] += gp
        if has_u:
            grad_u[k_u] += gu

    jump(1.0, x_end, sols[-1][4], sols[-1][3])

    # ---- backward, segment by segment ----
    xb, pb, ub = np.empty(n), np.empty(n_p), np.empty(n_u)
    for index in range(len(sols) - 1, -1, -1):
        fraction, a, b, k_u, u_k, sol = sols[index]

        def back(t, z, sol=sol, u_k=u_k):
            x = np.ascontiguousarray(sol.sol(t)[:n])
            lam_t = np.ascontiguousarray(z[:n])
            xb[:] = 0.0
            pb[:] = 0.0
            ub[:] = 0.0
            system._vjp(t, x, p, u_k, lam_t, xb, pb, ub)
            dz = -np.concatenate([xb, pb, ub])
            if density is not None:
                _, gx, gp, gu = density_terms(t, x, u_k)
                dz -= np.concatenate([gx, gp, gu])
            return dz

        def back_jac(t, z, sol=sol, u_k=u_k):
            x = np.ascontiguousarray(sol.sol(t)[:n])
            jx, jp, ju = system._jacobians(t, x, p, u_k)
            full = np.zeros((n + n_p + n_u,) * 2)
            full[:n, :n] = -jx.T
            full[n : n + n_p, :n] = -jp.T
            full[n + n_p :, :n] = -ju.T
            return full

        kw = {"jac": back_jac} if stiff else {}
        z_end = np.concatenate([lam, np.zeros(n_p), np.zeros(n_u)])
        res = solve_ivp(back, (b, a), z_end, method=method, rtol=rtol, atol=atol, **kw)
        if not res.success:
            raise RuntimeError(
                f"The backward (adjoint) solve failed on [{a:g}, {b:g}]: {res.message}"
            )
        nfev += res.nfev
        njev += res.njev
        z = res.y[:, -1]
        lam[:] = z[:n]
        grad_p += z[n : n + n_p]
        if has_u:
            grad_u[k_u] += z[n + n_p :]
        x_a = np.ascontiguousarray(sol.y[:n, 0])
        jump(fraction, x_a, u_k, k_u)
    time_backward = time.perf_counter() - clock

    return ContinuousAdjointResult(
        J=J,
        grad_x0=lam.copy(),
        grad_p=grad_p,
        grad_u=grad_u if has_u else None,
        method=method,
        nfev=nfev,
        njev=njev,
        n_segments=len(sols),
        time_forward=time_forward,
        time_backward=time_backward,
    )


@dataclass
class AdjointComparison:
    """Discrete and continuous adjoint gradients of one ODE cost side by side.

    Attributes
    ----------
    J_discrete, J_continuous : float
    discrete, continuous : ndarray
        Gradients with respect to the unknowns ``wrt`` (stacked as in
        :class:`~adjoint.Objective`).
    relative_difference : float
        ``max|discrete − continuous| / max|continuous|``.
    blocks : dict
        The same per block (``'x0'``, ``'theta'``, ``'p'``).
    time_discrete, time_continuous : float
        Wall time of each route (value and gradient), seconds.
    result : ContinuousAdjointResult

    Examples
    --------
    :func:`compare_adjoints` makes one; ``blocks`` holds the relative
    difference per block:

    >>> from adjoint import ODESequence, ODESystem, compare_adjoints
    >>> from adjoint import observation_cost
    >>> def decay(t, x, p, u, out):
    ...     out[0] = -p[0] * x[0]
    ...     return 0
    >>> system = ODESystem.from_rhs(decay, n=1, n_p=1)
    >>> seq = ODESequence(system, scheme="rk4", dt=0.1, N=20,
    ...                   observations=observation_cost([20], [0.3], N=20))
    >>> comparison = compare_adjoints(seq, [1.0], [0.5])
    >>> sorted(comparison.blocks), bool(comparison.relative_difference < 1e-5)
    (['p', 'x0'], True)
    """

    J_discrete: float
    J_continuous: float
    discrete: np.ndarray
    continuous: np.ndarray
    relative_difference: float
    blocks: dict = field(default_factory=dict)
    time_discrete: float = 0.0
    time_continuous: float = 0.0
    result: ContinuousAdjointResult | None = None


def compare_adjoints(
    seq,
    x0,
    p,
    thetas=None,
    *,
    wrt=("x0", "p"),
    method: str = "RK45",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    terminal_cost=None,
    running_cost_density=None,
) -> AdjointComparison:
    """Compare the discrete adjoint of ``seq`` with the continuous adjoint.

    The discrete gradient is that of ``seq`` (an :class:`ODESequence`);
    the continuous one (:func:`continuous_adjoint_gradient`) is of the same
    cost at the exact solution: the sequence's running cost kernels become
    point costs at the times ``t_k`` (its observation cost, if it has one),
    its terminal cost kernel the terminal cost, with the controls
    ``thetas`` held constant on each step.  The two agree up to the
    discretisation error of the scheme and the solver tolerances.

    Parameters
    ----------
    seq : ODESequence
    x0, p, thetas : array_like
        The point of comparison (``thetas`` are the controls ``u_k``).
    wrt : str or sequence of str, optional
        Blocks to compare (default ``('x0', 'p')``).
    method, rtol, atol : optional
        Passed to :func:`continuous_adjoint_gradient`.
    terminal_cost, running_cost_density : callable, optional
        Extra continuous-only terms (see :func:`continuous_adjoint_gradient`);
        they have no counterpart in the discrete cost, so use them only for a
        sequence without cost kernels.

    Returns
    -------
    AdjointComparison

    Raises
    ------
    TypeError
        If ``seq`` is not an :class:`~adjoint.ODESequence`.
    ValueError
        If ``wrt`` names an unknown block, an input has the wrong shape, or
        ``method`` is unknown.
    RuntimeError
        If a ``solve_ivp`` of the continuous route fails.

    See Also
    --------
    gradient_convergence : The difference as the step shrinks.

    Examples
    --------
    Heun's method on 20 steps against the continuous adjoint: they differ by
    the discretisation error, about ``dt²``:

    >>> from adjoint import ODESequence, ODESystem, compare_adjoints
    >>> from adjoint import observation_cost
    >>> def decay(t, x, p, u, out):
    ...     out[0] = -p[0] * x[0]
    ...     return 0
    >>> system = ODESystem.from_rhs(decay, n=1, n_p=1)
    >>> seq = ODESequence(system, scheme="heun", dt=0.1, N=20,
    ...                   observations=observation_cost([20], [0.3], N=20))
    >>> comparison = compare_adjoints(seq, [1.0], [0.5], wrt="p")
    >>> round(comparison.relative_difference, 4)
    0.0015
    """
    from ._ode_sequence import ODESequence

    if not isinstance(seq, ODESequence):
        raise TypeError(f"`seq` must be an ODESequence, got {type(seq).__name__}.")
    wrt = (wrt,) if isinstance(wrt, str) else tuple(wrt)

    # ---- discrete ----
    clock = time.perf_counter()
    obj = Objective(seq, x0=x0, thetas=thetas, p=p, wrt=wrt)
    J_d, g_d = obj.value_and_grad(obj.z0)
    time_discrete = time.perf_counter() - clock

    # ---- continuous, with the sequence's own cost kernels ----
    system, N = seq.system, seq.N
    x0_, thetas_, p_ = obj.x0, obj.thetas, obj.p
    zero = seq.running_cost.name == "zero_running_cost"
    if seq.observations is not None:
        obs = seq.observations
        steps = [int(k) for k in obs.obs_steps]

        def point_cost(k, x, u_k):
            g, gx = obs.misfit(k, x)
            return g, gx, np.zeros(system.n_p), np.zeros(system.n_u)
    else:
        steps = [] if zero else list(range(N))
        rc, rc_vjp = seq.running_cost, seq.running_cost_vjp

        def point_cost(k, x, u_k):
            g = float(rc(k, x, u_k, p_, seq.consts, seq.data[k]))
            gx, gu, gp = np.zeros(system.n), np.zeros(system.n_u), np.zeros(system.n_p)
            rc_vjp(k, x, u_k, p_, seq.consts, seq.data[k], 1.0, gx, gu, gp)
            return g, gx, gp, gu

        tc, tc_vjp = seq.terminal_cost, seq.terminal_cost_vjp
        if tc.name != "zero_terminal_cost":
            user_terminal = terminal_cost

            def terminal_cost(x, p_arg):
                phi = float(tc(x, p_arg, seq.consts, seq.data[N]))
                gx, gp = np.zeros(system.n), np.zeros(system.n_p)
                tc_vjp(x, p_arg, seq.consts, seq.data[N], 1.0, gx, gp)
                if user_terminal is not None:
                    phi2, gx2, gp2 = user_terminal(x, p_arg)
                    phi, gx, gp = phi + phi2, gx + gx2, gp + gp2
                return phi, gx, gp

    clock = time.perf_counter()
    has_u = system.n_u > 0
    result = _solve(
        system,
        x0_,
        p_,
        seq.t0,
        seq.t1,
        thetas_ if has_u else np.zeros((1, 0)),
        has_u,
        steps,
        N,
        point_cost if steps else None,
        terminal_cost,
        running_cost_density,
        method,
        rtol,
        atol,
        need_u="theta" in obj.wrt,
    )
    time_continuous = time.perf_counter() - clock

    g_c = result.gradient(obj.wrt)
    blocks = {}
    i = 0
    for name, size in zip(obj.wrt, obj._sizes):
        blocks[name] = relative_error(g_d[i : i + size], g_c[i : i + size])
        i += size
    return AdjointComparison(
        J_discrete=float(J_d),
        J_continuous=result.J,
        discrete=g_d,
        continuous=g_c,
        relative_difference=relative_error(g_d, g_c),
        blocks=blocks,
        time_discrete=time_discrete,
        time_continuous=time_continuous,
        result=result,
    )
