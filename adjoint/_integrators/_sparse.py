"""Implicit steps with sparse LU, for large banded systems (method of lines).

When a system declares the sparsity of ``∂f/∂x`` (``jac_sparsity`` or
``bandwidth``), the implicit schemes run here instead of in the compiled
dense sweeps: a Python loop over steps that assembles ``∂f/∂x`` as a sparse
matrix from one JVP per group of structurally independent columns (for a
band of width ``l + u + 1``, that many JVPs whatever ``n``), factors
``I - θ dt ∂f/∂x`` with SciPy's ``splu`` and solves with it (Newton, forward)
or its transpose (once per step, backward).  The per-step Python overhead
(tens of microseconds) is small beside a sparse LU of a large system; for
small systems the dense compiled sweeps are faster.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sps
from scipy.sparse.linalg import splu

from .._errors import SweepError
from . import _kernels as ik


def newton_matrix(system, t, z, p, u, theta_dt):
    """``I - theta_dt ∂f/∂x(t, z)`` as a CSC matrix."""
    jac = system._sparse_jac_x(t, z, p, u)
    return (sps.identity(system.n, format="csc") - theta_dt * jac).tocsc()


def factor(M, k):
    try:
        return splu(M)
    except RuntimeError as err:  # "Factor is exactly singular"
        raise SweepError(
            f"The matrix I - θ dt ∂f/∂x is singular at step {k}. Take smaller "
            "steps (`dt`)."
        ) from err


def _point(code, t, dt, x, y):
    if code == ik.IMPLICIT_MIDPOINT:
        return 0.5 * (x + y), t + 0.5 * dt, 0.5, dt
    if code == ik.CRANK_NICOLSON:
        return y.copy(), t + dt, 0.5, 0.5 * dt
    return y.copy(), t + dt, 1.0, dt


def forward(seq, x0, us, p):
    """Newton steps with sparse LU; returns ``(xs, J, extra)``."""
    system, code, dt = seq.system, seq._implicit_code, seq.dt
    n, N = seq.n, seq.N
    xs = np.empty((N + 1, n))
    xs[0] = x0
    f_z = np.empty(n)
    f_old = np.zeros(n)
    nit = 0
    for k in range(N):
        t = seq.t0 + k * dt
        x, u = xs[k], us[k]
        if code == ik.CRANK_NICOLSON:
            system._f(t, x, p, u, f_old)
        y = x.copy()
        r_norm = np.inf
        for _ in range(seq.max_iter):
            z, t_z, theta, gamma = _point(code, t, dt, x, y)
            system._f(t_z, z, p, u, f_z)
            R = y - x - gamma * (f_z + f_old)
            r_norm = float(np.max(np.abs(R)))
            lu = factor(newton_matrix(system, t_z, z, p, u, theta * dt), k)
            delta = lu.solve(R)
            y -= delta
            nit += 1
            if not (np.all(np.isfinite(y)) and np.isfinite(r_norm)):
                break
            if np.max(np.abs(delta)) <= seq.tol * (1.0 + np.max(np.abs(y))):
                break
        else:
            y = None
        if y is None or not np.all(np.isfinite(y)):
            raise SweepError(
                f"Newton's method did not converge at step {k} (t = {t:g}) of the "
                f"{seq.scheme} scheme: residual max|R| = {r_norm:.3e} after "
                f"{seq.max_iter} iterations. Take smaller steps (`dt`), raise "
                "`max_iter`, or check the system's Jacobian."
            )
        xs[k + 1] = y
    J = ik.running_costs(seq._costs(), xs, us, p, seq.consts, seq.data)
    return xs, float(J), {"nit": nit}


def _cost_gradients(seq, traj, weight):
    gx = np.zeros_like(traj.xs)
    gu = np.zeros(seq.theta_shape)
    gp = np.zeros(seq.p_shape)
    if weight != 0.0:
        info = np.zeros(2, dtype=np.intp)
        ik.cost_gradients(
            seq._costs(),
            traj.xs,
            traj.thetas,
            traj.p,
            seq.consts,
            seq.data,
            weight,
            gx,
            gu,
            gp,
            info,
        )
        if info[0] != 0:
            raise SweepError(
                f"A cost kernel returned status {int(info[0])} at step {int(info[1])}."
            )
    return gx, gu, gp


def adjoint(seq, traj, xs_bar, cost_weight):
    """One transposed sparse solve per step; returns ``(lams, grad_us, grad_p)``."""
    system, code, dt = seq.system, seq._implicit_code, seq.dt
    N, n = seq.N, seq.n
    xs, us, p = traj.xs, traj.thetas, traj.p
    gx, grad_us, grad_p = _cost_gradients(seq, traj, cost_weight)
    lams = np.empty_like(xs)
    lams[N] = xs_bar[N] + gx[N]
    X_bar = np.empty(n)
    for k in range(N - 1, -1, -1):
        t = seq.t0 + k * dt
        x, u = xs[k], us[k]
        z, t_z, theta, gamma = _point(code, t, dt, x, xs[k + 1])
        lu = factor(newton_matrix(system, t_z, z, p, u, theta * dt), k)
        mu = lu.solve(lams[k + 1], trans="T")
        lam = xs_bar[k] + gx[k] + mu
        f_bar = gamma * mu
        X_bar[:] = 0.0
        system._vjp(t_z, z, p, u, f_bar, X_bar, grad_p, grad_us[k])
        if code == ik.IMPLICIT_MIDPOINT:
            lam += 0.5 * X_bar
        elif code == ik.CRANK_NICOLSON:
            X_bar[:] = 0.0
            system._vjp(t, x, p, u, f_bar, X_bar, grad_p, grad_us[k])
            lam += X_bar
        if not np.all(np.isfinite(lam)):
            raise SweepError(
                f"The adjoint sweep produced a non-finite value at step {k} "
                f"(t = {t:g}). The forward states were finite; check the system's "
                "VJP/JVP kernels."
            )
        lams[k] = lam
    return lams, grad_us, grad_p


def tangent(seq, traj, x0_tan, us_tan, p_tan):
    """One sparse solve per step; returns ``(xs_tan, J_tan)``."""
    system, code, dt = seq.system, seq._implicit_code, seq.dt
    N, n = seq.N, seq.n
    xs, us, p = traj.xs, traj.thetas, traj.p
    xs_tan = np.empty_like(xs)
    xs_tan[0] = x0_tan
    f_tan = np.empty(n)
    for k in range(N):
        t = seq.t0 + k * dt
        x, u = xs[k], us[k]
        z, t_z, theta, gamma = _point(code, t, dt, x, xs[k + 1])
        z_tan = 0.5 * xs_tan[k] if code == ik.IMPLICIT_MIDPOINT else np.zeros(n)
        system._jvp(t_z, z, p, u, z_tan, p_tan, us_tan[k], f_tan)
        rhs = xs_tan[k] + gamma * f_tan
        if code == ik.CRANK_NICOLSON:
            system._jvp(t, x, p, u, xs_tan[k].copy(), p_tan, us_tan[k], f_tan)
            rhs += gamma * f_tan
        lu = factor(newton_matrix(system, t_z, z, p, u, theta * dt), k)
        xs_tan[k + 1] = lu.solve(rhs)
    gx, gu, gp = _cost_gradients(seq, traj, 1.0)
    J_tan = float(np.sum(gx * xs_tan) + np.sum(gu * us_tan) + gp @ p_tan)
    return xs_tan, J_tan
