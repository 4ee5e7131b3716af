"""Compiled sweeps of the ODE integrators and the Jacobian products they use.

Everything here is ``@njit(cache=True)`` and kept in one file, so that a
cached sweep never calls a stale copy of a helper in another file (STYLE.md
section 5).  No input checks: :mod:`adjoint._integrators._sequence` validates
and allocates.

A system's kernels arrive as two tuples of first-class function pointers
(``cfunc`` objects, typed by :data:`adjoint._kernel_types.SIGNATURES`), which
is what lets Numba cache these loops on disk (DESIGN.md section 4):

- ``fns = (rhs, rhs_vjp, rhs_jvp, rhs_jac_x, rhs_complex)``;
- ``costs = (running_cost, running_cost_vjp, terminal_cost, terminal_cost_vjp)``.

``modes`` (an intp array of three) says how each Jacobian product is formed:
``modes[0]`` for the VJP, ``modes[1]`` for the JVP, ``modes[2]`` for
``∂f/∂x``; each is :data:`MODE_KERNEL` (call the kernel),
:data:`MODE_COMPLEX_STEP` (complex-step columns of ``rhs_complex``) or
:data:`MODE_VIA_VJP` (rows from ``n`` VJPs with unit cotangents).  The
function pointers a mode does not use are do-nothing placeholders.

Work arrays take the dtype of the states, so the forward and adjoint sweeps
also compile for complex128 states with complex128 kernels: the second-order
adjoint of :mod:`adjoint._hessian` runs them on ``z + i h v``.

Array rows.  A sweep runs steps ``k_start … k_end-1``; state-sized arrays
(``xs``, ``stages``, ``lams``, ``xs_bar``, ``xs_tan``) hold step ``k`` in row
``k - k_start``, so a checkpointing driver can hand in a buffer for one
segment; per-step arrays (``us``, ``data``, ``grad_us``, ``us_tan``) are
indexed by ``k`` itself.  Each sweep writes a failure to ``info`` (``info[0]``
status, ``info[1]`` step) and stops there.
"""

import numpy as np
from numba import njit

from .._kernel_types import STATUS_NONFINITE

# ---- status codes and modes ----

STATUS_NEWTON = -2  # Newton did not converge within max_iter
STATUS_SINGULAR = -3  # the Newton (or adjoint) matrix is singular
STATUS_UNAVAILABLE = -4  # a placeholder kernel was called: a bug

MODE_KERNEL = 0
MODE_COMPLEX_STEP = 1
MODE_VIA_VJP = 2

# Imaginary step of the complex-step Jacobian products.  Far below rounding of
# any real perturbation, so the products are exact to rounding; large enough
# that Im parts do not underflow for states of ordinary size.
CS_H = 1e-30

# Implicit scheme codes (adjoint._integrators._tableaus.IMPLICIT_SCHEMES).
BACKWARD_EULER = 0
IMPLICIT_MIDPOINT = 1
CRANK_NICOLSON = 2


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
def _max_abs(a):
    m = 0.0
    for j in range(a.shape[0]):
        v = abs(a[j])
        if v > m or not np.isfinite(v):
            m = v
    return m


# ---- Jacobian products of the right-hand side ----


@njit(cache=True)
def _to_complex(a):
    out = np.empty(a.shape[0], dtype=np.complex128)
    for j in range(a.shape[0]):
        out[j] = a[j]
    return out


@njit(cache=True)
def _cs_column(rhs_c, t, xc, pc, uc, target, j, out):
    """Evaluate ``rhs_c`` with ``target[j]`` (one of ``xc, pc, uc``) pushed by i·h."""
    v = target[j]
    target[j] = complex(v.real, CS_H)
    status = rhs_c(t, xc, pc, uc, out)
    target[j] = v
    return status


@njit(cache=True)
def cs_vjp(rhs_c, t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    """Add ``[∂f/∂x, ∂f/∂p, ∂f/∂u]ᵀ f̄`` to the bars by complex step.

    One complex evaluation per column: ``n + n_p + n_u`` in all.  No input
    checks.
    """
    xc = _to_complex(x)
    pc = _to_complex(p)
    uc = _to_complex(u)
    out = np.empty(x.shape[0], dtype=np.complex128)
    for j in range(x.shape[0]):
        status = _cs_column(rhs_c, t, xc, pc, uc, xc, j, out)
        if status != 0:
            return status
        x_bar[j] += _dot(out.imag, f_bar) / CS_H
    for j in range(p.shape[0]):
        status = _cs_column(rhs_c, t, xc, pc, uc, pc, j, out)
        if status != 0:
            return status
        p_bar[j] += _dot(out.imag, f_bar) / CS_H
    for j in range(u.shape[0]):
        status = _cs_column(rhs_c, t, xc, pc, uc, uc, j, out)
        if status != 0:
            return status
        u_bar[j] += _dot(out.imag, f_bar) / CS_H
    return 0


@njit(cache=True)
def cs_jvp(rhs_c, t, x, p, u, x_tan, p_tan, u_tan, out):
    """Write ``∂f/∂x ẋ + ∂f/∂p ṗ + ∂f/∂u u̇`` to ``out``.

    One complex evaluation.
    """
    xc = np.empty(x.shape[0], dtype=np.complex128)
    pc = np.empty(p.shape[0], dtype=np.complex128)
    uc = np.empty(u.shape[0], dtype=np.complex128)
    for j in range(x.shape[0]):
        xc[j] = complex(x[j], CS_H * x_tan[j])
    for j in range(p.shape[0]):
        pc[j] = complex(p[j], CS_H * p_tan[j])
    for j in range(u.shape[0]):
        uc[j] = complex(u[j], CS_H * u_tan[j])
    oc = np.empty(x.shape[0], dtype=np.complex128)
    status = rhs_c(t, xc, pc, uc, oc)
    for i in range(x.shape[0]):
        out[i] = oc[i].imag / CS_H
    return status


@njit(cache=True)
def cs_jac_x(rhs_c, t, x, p, u, jac_out):
    """Write ``∂f/∂x`` to ``jac_out`` (n, n) by ``n`` complex evaluations."""
    n = x.shape[0]
    xc = _to_complex(x)
    pc = _to_complex(p)
    uc = _to_complex(u)
    out = np.empty(n, dtype=np.complex128)
    for j in range(n):
        status = _cs_column(rhs_c, t, xc, pc, uc, xc, j, out)
        if status != 0:
            return status
        for i in range(n):
            jac_out[i, j] = out[i].imag / CS_H
    return 0


@njit(cache=True)
def _vjp_rows_jac_x(rhs_vjp, t, x, p, u, jac_out):
    """``∂f/∂x`` row by row from ``n`` VJPs with unit cotangents."""
    n = x.shape[0]
    f_bar = np.zeros(n, jac_out.dtype)
    p_bar = np.zeros(p.shape[0], jac_out.dtype)
    u_bar = np.zeros(u.shape[0], jac_out.dtype)
    for i in range(n):
        f_bar[i] = 1.0
        jac_out[i, :] = 0.0
        status = rhs_vjp(t, x, p, u, f_bar, jac_out[i], p_bar, u_bar)
        f_bar[i] = 0.0
        if status != 0:
            return status
    return 0


@njit(cache=True)
def _vjp_rows_jvp(rhs_vjp, t, x, p, u, x_tan, p_tan, u_tan, out):
    """The JVP from ``n`` VJPs with unit cotangents (one row each)."""
    n = x.shape[0]
    f_bar = np.zeros(n)
    x_bar = np.empty(n)
    p_bar = np.empty(p.shape[0])
    u_bar = np.empty(u.shape[0])
    for i in range(n):
        f_bar[i] = 1.0
        x_bar[:] = 0.0
        p_bar[:] = 0.0
        u_bar[:] = 0.0
        status = rhs_vjp(t, x, p, u, f_bar, x_bar, p_bar, u_bar)
        f_bar[i] = 0.0
        if status != 0:
            return status
        out[i] = _dot(x_bar, x_tan) + _dot(p_bar, p_tan) + _dot(u_bar, u_tan)
    return 0


@njit(cache=True)
def eval_vjp(fns, modes, t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    """Add ``(∂f/∂x)ᵀf̄``, ``(∂f/∂p)ᵀf̄``, ``(∂f/∂u)ᵀf̄``
    to the three bars."""
    if modes[0] == MODE_COMPLEX_STEP:
        return cs_vjp(fns[4], t, x, p, u, f_bar, x_bar, p_bar, u_bar)
    return fns[1](t, x, p, u, f_bar, x_bar, p_bar, u_bar)


@njit(cache=True)
def eval_jvp(fns, modes, t, x, p, u, x_tan, p_tan, u_tan, out):
    """Write ``∂f/∂x ẋ + ∂f/∂p ṗ + ∂f/∂u u̇`` to ``out``."""
    if modes[1] == MODE_KERNEL:
        return fns[2](t, x, p, u, x_tan, p_tan, u_tan, out)
    if modes[1] == MODE_COMPLEX_STEP:
        return cs_jvp(fns[4], t, x, p, u, x_tan, p_tan, u_tan, out)
    return _vjp_rows_jvp(fns[1], t, x, p, u, x_tan, p_tan, u_tan, out)


@njit(cache=True)
def eval_jac_x(fns, modes, t, x, p, u, jac_out):
    """Write ``∂f/∂x`` to ``jac_out`` (n, n)."""
    if modes[2] == MODE_KERNEL:
        return fns[3](t, x, p, u, jac_out)
    if modes[2] == MODE_COMPLEX_STEP:
        return cs_jac_x(fns[4], t, x, p, u, jac_out)
    return _vjp_rows_jac_x(fns[1], t, x, p, u, jac_out)


@njit(cache=True)
def grouped_jvp(fns, modes, t, x, p, u, seeds, out):
    """``out[g] = ∂f/∂x seeds[g]`` for each row ``g`` of ``seeds`` (G, n).

    With column groups as seeds (columns that share no row of the sparsity
    pattern), this yields a sparse Jacobian in ``G`` products.
    """
    p_tan = np.zeros(p.shape[0])
    u_tan = np.zeros(u.shape[0])
    for g in range(seeds.shape[0]):
        status = eval_jvp(fns, modes, t, x, p, u, seeds[g], p_tan, u_tan, out[g])
        if status != 0:
            return status
    return 0


# ---- explicit Runge–Kutta ----
# Stage values X_i (the states at which f is evaluated) are what the backward
# sweep needs.  The forward sweep stores them, (N, s, n) floats, so the
# backward sweep costs s VJPs per step and no rhs calls; this keeps gradient
# time near twice the forward time.  Passing an empty (0, s, n) array instead
# makes both the backward and the tangent sweep recompute the stages of each
# step from x_k (s extra rhs calls per step, memory O(n) besides the states),
# which is what a checkpointing driver wants.


@njit(cache=True)
def _rk_stages(rhs, A, c, t, dt, x, p, u, X_out, K_out):
    """Stage states ``X_i = x + dt Σ_{l<i} A_il K_l`` into ``X_out`` and
    ``K_i = f(t + c_i dt, X_i)`` into ``K_out``; returns the first non-zero
    status of ``rhs``."""
    n = x.shape[0]
    for i in range(A.shape[0]):
        Xi = X_out[i]
        Xi[:] = x
        for l in range(i):
            a = dt * A[i, l]
            if a != 0.0:
                for j in range(n):
                    Xi[j] += a * K_out[l, j]
        status = rhs(t + c[i] * dt, Xi, p, u, K_out[i])
        if status != 0:
            return status
    return 0


@njit(cache=True)
def rk_forward(
    fns,
    costs,
    A,
    b,
    c,
    t0,
    dt,
    x0,
    us,
    p,
    consts,
    data,
    k_start,
    k_end,
    xs_out,
    stages_out,
    info,
):
    """Explicit Runge–Kutta steps ``k_start … k_end-1`` and their cost.

    ``x_{k+1} = x_k + dt Σ_i b_i K_i`` with the stages of :func:`_rk_stages`
    at ``t_k = t0 + k dt``.  Overwrites ``xs_out`` (rows ``0 … k_end-k_start``;
    row 0 receives ``x0``) and, unless it has no rows, ``stages_out`` (shape
    (k_end-k_start, s, n)).  Returns the running costs of the steps run, plus
    the terminal cost when ``k_end == N``.  No input checks.
    """
    running_cost = costs[0]
    terminal_cost = costs[2]
    N = us.shape[0]
    n = x0.shape[0]
    s = b.shape[0]
    store = stages_out.shape[0] > 0
    K = np.empty((s, n), xs_out.dtype)
    X = np.empty((s, n), xs_out.dtype)
    xs_out[0, :] = x0
    J = 0.0
    for k in range(k_start, k_end):
        r = k - k_start
        x = xs_out[r]
        u = us[k]
        J += running_cost(k, x, u, p, consts, data[k])
        Xs = stages_out[r] if store else X
        status = _rk_stages(fns[0], A, c, t0 + k * dt, dt, x, p, u, Xs, K)
        if status != 0:
            info[0] = status
            info[1] = k
            return J
        x_new = xs_out[r + 1]
        x_new[:] = x
        for i in range(s):
            w = dt * b[i]
            if w != 0.0:
                for j in range(n):
                    x_new[j] += w * K[i, j]
        if not _all_finite(x_new):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return J
    if k_end == N:
        J += terminal_cost(xs_out[k_end - k_start], p, consts, data[N])
    return J


@njit(cache=True)
def _terminal_adjoint(
    costs, x_N, p, consts, data_N, cost_weight, x_bar_N, lam_out, grad_p_out, info, N
):
    """``λ_N = x̄_N + w ∂Φ/∂x_N``; ``grad_p_out += w ∂Φ/∂p``."""
    lam_out[:] = x_bar_N
    if cost_weight != 0.0:
        status = costs[3](x_N, p, consts, data_N, cost_weight, lam_out, grad_p_out)
        if status != 0:
            info[0] = status
            info[1] = N
            return False
    return True


@njit(cache=True)
def rk_adjoint(
    fns,
    modes,
    costs,
    A,
    b,
    c,
    t0,
    dt,
    xs,
    us,
    p,
    consts,
    data,
    stages,
    xs_bar,
    cost_weight,
    k_start,
    k_end,
    lams_out,
    grad_us_out,
    grad_p_out,
    info,
):
    """Backward sweep through the stages, steps ``k_end-1`` down to ``k_start``.

    For each step, with ``λ = λ_{k+1}``: ``K̄_i = dt b_i λ``; for ``i = s-1 … 0``
    the VJP of ``f`` at stage ``i`` with cotangent ``K̄_i`` gives ``X̄_i`` (and
    adds to ``p̄``, ``ū_k``), then ``λ_k += X̄_i`` and ``K̄_l += dt A_il X̄_i``
    for ``l < i``; finally ``λ_k += λ + x̄_k + w ∂g_k/∂x_k``.

    When ``k_end == N`` the sweep starts from ``λ_N = x̄_N + w ∂Φ/∂x_N`` (and
    adds ``w ∂Φ/∂p`` to ``grad_p_out``); otherwise the last row of ``lams_out``
    must hold ``λ_{k_end}`` on entry.  Overwrites the other rows of
    ``lams_out`` and rows ``k_start … k_end-1`` of ``grad_us_out``; adds to
    ``grad_p_out`` (zero it before the first segment).  ``stages`` with no
    rows means recompute them.  No input checks.
    """
    N = us.shape[0]
    n = xs.shape[1]
    s = b.shape[0]
    last = k_end - k_start
    if k_end == N:
        if not _terminal_adjoint(
            costs,
            xs[last],
            p,
            consts,
            data[N],
            cost_weight,
            xs_bar[last],
            lams_out[last],
            grad_p_out,
            info,
            N,
        ):
            return
    recompute = stages.shape[0] == 0
    X = np.empty((s, n), lams_out.dtype)
    K = np.empty((s, n), lams_out.dtype)
    K_bar = np.empty((s, n), lams_out.dtype)
    X_bar = np.empty(n, lams_out.dtype)
    for k in range(k_end - 1, k_start - 1, -1):
        r = k - k_start
        t = t0 + k * dt
        u = us[k]
        lam_next = lams_out[r + 1]
        lam = lams_out[r]
        grad_u = grad_us_out[k]
        grad_u[:] = 0.0
        if recompute:
            status = _rk_stages(fns[0], A, c, t, dt, xs[r], p, u, X, K)
            if status != 0:
                info[0] = status
                info[1] = k
                return
            Xs = X
        else:
            Xs = stages[r]
        for j in range(n):
            lam[j] = xs_bar[r, j] + lam_next[j]
        for i in range(s):
            w = dt * b[i]
            for j in range(n):
                K_bar[i, j] = w * lam_next[j]
        # Stages in reverse: stage i depends only on stages l < i.
        for i in range(s - 1, -1, -1):
            X_bar[:] = 0.0
            status = eval_vjp(
                fns,
                modes,
                t + c[i] * dt,
                Xs[i],
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
                a = dt * A[i, l]
                if a != 0.0:
                    for j in range(n):
                        K_bar[l, j] += a * X_bar[j]
        if cost_weight != 0.0:
            status = costs[1](
                k, xs[r], u, p, consts, data[k], cost_weight, lam, grad_u, grad_p_out
            )
            if status != 0:
                info[0] = status
                info[1] = k
                return
        if not _all_finite(lam):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return


@njit(cache=True)
def _cost_tangent(costs, k, x, u, p, consts, data_k, x_tan, u_tan, p_tan, gx, gu, gp):
    """``∇g_k · (ẋ, u̇, ṗ)`` from one cost VJP with unit weight."""
    gx[:] = 0.0
    gu[:] = 0.0
    gp[:] = 0.0
    status = costs[1](k, x, u, p, consts, data_k, 1.0, gx, gu, gp)
    return status, _dot(gx, x_tan) + _dot(gu, u_tan) + _dot(gp, p_tan)


@njit(cache=True)
def _terminal_tangent(costs, x, p, consts, data_N, x_tan, p_tan, gx, gp):
    gx[:] = 0.0
    gp[:] = 0.0
    status = costs[3](x, p, consts, data_N, 1.0, gx, gp)
    return status, _dot(gx, x_tan) + _dot(gp, p_tan)


@njit(cache=True)
def rk_tangent(
    fns,
    modes,
    costs,
    A,
    b,
    c,
    t0,
    dt,
    xs,
    us,
    p,
    consts,
    data,
    stages,
    x0_tan,
    us_tan,
    p_tan,
    k_start,
    k_end,
    xs_tan_out,
    info,
):
    """Tangent sweep, steps ``k_start … k_end-1``; returns the tangent of ``J``.

    ``K̇_i = ∂f/∂x (ẋ_k + dt Σ_{l<i} A_il K̇_l)
    + ∂f/∂p ṗ + ∂f/∂u u̇_k`` at the stored stages;
    ``ẋ_{k+1} = ẋ_k + dt Σ_i b_i K̇_i``.  Overwrites
    ``xs_tan_out`` (row 0 receives ``x0_tan``).  No input checks.
    """
    N = us.shape[0]
    n = xs.shape[1]
    s = b.shape[0]
    recompute = stages.shape[0] == 0
    X = np.empty((s, n))
    K = np.empty((s, n))
    K_tan = np.empty((s, n))
    X_tan = np.empty(n)
    gx = np.empty(n)
    gu = np.empty(us.shape[1])
    gp = np.empty(p.shape[0])
    xs_tan_out[0, :] = x0_tan
    J_tan = 0.0
    for k in range(k_start, k_end):
        r = k - k_start
        t = t0 + k * dt
        u = us[k]
        x_tan = xs_tan_out[r]
        status, dg = _cost_tangent(
            costs, k, xs[r], u, p, consts, data[k], x_tan, us_tan[k], p_tan, gx, gu, gp
        )
        J_tan += dg
        if status == 0 and recompute:
            status = _rk_stages(fns[0], A, c, t, dt, xs[r], p, u, X, K)
        if status != 0:
            info[0] = status
            info[1] = k
            return J_tan
        Xs = X if recompute else stages[r]
        for i in range(s):
            X_tan[:] = x_tan
            for l in range(i):
                a = dt * A[i, l]
                if a != 0.0:
                    for j in range(n):
                        X_tan[j] += a * K_tan[l, j]
            status = eval_jvp(
                fns,
                modes,
                t + c[i] * dt,
                Xs[i],
                p,
                u,
                X_tan,
                p_tan,
                us_tan[k],
                K_tan[i],
            )
            if status != 0:
                info[0] = status
                info[1] = k
                return J_tan
        x_tan_new = xs_tan_out[r + 1]
        x_tan_new[:] = x_tan
        for i in range(s):
            w = dt * b[i]
            if w != 0.0:
                for j in range(n):
                    x_tan_new[j] += w * K_tan[i, j]
        if not _all_finite(x_tan_new):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return J_tan
    if k_end == N:
        status, dphi = _terminal_tangent(
            costs,
            xs[k_end - k_start],
            p,
            consts,
            data[N],
            xs_tan_out[k_end - k_start],
            p_tan,
            gx,
            gp,
        )
        if status != 0:
            info[0] = status
            info[1] = N
        J_tan += dphi
    return J_tan


# ---- implicit one-stage schemes ----
# Each scheme solves R(y) = y - x - dt·(...) = 0 for y = x_{k+1}:
#   backward Euler     y = x + dt f(t + dt, y)
#   implicit midpoint  y = x + dt f(t + dt/2, (x + y)/2)
#   Crank–Nicolson     y = x + dt/2 (f(t, x) + f(t + dt, y))
# so ∂R/∂y = I - theta dt J(z), with z the point where f is evaluated at the
# new state and theta = 1, 1/2, 1/2.  Nothing besides the states is stored:
# the backward sweep rebuilds ∂R/∂y at x_{k+1} and solves with its transpose
# once per step.


@njit(cache=True)
def _implicit_point(scheme, t, dt, x, y, z_out):
    """Write the evaluation point ``z`` to ``z_out``; return ``(t_z, theta, gamma)``.

    ``theta`` scales ``dt J`` in ``∂R/∂y``; ``gamma`` is the factor of
    ``f(t_z, z)`` in the step.
    """
    if scheme == IMPLICIT_MIDPOINT:
        for j in range(x.shape[0]):
            z_out[j] = 0.5 * (x[j] + y[j])
        return t + 0.5 * dt, 0.5, dt
    z_out[:] = y
    if scheme == CRANK_NICOLSON:
        return t + dt, 0.5, 0.5 * dt
    return t + dt, 1.0, dt


@njit(cache=True)
def _newton_matrix(jac, theta_dt, M_out):
    n = jac.shape[0]
    for i in range(n):
        for j in range(n):
            M_out[i, j] = -theta_dt * jac[i, j]
        M_out[i, i] += 1.0


@njit(cache=True)
def _solve(M, rhs, out):
    """``out = M⁻¹ rhs``; returns False when ``M`` is singular."""
    try:
        out[:] = np.linalg.solve(M, rhs)
    except Exception:  # LinAlgError: singular to machine precision
        return False
    return True


@njit(cache=True)
def implicit_forward(
    fns,
    modes,
    costs,
    scheme,
    t0,
    dt,
    x0,
    us,
    p,
    consts,
    data,
    max_iter,
    tol,
    k_start,
    k_end,
    xs_out,
    info,
    finfo,
):
    """Implicit steps ``k_start … k_end-1`` by Newton's method, and their cost.

    Newton on ``R(y) = 0`` from ``y = x_k``, with the exact Jacobian
    ``I - theta dt ∂f/∂x(z)`` re-evaluated every iteration, until
    ``max|δ| <= tol (1 + max|y|)``; quadratic convergence then leaves ``y``
    accurate to rounding, which the discrete adjoint assumes.  Overwrites
    ``xs_out`` (row 0 receives ``x0``); adds iterations to ``info[2]``.  On
    failure writes :data:`STATUS_NEWTON` (or :data:`STATUS_SINGULAR`) and the
    step to ``info`` and the last residual norm ``max|R|`` to ``finfo[0]``.
    No input checks.
    """
    rhs = fns[0]
    N = us.shape[0]
    n = x0.shape[0]
    dtype = xs_out.dtype
    f_old = np.zeros(n, dtype)
    f_z = np.empty(n, dtype)
    z = np.empty(n, dtype)
    R = np.empty(n, dtype)
    delta = np.empty(n, dtype)
    jac = np.empty((n, n), dtype)
    M = np.empty((n, n), dtype)
    xs_out[0, :] = x0
    J = 0.0
    for k in range(k_start, k_end):
        r = k - k_start
        t = t0 + k * dt
        x = xs_out[r]
        y = xs_out[r + 1]
        u = us[k]
        J += costs[0](k, x, u, p, consts, data[k])
        if scheme == CRANK_NICOLSON:
            status = rhs(t, x, p, u, f_old)
            if status != 0:
                info[0] = status
                info[1] = k
                return J
        y[:] = x
        converged = False
        r_norm = np.inf
        for _ in range(max_iter):
            t_z, theta, gamma = _implicit_point(scheme, t, dt, x, y, z)
            status = rhs(t_z, z, p, u, f_z)
            if status == 0:
                status = eval_jac_x(fns, modes, t_z, z, p, u, jac)
            if status != 0:
                info[0] = status
                info[1] = k
                return J
            for j in range(n):
                R[j] = y[j] - x[j] - gamma * (f_z[j] + f_old[j])
            r_norm = _max_abs(R)
            _newton_matrix(jac, theta * dt, M)
            if not _solve(M, R, delta):
                info[0] = STATUS_SINGULAR
                info[1] = k
                finfo[0] = r_norm
                return J
            for j in range(n):
                y[j] -= delta[j]
            info[2] += 1
            if not (_all_finite(y) and np.isfinite(r_norm)):
                break
            if _max_abs(delta) <= tol * (1.0 + _max_abs(y)):
                converged = True
                break
        if not converged:
            info[0] = STATUS_NEWTON
            info[1] = k
            finfo[0] = r_norm
            return J
    if k_end == N:
        J += costs[2](xs_out[k_end - k_start], p, consts, data[N])
    return J


@njit(cache=True)
def implicit_adjoint(
    fns,
    modes,
    costs,
    scheme,
    t0,
    dt,
    xs,
    us,
    p,
    consts,
    data,
    xs_bar,
    cost_weight,
    k_start,
    k_end,
    lams_out,
    grad_us_out,
    grad_p_out,
    info,
):
    """Backward sweep of the implicit steps: one transposed solve per step.

    With ``λ = λ_{k+1}`` and ``M = I - theta dt ∂f/∂x(z)`` at the converged
    step: ``μ = M⁻ᵀ λ``; the VJP of ``f(t_z, z)`` with cotangent ``gamma μ``
    gives ``p̄``, ``ū_k`` and (implicit midpoint) half its ``x̄`` to ``λ_k``;
    Crank–Nicolson adds the VJP of ``f(t_k, x_k)`` with the same cotangent.
    ``λ_k = μ + (those) + x̄_k + w ∂g_k/∂x_k``.  Array conventions as
    :func:`rk_adjoint`.  No input checks.
    """
    N = us.shape[0]
    n = xs.shape[1]
    last = k_end - k_start
    if k_end == N:
        if not _terminal_adjoint(
            costs,
            xs[last],
            p,
            consts,
            data[N],
            cost_weight,
            xs_bar[last],
            lams_out[last],
            grad_p_out,
            info,
            N,
        ):
            return
    dtype = lams_out.dtype
    z = np.empty(n, dtype)
    jac = np.empty((n, n), dtype)
    M = np.empty((n, n), dtype)
    mu = np.empty(n, dtype)
    f_bar = np.empty(n, dtype)
    X_bar = np.empty(n, dtype)
    for k in range(k_end - 1, k_start - 1, -1):
        r = k - k_start
        t = t0 + k * dt
        u = us[k]
        x = xs[r]
        lam = lams_out[r]
        grad_u = grad_us_out[k]
        grad_u[:] = 0.0
        t_z, theta, gamma = _implicit_point(scheme, t, dt, x, xs[r + 1], z)
        status = eval_jac_x(fns, modes, t_z, z, p, u, jac)
        if status != 0:
            info[0] = status
            info[1] = k
            return
        _newton_matrix(jac, theta * dt, M)
        if not _solve(np.ascontiguousarray(M.T), lams_out[r + 1], mu):
            info[0] = STATUS_SINGULAR
            info[1] = k
            return
        for j in range(n):
            lam[j] = xs_bar[r, j] + mu[j]
            f_bar[j] = gamma * mu[j]
        X_bar[:] = 0.0
        status = eval_vjp(fns, modes, t_z, z, p, u, f_bar, X_bar, grad_p_out, grad_u)
        if status == 0 and scheme == IMPLICIT_MIDPOINT:
            for j in range(n):
                lam[j] += 0.5 * X_bar[j]
        if status == 0 and scheme == CRANK_NICOLSON:
            X_bar[:] = 0.0
            status = eval_vjp(fns, modes, t, x, p, u, f_bar, X_bar, grad_p_out, grad_u)
            for j in range(n):
                lam[j] += X_bar[j]
        if status == 0 and cost_weight != 0.0:
            status = costs[1](
                k, x, u, p, consts, data[k], cost_weight, lam, grad_u, grad_p_out
            )
        if status != 0:
            info[0] = status
            info[1] = k
            return
        if not _all_finite(lam):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return


@njit(cache=True)
def implicit_tangent(
    fns,
    modes,
    costs,
    scheme,
    t0,
    dt,
    xs,
    us,
    p,
    consts,
    data,
    x0_tan,
    us_tan,
    p_tan,
    k_start,
    k_end,
    xs_tan_out,
    info,
):
    """Tangent sweep of the implicit steps: one solve with ``M`` per step.

    ``M ẏ = ẋ + gamma ḟ``, where ``ḟ`` is the JVP of ``f(t_z, z)`` with
    ``ż = ẋ/2`` (implicit midpoint) or ``0`` (the ``y`` part is in ``M``), plus
    for Crank–Nicolson the JVP of ``f(t_k, x_k)`` in ``(ẋ, ṗ, u̇)``.
    Overwrites ``xs_tan_out`` (row 0 receives ``x0_tan``).  No input checks.
    """
    N = us.shape[0]
    n = xs.shape[1]
    z = np.empty(n)
    z_tan = np.empty(n)
    f_tan = np.empty(n)
    rhs_tan = np.empty(n)
    jac = np.empty((n, n))
    M = np.empty((n, n))
    gx = np.empty(n)
    gu = np.empty(us.shape[1])
    gp = np.empty(p.shape[0])
    xs_tan_out[0, :] = x0_tan
    J_tan = 0.0
    for k in range(k_start, k_end):
        r = k - k_start
        t = t0 + k * dt
        u = us[k]
        x = xs[r]
        x_tan = xs_tan_out[r]
        status, dg = _cost_tangent(
            costs, k, x, u, p, consts, data[k], x_tan, us_tan[k], p_tan, gx, gu, gp
        )
        J_tan += dg
        t_z, theta, gamma = _implicit_point(scheme, t, dt, x, xs[r + 1], z)
        if status == 0:
            status = eval_jac_x(fns, modes, t_z, z, p, u, jac)
        if status == 0:
            if scheme == IMPLICIT_MIDPOINT:
                for j in range(n):
                    z_tan[j] = 0.5 * x_tan[j]
            else:
                z_tan[:] = 0.0
            status = eval_jvp(fns, modes, t_z, z, p, u, z_tan, p_tan, us_tan[k], f_tan)
        for j in range(n):
            rhs_tan[j] = x_tan[j] + gamma * f_tan[j]
        if status == 0 and scheme == CRANK_NICOLSON:
            status = eval_jvp(fns, modes, t, x, p, u, x_tan, p_tan, us_tan[k], f_tan)
            for j in range(n):
                rhs_tan[j] += gamma * f_tan[j]
        if status != 0:
            info[0] = status
            info[1] = k
            return J_tan
        _newton_matrix(jac, theta * dt, M)
        if not _solve(M, rhs_tan, xs_tan_out[r + 1]):
            info[0] = STATUS_SINGULAR
            info[1] = k
            return J_tan
        if not _all_finite(xs_tan_out[r + 1]):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return J_tan
    if k_end == N:
        status, dphi = _terminal_tangent(
            costs,
            xs[k_end - k_start],
            p,
            consts,
            data[N],
            xs_tan_out[k_end - k_start],
            p_tan,
            gx,
            gp,
        )
        if status != 0:
            info[0] = status
            info[1] = N
        J_tan += dphi
    return J_tan


# ---- helpers for the Python-level sparse implicit path ----


@njit(cache=True)
def running_costs(costs, xs, us, p, consts, data):
    """``Σ_k g_k + Φ`` over stored states ``xs`` (N + 1, n)."""
    N = us.shape[0]
    J = 0.0
    for k in range(N):
        J += costs[0](k, xs[k], us[k], p, consts, data[k])
    return J + costs[2](xs[N], p, consts, data[N])


@njit(cache=True)
def cost_gradients(
    costs, xs, us, p, consts, data, cost_weight, gx_out, gu_out, gp_out, info
):
    """Add ``w ∇g_k`` (and ``w ∇Φ`` in row ``N``) to ``gx_out`` (N + 1, n),
    ``gu_out`` (N, m) and ``gp_out``.  No input checks."""
    N = us.shape[0]
    for k in range(N):
        status = costs[1](
            k,
            xs[k],
            us[k],
            p,
            consts,
            data[k],
            cost_weight,
            gx_out[k],
            gu_out[k],
            gp_out,
        )
        if status != 0:
            info[0] = status
            info[1] = k
            return
    status = costs[3](xs[N], p, consts, data[N], cost_weight, gx_out[N], gp_out)
    if status != 0:
        info[0] = status
        info[1] = N


@njit(cache=True)
def cs_jacobians(rhs_c, t, x, p, u, jac_x_out, jac_p_out, jac_u_out):
    """``∂f/∂x``, ``∂f/∂p``, ``∂f/∂u`` by ``n + n_p + n_u`` complex
    evaluations."""
    n = x.shape[0]
    xc = _to_complex(x)
    pc = _to_complex(p)
    uc = _to_complex(u)
    out = np.empty(n, dtype=np.complex128)
    for j in range(n):
        status = _cs_column(rhs_c, t, xc, pc, uc, xc, j, out)
        if status != 0:
            return status
        for i in range(n):
            jac_x_out[i, j] = out[i].imag / CS_H
    for j in range(p.shape[0]):
        status = _cs_column(rhs_c, t, xc, pc, uc, pc, j, out)
        if status != 0:
            return status
        for i in range(n):
            jac_p_out[i, j] = out[i].imag / CS_H
    for j in range(u.shape[0]):
        status = _cs_column(rhs_c, t, xc, pc, uc, uc, j, out)
        if status != 0:
            return status
        for i in range(n):
            jac_u_out[i, j] = out[i].imag / CS_H
    return 0
