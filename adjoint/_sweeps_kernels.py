"""Compiled forward, adjoint and tangent sweeps of a homogeneous sequence.

The user's kernels arrive as first-class function pointers (``cfunc``
addresses typed by :data:`adjoint._kernel_types.SIGNATURES`); that is what lets
Numba cache these loops on disk (DESIGN.md section 4).  No input checks here:
the wrappers in :mod:`adjoint._homogeneous` validate and allocate.  Each sweep
writes the failing step index and status to ``info`` (``info[0]`` status,
``info[1]`` step) and stops at the first failure.
"""

import numpy as np
from numba import njit

from ._kernel_types import STATUS_NONFINITE


@njit(cache=True)
def _all_finite(x):
    for j in range(x.shape[0]):
        if not np.isfinite(x[j]):
            return False
    return True


@njit(cache=True)
def _dot(a, b):
    total = 0.0
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@njit(cache=True)
def forward_sweep(step, running_cost, terminal_cost, x0, thetas, p, consts, data,
                  k_start, xs_out, info):
    """Run ``x_{k+1} = F_k(x_k, θ_k, p)`` from ``k_start`` and sum the cost.

    ``xs_out`` (shape (N + 1, n)) is overwritten from row ``k_start`` on; row
    ``k_start`` receives ``x0``.  Returns the cost of the steps run (running
    costs from ``k_start`` plus the terminal cost).  No input checks.
    """
    N = thetas.shape[0]
    xs_out[k_start, :] = x0
    J = 0.0
    for k in range(k_start, N):
        J += running_cost(k, xs_out[k], thetas[k], p, consts, data[k])
        status = step(k, xs_out[k], thetas[k], p, consts, xs_out[k + 1])
        if status != 0:
            info[0] = status
            info[1] = k
            return J
        if not _all_finite(xs_out[k + 1]):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return J
    J += terminal_cost(xs_out[N], p, consts, data[N])
    return J


@njit(cache=True)
def adjoint_sweep(step_vjp, running_cost_vjp, terminal_cost_vjp, xs, thetas, p,
                  consts, data, xs_bar, cost_weight, lams_out, grad_thetas_out,
                  grad_p_out, info):
    """Backward sweep, ``k = N-1`` down to 0.

    λ_N = w ∂Φ/∂x_N + x̄_N,
    λ_k = w ∂g_k/∂x_k + (∂F_k/∂x_k)ᵀ λ_{k+1} + x̄_k,
    with ``w = cost_weight`` and ``x̄ = xs_bar`` (cotangents on the states).
    Overwrites ``lams_out`` (N + 1, n), ``grad_thetas_out`` (N, m) and
    ``grad_p_out``; ``lams_out[0]`` is the gradient with respect to ``x_0``.
    """
    N = thetas.shape[0]
    lams_out[N, :] = xs_bar[N]
    grad_p_out[:] = 0.0
    if cost_weight != 0.0:
        status = terminal_cost_vjp(xs[N], p, consts, data[N], cost_weight,
                                   lams_out[N], grad_p_out)
        if status != 0:
            info[0] = status
            info[1] = N
            return
    for k in range(N - 1, -1, -1):
        lams_out[k, :] = xs_bar[k]
        grad_thetas_out[k, :] = 0.0
        status = step_vjp(k, xs[k], thetas[k], p, consts, lams_out[k + 1],
                          lams_out[k], grad_thetas_out[k], grad_p_out)
        if status == 0 and cost_weight != 0.0:
            status = running_cost_vjp(k, xs[k], thetas[k], p, consts, data[k],
                                      cost_weight, lams_out[k],
                                      grad_thetas_out[k], grad_p_out)
        if status != 0:
            info[0] = status
            info[1] = k
            return
        if not _all_finite(lams_out[k]):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return


@njit(cache=True)
def tangent_sweep(step_jvp, running_cost_vjp, terminal_cost_vjp, xs, thetas, p,
                  consts, data, x0_tan, thetas_tan, p_tan, xs_tan_out, info):
    """Forward sweep of tangents, returning the directional derivative of J.

    ẋ_{k+1} = ∂F/∂x ẋ_k + ∂F/∂θ θ̇_k + ∂F/∂p ṗ.  The cost's tangent uses the
    cost gradients (one VJP with unit weight per step), so no separate cost
    JVP kernel is needed.  Overwrites ``xs_tan_out`` (N + 1, n).
    """
    N = thetas.shape[0]
    n = xs.shape[1]
    m = thetas.shape[1]
    gx = np.empty(n)
    gtheta = np.empty(m)
    gp = np.empty(p.shape[0])
    xs_tan_out[0, :] = x0_tan
    J_tan = 0.0
    for k in range(N):
        gx[:] = 0.0
        gtheta[:] = 0.0
        gp[:] = 0.0
        status = running_cost_vjp(k, xs[k], thetas[k], p, consts, data[k], 1.0,
                                  gx, gtheta, gp)
        J_tan += (_dot(gx, xs_tan_out[k]) + _dot(gtheta, thetas_tan[k])
                  + _dot(gp, p_tan))
        if status == 0:
            status = step_jvp(k, xs[k], thetas[k], p, consts, xs_tan_out[k],
                              thetas_tan[k], p_tan, xs_tan_out[k + 1])
        if status != 0:
            info[0] = status
            info[1] = k
            return J_tan
        if not _all_finite(xs_tan_out[k + 1]):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return J_tan
    gx[:] = 0.0
    gp[:] = 0.0
    status = terminal_cost_vjp(xs[N], p, consts, data[N], 1.0, gx, gp)
    if status != 0:
        info[0] = status
        info[1] = N
    J_tan += _dot(gx, xs_tan_out[N]) + _dot(gp, p_tan)
    return J_tan
