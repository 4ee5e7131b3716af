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


# States are checked for NaN/inf every FINITE_CHECK_PERIOD steps and at the
# end, not at every step: the check cost about 20% of a 40-state forward
# sweep.  Non-finite values persist through later steps, so the wrapper finds
# the first bad state by scanning back (``first_nonfinite_row``).
FINITE_CHECK_PERIOD = 16


@njit(cache=True)
def forward_sweep(
    step,
    running_cost,
    terminal_cost,
    x0,
    thetas,
    p,
    consts,
    data,
    k_start,
    xs_out,
    info,
    with_running_cost=True,
):
    """Run ``x_{k+1} = F_k(x_k, θ_k, p)`` from ``k_start`` and sum the cost.

    ``xs_out`` (shape (N + 1, n)) is overwritten from row ``k_start`` on; row
    ``k_start`` receives ``x0``.  Returns the cost of the steps run (running
    costs from ``k_start``, skipped when ``with_running_cost`` is False, plus
    the terminal cost).  A non-finite state is reported in ``info`` with the
    step at which it was *detected* (within FINITE_CHECK_PERIOD steps of where
    it arose).  No input checks.
    """
    N = thetas.shape[0]
    xs_out[k_start, :] = x0
    J = 0.0
    for k in range(k_start, N):
        if with_running_cost:
            J += running_cost(k, xs_out[k], thetas[k], p, consts, data[k])
        status = step(k, xs_out[k], thetas[k], p, consts, xs_out[k + 1])
        if status != 0:
            info[0] = status
            info[1] = k
            return J
        if (k + 1) % FINITE_CHECK_PERIOD == 0 or k == N - 1:
            if not _all_finite(xs_out[k + 1]):
                info[0] = STATUS_NONFINITE
                info[1] = k
                return J
    J += terminal_cost(xs_out[N], p, consts, data[N])
    return J


@njit(cache=True)
def adjoint_sweep(
    step_vjp,
    running_cost_vjp,
    terminal_cost_vjp,
    xs,
    thetas,
    p,
    consts,
    data,
    xs_bar,
    cost_weight,
    lams_out,
    grad_thetas_out,
    grad_p_out,
    info,
    with_running_cost=True,
):
    """Backward sweep, ``k = N-1`` down to 0.

    λ_N = w ∂Φ/∂x_N + x̄_N,
    λ_k = w ∂g_k/∂x_k + (∂F_k/∂x_k)ᵀ λ_{k+1} + x̄_k,
    with ``w = cost_weight`` and ``x̄ = xs_bar`` (cotangents on the states; an
    array with no rows means none).  ``lams_out`` has N + 1 rows to keep every
    λ_k, or one row to receive λ_0 only (the sweep then keeps two rolling
    vectors).  Overwrites ``lams_out``, ``grad_thetas_out`` (N, m) and
    ``grad_p_out``; λ_0 is the gradient with respect to ``x_0``.
    """
    N = thetas.shape[0]
    has_xs_bar = xs_bar.shape[0] > 0
    store_all = lams_out.shape[0] == N + 1
    lam_next = np.zeros_like(xs[0])  # float64 or complex128, as the states
    lam = np.empty_like(xs[0])
    if has_xs_bar:
        lam_next[:] = xs_bar[N]
    grad_p_out[:] = 0.0
    if cost_weight != 0.0:
        status = terminal_cost_vjp(
            xs[N], p, consts, data[N], cost_weight, lam_next, grad_p_out
        )
        if status != 0:
            info[0] = status
            info[1] = N
            return
    if store_all:
        lams_out[N, :] = lam_next
    for k in range(N - 1, -1, -1):
        if has_xs_bar:
            lam[:] = xs_bar[k]
        else:
            lam[:] = 0.0
        grad_thetas_out[k, :] = 0.0
        status = step_vjp(
            k,
            xs[k],
            thetas[k],
            p,
            consts,
            lam_next,
            lam,
            grad_thetas_out[k],
            grad_p_out,
        )
        if status == 0 and cost_weight != 0.0 and with_running_cost:
            status = running_cost_vjp(
                k,
                xs[k],
                thetas[k],
                p,
                consts,
                data[k],
                cost_weight,
                lam,
                grad_thetas_out[k],
                grad_p_out,
            )
        if status != 0:
            info[0] = status
            info[1] = k
            return
        if k % FINITE_CHECK_PERIOD == 0:
            if not _all_finite(lam):
                info[0] = STATUS_NONFINITE
                info[1] = k
                return
        if store_all:
            lams_out[k, :] = lam
        lam, lam_next = lam_next, lam
    lams_out[0, :] = lam_next


@njit(cache=True)
def tangent_sweep(
    step_jvp,
    running_cost_vjp,
    terminal_cost_vjp,
    xs,
    thetas,
    p,
    consts,
    data,
    x0_tan,
    thetas_tan,
    p_tan,
    xs_tan_out,
    info,
):
    """Forward sweep of tangents, returning the directional derivative of J.

    ẋ_{k+1} = ∂F/∂x ẋ_k + ∂F/∂θ θ̇_k + ∂F/∂p ṗ.  The cost's tangent
    uses the cost gradients (one VJP with unit weight per step), so no
    separate cost JVP kernel is needed.  Overwrites ``xs_tan_out`` (N + 1, n).
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
        status = running_cost_vjp(
            k, xs[k], thetas[k], p, consts, data[k], 1.0, gx, gtheta, gp
        )
        J_tan += _dot(gx, xs_tan_out[k]) + _dot(gtheta, thetas_tan[k]) + _dot(gp, p_tan)
        if status == 0:
            status = step_jvp(
                k,
                xs[k],
                thetas[k],
                p,
                consts,
                xs_tan_out[k],
                thetas_tan[k],
                p_tan,
                xs_tan_out[k + 1],
            )
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


# ---- segments, for checkpointed sweeps (adjoint._checkpoint) ----


@njit(cache=True)
def forward_segment(
    step,
    running_cost,
    x_a,
    thetas,
    p,
    consts,
    data,
    k_a,
    k_b,
    with_cost,
    J0,
    xs_out,
    info,
):
    """Run steps ``k_a … k_b-1`` from ``x_a = x_{k_a}``.

    ``xs_out`` has ``rows`` rows; state ``x_{k_a + i}`` goes to row
    ``i % rows``.  With ``k_b - k_a + 1`` rows every state is kept; with 2
    rows the sweep ping-pongs and ``x_{k_b}`` ends in row ``(k_b - k_a) % 2``.
    ``x_a`` may be row 0 of ``xs_out`` itself.  Returns ``J0`` plus the running
    costs ``g_k`` of the segment when ``with_cost``, else ``J0``.  No input
    checks.
    """
    rows = xs_out.shape[0]
    xs_out[0, :] = x_a
    J = J0
    for k in range(k_a, k_b):
        i = (k - k_a) % rows
        j = (k - k_a + 1) % rows
        if with_cost:
            J += running_cost(k, xs_out[i], thetas[k], p, consts, data[k])
        status = step(k, xs_out[i], thetas[k], p, consts, xs_out[j])
        if status != 0:
            info[0] = status
            info[1] = k
            return J
        if not _all_finite(xs_out[j]):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return J
    return J


@njit(cache=True)
def adjoint_segment(
    step_vjp,
    running_cost_vjp,
    xs,
    thetas,
    p,
    consts,
    data,
    k_a,
    cost_weight,
    lam,
    grad_thetas_out,
    grad_p_out,
    info,
):
    """Backward sweep over steps ``k_b-1`` down to ``k_a``, ``k_b = k_a + len(xs)``.

    ``xs`` holds ``x_{k_a} … x_{k_b-1}``.  On entry ``lam`` is ``λ_{k_b}``; on
    exit ``λ_{k_a}`` (overwritten in place).  Rows ``k_a … k_b-1`` of
    ``grad_thetas_out`` are overwritten; ``grad_p_out`` is accumulated into.
    The arithmetic is that of :func:`adjoint_sweep` with ``xs_bar = 0``, so
    the two agree bit for bit.  No input checks.
    """
    n = lam.shape[0]
    tmp = np.empty(n)
    for i in range(xs.shape[0] - 1, -1, -1):
        k = k_a + i
        tmp[:] = 0.0
        grad_thetas_out[k, :] = 0.0
        status = step_vjp(
            k, xs[i], thetas[k], p, consts, lam, tmp, grad_thetas_out[k], grad_p_out
        )
        if status == 0 and cost_weight != 0.0:
            status = running_cost_vjp(
                k,
                xs[i],
                thetas[k],
                p,
                consts,
                data[k],
                cost_weight,
                tmp,
                grad_thetas_out[k],
                grad_p_out,
            )
        if status != 0:
            info[0] = status
            info[1] = k
            return
        if not _all_finite(tmp):
            info[0] = STATUS_NONFINITE
            info[1] = k
            return
        lam[:] = tmp


@njit(cache=True)
def terminal_segment(
    terminal_cost,
    terminal_cost_vjp,
    x_N,
    p,
    consts,
    data_N,
    cost_weight,
    lam_out,
    grad_p_out,
    info,
):
    """``Φ(x_N, p)``; overwrites ``lam_out`` with ``w ∂Φ/∂x_N`` and adds
    ``w ∂Φ/∂p`` to ``grad_p_out`` (``w = cost_weight``).  No input checks."""
    phi = terminal_cost(x_N, p, consts, data_N)
    lam_out[:] = 0.0
    if cost_weight != 0.0:
        status = terminal_cost_vjp(
            x_N, p, consts, data_N, cost_weight, lam_out, grad_p_out
        )
        if status != 0:
            info[0] = status
            info[1] = -1
    return phi


# Action codes of run_actions (adjoint._checkpoint encodes its actions so).
ACTION_ADVANCE = 0
ACTION_STORE = 1
ACTION_TURN = 2
ACTION_REVERSE = 3
STATUS_SCHEDULE = -20  # an action that does not fit the stack: a schedule bug


@njit(cache=True)
def run_actions(
    step,
    step_vjp,
    running_cost,
    running_cost_vjp,
    terminal_cost,
    terminal_cost_vjp,
    thetas,
    p,
    consts,
    data,
    cost_weight,
    actions,
    pool,
    held,
    scratch,
    lam,
    x_end,
    grad_thetas,
    grad_p,
    state,
    J_acc,
    info,
):
    """Run a batch of checkpointing actions (rows ``(code, a, b)``) in one call.

    The compiled twin of ``adjoint._checkpoint._execute`` for homogeneous
    sequences, with the same stack of snapshots (``pool``, ``held[r]`` the
    step held by row ``r``) and the same arithmetic (it calls
    :func:`forward_segment`, :func:`adjoint_segment`, :func:`terminal_segment`),
    so the two agree bit for bit.  ``state`` = (rows in use, first-sweep front,
    step of λ or -1, steps run, peak rows, failing action) and ``J_acc[0]``
    carry over between batches.  A kernel failure goes to ``info`` (and the
    action's row to ``state[5]``); an action that does not fit the stack sets
    ``info = (STATUS_SCHEDULE, row of the action)``.  No input checks.
    """
    N = thetas.shape[0]
    rows = pool.shape[0]
    top, front, lam_at = state[0], state[1], state[2]
    J = J_acc[0]
    for q in range(actions.shape[0]):
        kind, a, b = actions[q, 0], actions[q, 1], actions[q, 2]
        if kind == ACTION_REVERSE:
            length = b - a
            if (
                lam_at != b
                or length < 1
                or top < length
                or held[top - length] != a
                or held[top - 1] != b - 1
            ):
                info[0] = STATUS_SCHEDULE
                info[1] = q
                break
            adjoint_segment(
                step_vjp,
                running_cost_vjp,
                pool[top - length : top],
                thetas,
                p,
                consts,
                data,
                a,
                cost_weight,
                lam,
                grad_thetas,
                grad_p,
                info,
            )
            if info[0] != 0:
                break
            x_end[:] = pool[top - length]
            top -= length
            lam_at = a
            continue
        if held[top - 1] != a or not (a < b <= N) or (a < front < b):
            info[0] = STATUS_SCHEDULE
            info[1] = q
            break
        first = a == front
        if kind == ACTION_STORE:
            if top + (b - a) > rows:
                info[0] = STATUS_SCHEDULE
                info[1] = q
                break
            segment = pool[top - 1 : top + (b - a)]
            J1 = forward_segment(
                step,
                running_cost,
                pool[top - 1],
                thetas,
                p,
                consts,
                data,
                a,
                b,
                first,
                J,
                segment,
                info,
            )
            for r in range(b - a):
                held[top + r] = a + 1 + r
            top += b - a
        elif kind == ACTION_ADVANCE:
            if top >= rows:
                info[0] = STATUS_SCHEDULE
                info[1] = q
                break
            J1 = forward_segment(
                step,
                running_cost,
                pool[top - 1],
                thetas,
                p,
                consts,
                data,
                a,
                b,
                first,
                J,
                scratch,
                info,
            )
            pool[top, :] = scratch[(b - a) % 2]
            held[top] = b
            top += 1
        else:  # ACTION_TURN
            if lam_at != -1 or not first:
                info[0] = STATUS_SCHEDULE
                info[1] = q
                break
            J1 = forward_segment(
                step,
                running_cost,
                pool[top - 1],
                thetas,
                p,
                consts,
                data,
                a,
                b,
                True,
                J,
                scratch,
                info,
            )
            if info[0] == 0:
                J1 += terminal_segment(
                    terminal_cost,
                    terminal_cost_vjp,
                    scratch[1],
                    p,
                    consts,
                    data[N],
                    cost_weight,
                    lam,
                    grad_p,
                    info,
                )
                x_end[:] = scratch[1]
                lam_at = N
        if info[0] != 0:
            break
        state[3] += b - a
        if first:
            J = J1
            front = b
        if top > state[4]:
            state[4] = top
    if info[0] != 0 and info[0] != STATUS_SCHEDULE:
        state[5] = q
    state[0], state[1], state[2] = top, front, lam_at
    J_acc[0] = J
