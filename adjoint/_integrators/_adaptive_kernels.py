"""Compiled sweeps of the adaptive-step embedded Runge–Kutta integrator.

The forward sweep chooses its steps with an error controller and records
them (start times ``ts``, sizes ``hs``, the first step of each output
interval ``starts``); every other sweep runs on those recorded steps, with
the step sizes fixed.  So the backward and tangent sweeps here are the exact
derivatives of the accepted steps, not of the step-size choice.

Array conventions: ``N`` output intervals, ``M`` accepted steps.  Interval
``k`` (from ``t_out[k]`` to ``t_out[k+1]``, control ``u_k``) holds steps
``starts[k] … starts[k+1]-1``; ``ys`` (M + 1, n) holds the state at the
start of every step and the final state, so the state at output time ``k``
is ``ys[starts[k]]``.  ``fns``, ``modes`` and ``costs`` are those of
:mod:`adjoint._integrators._kernels`, whose stage and Jacobian-product
helpers are reused.  No input checks.
"""

import math

import numpy as np
from numba import njit

from .._kernel_types import STATUS_NONFINITE
from ._kernels import (
    _all_finite,
    _cost_tangent,
    _rk_stages,
    _terminal_tangent,
    eval_jvp,
    eval_vjp,
)

STATUS_FULL = -10  # the step arrays are full: grow them and run again
STATUS_TINY_STEP = -11  # the controller asked for a step below rounding of t
STATUS_TOO_MANY = -12  # more than max_steps accepted steps


@njit(cache=True)
def _error_norm(err, y, y_new, rtol, atol):
    """RMS of ``err_j / (atol + rtol max(|y_j|, |y_new_j|))``."""
    total = 0.0
    n = err.shape[0]
    for j in range(n):
        scale = atol + rtol * max(abs(y[j]), abs(y_new[j]))
        total += (err[j] / scale) ** 2
    return math.sqrt(total / n)


@njit(cache=True)
def initial_step(rhs, t0, t1, x0, p, u, order, rtol, atol):
    """Hairer, Nørsett & Wanner's starting step (their II.4; SciPy's choice)."""
    n = x0.shape[0]
    f0 = np.empty(n)
    f1 = np.empty(n)
    x1 = np.empty(n)
    if rhs(t0, x0, p, u, f0) != 0:
        return -1.0
    d0 = 0.0
    d1 = 0.0
    for j in range(n):
        scale = atol + rtol * abs(x0[j])
        d0 += (x0[j] / scale) ** 2
        d1 += (f0[j] / scale) ** 2
    d0 = math.sqrt(d0 / n)
    d1 = math.sqrt(d1 / n)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, t1 - t0)
    for j in range(n):
        x1[j] = x0[j] + h0 * f0[j]
    if rhs(t0 + h0, x1, p, u, f1) != 0:
        return -1.0
    d2 = 0.0
    for j in range(n):
        scale = atol + rtol * abs(x0[j])
        d2 += ((f1[j] - f0[j]) / scale) ** 2
    d2 = math.sqrt(d2 / n) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100.0 * h0, h1)


@njit(cache=True)
def adaptive_forward(
    fns,
    costs,
    A,
    b,
    e,
    c,
    err_order,
    t_out,
    x0,
    us,
    p,
    consts,
    data,
    rtol,
    atol,
    h_first,
    h_max,
    safety,
    fac_min,
    fac_max,
    max_steps,
    ts_out,
    hs_out,
    starts_out,
    ys_out,
    info,
):
    """Integrate over every output interval with step-size control.

    Steps are ``y_new = y + h Σ b_i K_i`` with error estimate
    ``h Σ e_i K_i``; a step is accepted when the RMS of the error over
    ``atol + rtol max(|y|, |y_new|)`` is at most 1, and the next step is
    ``h min(fac_max, max(fac_min, safety err^(-1/(q+1))))``, ``q =
    err_order`` (no growth right after a rejection).  Steps are clipped to
    land on every output time.  Fills ``ts_out``, ``hs_out``, ``starts_out``
    and ``ys_out``; returns the cost.  ``info``: status, interval, accepted
    steps, rejected steps.  :data:`STATUS_FULL` when the arrays are full.
    """
    rhs = fns[0]
    N = us.shape[0]
    n = x0.shape[0]
    s = b.shape[0]
    cap = hs_out.shape[0]
    K = np.empty((s, n))
    X = np.empty((s, n))
    err = np.empty(n)
    y_new = np.empty(n)
    ys_out[0, :] = x0
    m = 0
    J = 0.0
    h = h_first
    for k in range(N):
        starts_out[k] = m
        t = t_out[k]
        t_end = t_out[k + 1]
        u = us[k]
        J += costs[0](k, ys_out[m], u, p, consts, data[k])
        while t < t_end:
            h_prop = min(h, h_max)
            h_try = h_prop
            last = t + h_try >= t_end
            if last:
                h_try = t_end - t
            rejected = False
            while True:
                y = ys_out[m]
                status = _rk_stages(rhs, A, c, t, h_try, y, p, u, X, K)
                if status != 0:
                    info[0] = status
                    info[1] = k
                    return J
                for j in range(n):
                    acc = 0.0
                    est = 0.0
                    for i in range(s):
                        acc += b[i] * K[i, j]
                        est += e[i] * K[i, j]
                    y_new[j] = y[j] + h_try * acc
                    err[j] = h_try * est
                norm = _error_norm(err, y, y_new, rtol, atol)
                if norm <= 1.0:
                    break
                if not np.isfinite(norm):
                    factor = fac_min
                else:
                    factor = max(fac_min, safety * norm ** (-1.0 / (err_order + 1)))
                h_try *= factor
                last = False
                rejected = True
                info[3] += 1
                if h_try <= 10.0 * np.finfo(np.float64).eps * max(abs(t), 1e-300):
                    info[0] = STATUS_TINY_STEP
                    info[1] = k
                    return J
            if not _all_finite(y_new):
                info[0] = STATUS_NONFINITE
                info[1] = k
                return J
            if m >= max_steps:
                info[0] = STATUS_TOO_MANY
                info[1] = k
                return J
            if m >= cap:
                info[0] = STATUS_FULL
                info[1] = k
                return J
            ts_out[m] = t
            hs_out[m] = h_try
            ys_out[m + 1, :] = y_new
            m += 1
            info[2] = m
            if norm == 0.0:
                factor = fac_max
            else:
                factor = min(fac_max, safety * norm ** (-1.0 / (err_order + 1)))
            if rejected:
                factor = min(1.0, factor)
            h_next = h_try * factor
            if last:
                t = t_end
                h = max(h_next, h_prop) if not rejected else h_next
            else:
                t = t + h_try
                h = h_next
    starts_out[N] = m
    J += costs[2](ys_out[m], p, consts, data[N])
    return J


@njit(cache=True)
def frozen_forward(
    fns, costs, A, b, c, ts, hs, starts, x0, us, p, consts, data, ys_out, info
):
    """The recorded steps again: ``y_{m+1} = y_m + h_m Σ b_i K_i`` at ``ts[m]``.

    Overwrites ``ys_out``; returns the cost.  No input checks.
    """
    rhs = fns[0]
    N = us.shape[0]
    n = x0.shape[0]
    s = b.shape[0]
    K = np.empty((s, n))
    X = np.empty((s, n))
    ys_out[0, :] = x0
    J = 0.0
    for k in range(N):
        u = us[k]
        J += costs[0](k, ys_out[starts[k]], u, p, consts, data[k])
        for m in range(starts[k], starts[k + 1]):
            h = hs[m]
            y = ys_out[m]
            status = _rk_stages(rhs, A, c, ts[m], h, y, p, u, X, K)
            if status != 0:
                info[0] = status
                info[1] = k
                return J
            y_new = ys_out[m + 1]
            for j in range(n):
                acc = 0.0
                for i in range(s):
                    acc += b[i] * K[i, j]
                y_new[j] = y[j] + h * acc
            if not _all_finite(y_new):
                info[0] = STATUS_NONFINITE
                info[1] = k
                return J
    J += costs[2](ys_out[starts[N]], p, consts, data[N])
    return J


@njit(cache=True)
def adaptive_adjoint(
    fns,
    modes,
    costs,
    A,
    b,
    c,
    ts,
    hs,
    starts,
    ys,
    us,
    p,
    consts,
    data,
    xs_bar,
    cost_weight,
    lams_out,
    grad_us_out,
    grad_p_out,
    info,
):
    """Backward sweep through every recorded step, step sizes held fixed.

    ``λ(t_N) = x̄_N + w ∂Φ/∂x``; through step ``m`` (stages recomputed from
    ``y_m``): ``K̄_i = h_m b_i λ``, then for ``i = s-1 … 0`` the VJP of ``f``
    at stage ``i`` gives ``X̄_i``, ``λ += X̄_i``, ``K̄_l += h_m A_il X̄_i``;
    at output time ``k``: ``λ += x̄_k + w ∂g_k/∂x``.  Overwrites ``lams_out``
    (N + 1, n: λ at the output times) and ``grad_us_out``; adds to
    ``grad_p_out`` (zero it first).  No input checks.
    """
    N = us.shape[0]
    n = ys.shape[1]
    s = b.shape[0]
    X = np.empty((s, n))
    K = np.empty((s, n))
    K_bar = np.empty((s, n))
    X_bar = np.empty(n)
    lam = np.empty(n)
    lam_next = np.empty(n)
    lam[:] = xs_bar[N]
    if cost_weight != 0.0:
        status = costs[3](
            ys[starts[N]], p, consts, data[N], cost_weight, lam, grad_p_out
        )
        if status != 0:
            info[0] = status
            info[1] = N
            return
    lams_out[N, :] = lam
    for k in range(N - 1, -1, -1):
        u = us[k]
        grad_u = grad_us_out[k]
        grad_u[:] = 0.0
        for m in range(starts[k + 1] - 1, starts[k] - 1, -1):
            t = ts[m]
            h = hs[m]
            status = _rk_stages(fns[0], A, c, t, h, ys[m], p, u, X, K)
            if status != 0:
                info[0] = status
                info[1] = k
                return
            lam_next[:] = lam
            for i in range(s):
                for j in range(n):
                    K_bar[i, j] = h * b[i] * lam_next[j]
            for i in range(s - 1, -1, -1):
                X_bar[:] = 0.0
                status = eval_vjp(
                    fns,
                    modes,
                    t + c[i] * h,
                    X[i],
                    p,
                    u,
                    K_bar[i],
                    X_bar,
                    grad_p_out,
                    grad_u,
                )
                if status != 0:
                    info[0] = status
                    info[1] = k
                    return
                for j in range(n):
                    lam[j] += X_bar[j]
                for l in range(i):
                    a = A[i, l]
                    if a != 0.0:
                        for j in range(n):
                            K_bar[l, j] += h * a * X_bar[j]
        for j in range(n):
            lam[j] += xs_bar[k, j]
        if cost_weight != 0.0:
            status = costs[1](
                k,
                ys[starts[k]],
                u,
                p,
                consts,
                data[k],
                cost_weight,
                lam,
                grad_u,
                grad_p_out,
            )
            if status != 0:
                info[0] = status
                info[1] = k
                return
        if not _all_finite(lam):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return
        lams_out[k, :] = lam


@njit(cache=True)
def adaptive_tangent(
    fns,
    modes,
    costs,
    A,
    b,
    c,
    ts,
    hs,
    starts,
    ys,
    us,
    p,
    consts,
    data,
    x0_tan,
    us_tan,
    p_tan,
    xs_tan_out,
    info,
):
    """Tangents through the recorded steps, step sizes held fixed.

    ``Ẋ_i = ẏ + h Σ_l A_il K̇_l``,
    ``K̇_i = ∂f/∂x Ẋ_i + ∂f/∂p ṗ + ∂f/∂u u̇``,
    ``ẏ_new = ẏ + h Σ_i b_i K̇_i``.  Overwrites ``xs_tan_out`` (N + 1, n: at
    the output times); returns the directional derivative of ``J``.
    """
    N = us.shape[0]
    n = ys.shape[1]
    s = b.shape[0]
    m_u = us.shape[1]
    X = np.empty((s, n))
    K = np.empty((s, n))
    K_tan = np.empty((s, n))
    X_tan = np.empty(n)
    y_tan = np.empty(n)
    gx = np.empty(n)
    gu = np.empty(m_u)
    gp = np.empty(p.shape[0])
    y_tan[:] = x0_tan
    J_tan = 0.0
    for k in range(N):
        u = us[k]
        u_tan = us_tan[k]
        xs_tan_out[k, :] = y_tan
        status, dJ = _cost_tangent(
            costs,
            k,
            ys[starts[k]],
            u,
            p,
            consts,
            data[k],
            y_tan,
            u_tan,
            p_tan,
            gx,
            gu,
            gp,
        )
        J_tan += dJ
        if status != 0:
            info[0] = status
            info[1] = k
            return J_tan
        for m in range(starts[k], starts[k + 1]):
            t = ts[m]
            h = hs[m]
            status = _rk_stages(fns[0], A, c, t, h, ys[m], p, u, X, K)
            for i in range(s):
                if status != 0:
                    break
                for j in range(n):
                    acc = 0.0
                    for l in range(i):
                        acc += A[i, l] * K_tan[l, j]
                    X_tan[j] = y_tan[j] + h * acc
                status = eval_jvp(
                    fns, modes, t + c[i] * h, X[i], p, u, X_tan, p_tan, u_tan, K_tan[i]
                )
            if status != 0:
                info[0] = status
                info[1] = k
                return J_tan
            for j in range(n):
                acc = 0.0
                for i in range(s):
                    acc += b[i] * K_tan[i, j]
                y_tan[j] += h * acc
        if not _all_finite(y_tan):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return J_tan
    xs_tan_out[N, :] = y_tan
    status, dJ = _terminal_tangent(
        costs, ys[starts[N]], p, consts, data[N], y_tan, p_tan, gx, gp
    )
    if status != 0:
        info[0] = status
        info[1] = N
    return J_tan + dJ
