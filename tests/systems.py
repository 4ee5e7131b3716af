"""Small systems the tests build sequences from.

Kernels live in this file (not inside test functions) so Numba caches them
on disk next to it and a second test run, or a second process, does not
compile them again.  Every kernel here is complex-safe: it branches only on
unperturbed data (``data``, ``consts``, the step index), so the complex-step
check can run it on ``complex128`` states and parameters.

Two systems:

- ``lq_*``: the linear-quadratic sequence ``x_{k+1} = A x_k + B θ_k`` with
  running cost ``½ x_kᵀ Q x_k + ½ θ_kᵀ R θ_k`` and terminal cost
  ``½ x_Nᵀ P x_N``.  The matrices travel in ``consts`` (see
  :func:`lq_consts`); sizes come from the arrays, so one kernel set serves any
  ``n`` and ``m``.
- ``lorenz_*``: one explicit Euler step of Lorenz-63 with an additive forcing
  ``θ_k`` and parameters ``p = (σ, ρ, β)``, a data-misfit running cost that
  reads ``data[k]`` (NaN marks a missing observation) and a prior on ``p``.
"""

from __future__ import annotations

import numpy as np

from adjoint import Sequence
from adjoint.kernels import Kernel

KINDS = (
    "step",
    "step_vjp",
    "step_jvp",
    "running_cost",
    "running_cost_vjp",
    "terminal_cost",
    "terminal_cost_vjp",
)

# ---------------------------------------------------------------------------
# Linear-quadratic sequence
# ---------------------------------------------------------------------------
# consts layout, n = len(x), m = len(theta):
#   A (n*n) | Q (n*n) | P (n*n) | B (n*m) | R (m*m), all row-major.
# The terminal cost knows only n, so everything it needs sits before B.


def lq_consts(A, B, Q, R, P):
    """Flatten the LQ matrices into the ``consts`` vector the kernels read."""
    return np.concatenate(
        [np.ravel(A), np.ravel(Q), np.ravel(P), np.ravel(B), np.ravel(R)]
    ).astype(np.float64)


def lq_step(k, x, theta, p, consts, out):
    n = x.shape[0]
    m = theta.shape[0]
    b0 = 3 * n * n
    for i in range(n):
        out[i] = 0.0 * x[0]
        for j in range(n):
            out[i] += consts[i * n + j] * x[j]
        for j in range(m):
            out[i] += consts[b0 + i * m + j] * theta[j]
    return 0


def lq_step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    n = x.shape[0]
    m = theta.shape[0]
    b0 = 3 * n * n
    for i in range(n):
        for j in range(n):
            x_bar[j] += consts[i * n + j] * lam[i]
        for j in range(m):
            theta_bar[j] += consts[b0 + i * m + j] * lam[i]
    return 0


def lq_step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out):
    n = x.shape[0]
    m = theta.shape[0]
    b0 = 3 * n * n
    for i in range(n):
        out[i] = 0.0 * x_tan[0]
        for j in range(n):
            out[i] += consts[i * n + j] * x_tan[j]
        for j in range(m):
            out[i] += consts[b0 + i * m + j] * theta_tan[j]
    return 0


def lq_running_cost(k, x, theta, p, consts, data):
    n = x.shape[0]
    m = theta.shape[0]
    q0 = n * n
    r0 = 3 * n * n + n * m
    g = 0.0 * x[0]
    for i in range(n):
        for j in range(n):
            g += 0.5 * x[i] * consts[q0 + i * n + j] * x[j]
    for i in range(m):
        for j in range(m):
            g += 0.5 * theta[i] * consts[r0 + i * m + j] * theta[j]
    return g


def lq_running_cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    # d/dx ½ xᵀQx = ½ (Q + Qᵀ) x, so Q need not be symmetric.
    n = x.shape[0]
    m = theta.shape[0]
    q0 = n * n
    r0 = 3 * n * n + n * m
    for i in range(n):
        for j in range(n):
            qij = consts[q0 + i * n + j]
            x_bar[i] += 0.5 * g_bar * qij * x[j]
            x_bar[j] += 0.5 * g_bar * qij * x[i]
    for i in range(m):
        for j in range(m):
            rij = consts[r0 + i * m + j]
            theta_bar[i] += 0.5 * g_bar * rij * theta[j]
            theta_bar[j] += 0.5 * g_bar * rij * theta[i]
    return 0


def lq_terminal_cost(x, p, consts, data):
    n = x.shape[0]
    p0 = 2 * n * n
    phi = 0.0 * x[0]
    for i in range(n):
        for j in range(n):
            phi += 0.5 * x[i] * consts[p0 + i * n + j] * x[j]
    return phi


def lq_terminal_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    n = x.shape[0]
    p0 = 2 * n * n
    for i in range(n):
        for j in range(n):
            pij = consts[p0 + i * n + j]
            x_bar[i] += 0.5 * phi_bar * pij * x[j]
            x_bar[j] += 0.5 * phi_bar * pij * x[i]
    return 0


def lq_matrices(rng, n=3, m=2):
    """Random ``A`` (spectral radius 0.9), ``B`` and SPD ``Q, R, P``."""
    A = rng.standard_normal((n, n))
    A *= 0.9 / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.standard_normal((n, m))

    def spd(size):
        M = rng.standard_normal((size, size))
        return M @ M.T + size * np.eye(size)

    return A, B, spd(n), spd(m), spd(n)


def lq_sequence(A, B, Q, R, P, N):
    """The LQ sequence of ``N`` steps for the given matrices."""
    n, m = B.shape
    return Sequence(
        LQ_KERNELS["step"],
        LQ_KERNELS["step_vjp"],
        LQ_KERNELS["step_jvp"],
        n=n,
        N=N,
        m=m,
        consts=lq_consts(A, B, Q, R, P),
        running_cost=LQ_KERNELS["running_cost"],
        running_cost_vjp=LQ_KERNELS["running_cost_vjp"],
        terminal_cost=LQ_KERNELS["terminal_cost"],
        terminal_cost_vjp=LQ_KERNELS["terminal_cost_vjp"],
    )


# ---------------------------------------------------------------------------
# Lorenz-63, explicit Euler, with forcing and data misfit
# ---------------------------------------------------------------------------
# consts = [dt, w (misfit weight), alpha (forcing weight),
#           gamma_run, gamma_term (prior weights on p), p_ref (3 values)]
# running cost g_k = ½ w Σ_i (x_i − d_i)²  (skipping NaN d_i)
#                  + ½ alpha |θ_k|² + ½ gamma_run |p − p_ref|²
# terminal cost Φ  = ½ w Σ_i (x_i − d_i)²  (skipping NaN d_i)
#                  + ½ gamma_term |p − p_ref|²

LORENZ_P = np.array([10.0, 28.0, 8.0 / 3.0])
LORENZ_X0 = np.array([1.0, 1.0, 20.0])


def lorenz_step(k, x, theta, p, consts, out):
    dt = consts[0]
    sigma, rho, beta = p[0], p[1], p[2]
    out[0] = x[0] + dt * (sigma * (x[1] - x[0]) + theta[0])
    out[1] = x[1] + dt * (x[0] * (rho - x[2]) - x[1] + theta[1])
    out[2] = x[2] + dt * (x[0] * x[1] - beta * x[2] + theta[2])
    return 0


def lorenz_step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    dt = consts[0]
    sigma, rho, beta = p[0], p[1], p[2]
    x_bar[0] += lam[0] + dt * (-sigma * lam[0] + (rho - x[2]) * lam[1] + x[1] * lam[2])
    x_bar[1] += lam[1] + dt * (sigma * lam[0] - lam[1] + x[0] * lam[2])
    x_bar[2] += lam[2] + dt * (-x[0] * lam[1] - beta * lam[2])
    for i in range(3):
        theta_bar[i] += dt * lam[i]
    p_bar[0] += dt * (x[1] - x[0]) * lam[0]
    p_bar[1] += dt * x[0] * lam[1]
    p_bar[2] -= dt * x[2] * lam[2]
    return 0


def lorenz_step_vjp_wrong(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    """As :func:`lorenz_step_vjp` with two deliberate bugs: the ``x_1 λ_2``
    term of ``x̄_0`` is dropped and ``p̄_2`` has the wrong sign."""
    dt = consts[0]
    sigma, rho, beta = p[0], p[1], p[2]
    x_bar[0] += lam[0] + dt * (-sigma * lam[0] + (rho - x[2]) * lam[1])
    x_bar[1] += lam[1] + dt * (sigma * lam[0] - lam[1] + x[0] * lam[2])
    x_bar[2] += lam[2] + dt * (-x[0] * lam[1] - beta * lam[2])
    for i in range(3):
        theta_bar[i] += dt * lam[i]
    p_bar[0] += dt * (x[1] - x[0]) * lam[0]
    p_bar[1] += dt * x[0] * lam[1]
    p_bar[2] += dt * x[2] * lam[2]
    return 0


def lorenz_step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out):
    dt = consts[0]
    sigma, rho, beta = p[0], p[1], p[2]
    out[0] = x_tan[0] + dt * (
        sigma * (x_tan[1] - x_tan[0]) + p_tan[0] * (x[1] - x[0]) + theta_tan[0]
    )
    out[1] = x_tan[1] + dt * (
        x_tan[0] * (rho - x[2])
        - x[0] * x_tan[2]
        + p_tan[1] * x[0]
        - x_tan[1]
        + theta_tan[1]
    )
    out[2] = x_tan[2] + dt * (
        x_tan[0] * x[1]
        + x[0] * x_tan[1]
        - beta * x_tan[2]
        - p_tan[2] * x[2]
        + theta_tan[2]
    )
    return 0


def lorenz_running_cost(k, x, theta, p, consts, data):
    w, alpha, gamma = consts[1], consts[2], consts[3]
    g = 0.0 * x[0]
    for i in range(3):
        if not np.isnan(data[i]):
            r = x[i] - data[i]
            g += 0.5 * w * r * r
        g += 0.5 * alpha * theta[i] * theta[i]
        q = p[i] - consts[5 + i]
        g += 0.5 * gamma * q * q
    return g


def lorenz_running_cost_vjp(
    k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar
):
    w, alpha, gamma = consts[1], consts[2], consts[3]
    for i in range(3):
        if not np.isnan(data[i]):
            x_bar[i] += g_bar * w * (x[i] - data[i])
        theta_bar[i] += g_bar * alpha * theta[i]
        p_bar[i] += g_bar * gamma * (p[i] - consts[5 + i])
    return 0


def lorenz_terminal_cost(x, p, consts, data):
    w, gamma = consts[1], consts[4]
    phi = 0.0 * x[0]
    for i in range(3):
        if not np.isnan(data[i]):
            r = x[i] - data[i]
            phi += 0.5 * w * r * r
        q = p[i] - consts[5 + i]
        phi += 0.5 * gamma * q * q
    return phi


def lorenz_terminal_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    w, gamma = consts[1], consts[4]
    for i in range(3):
        if not np.isnan(data[i]):
            x_bar[i] += phi_bar * w * (x[i] - data[i])
        p_bar[i] += phi_bar * gamma * (p[i] - consts[5 + i])
    return 0


def lorenz_data(N, dt, rng, *, noise=0.5, every=1):
    """Noisy observations of a Lorenz-63 run with slightly different
    parameters, shape (N + 1, 3).  Rows off the observation grid
    (``k % every != 0``) and column 1 of every fifth row are NaN (missing)."""
    p_true = LORENZ_P * np.array([1.05, 0.97, 1.02])
    xs = np.empty((N + 1, 3))
    xs[0] = LORENZ_X0 + 0.3
    for k in range(N):
        x = xs[k]
        f = np.array(
            [
                p_true[0] * (x[1] - x[0]),
                x[0] * (p_true[1] - x[2]) - x[1],
                x[0] * x[1] - p_true[2] * x[2],
            ]
        )
        xs[k + 1] = x + dt * f
    data = xs + noise * rng.standard_normal(xs.shape)
    data[np.arange(N + 1) % every != 0] = np.nan
    data[::5, 1] = np.nan
    return data


def lorenz_consts(dt=0.01, w=1.0, alpha=0.1, gamma_run=1e-3, gamma_term=0.5):
    """The ``consts`` vector of the Lorenz kernels; the prior is centred on
    :data:`LORENZ_P`."""
    return np.concatenate([[dt, w, alpha, gamma_run, gamma_term], LORENZ_P])


def lorenz_sequence(N, data, *, dt=0.01, step_vjp=None, jvp=True, **weights):
    """Lorenz-63 sequence of ``N`` Euler steps fitted to ``data``.

    ``step_vjp`` replaces the correct VJP (to test that checks fail).
    """
    return Sequence(
        LORENZ_KERNELS["step"],
        LORENZ_KERNELS["step_vjp"] if step_vjp is None else step_vjp,
        LORENZ_KERNELS["step_jvp"] if jvp else None,
        n=3,
        N=N,
        m=3,
        n_p=3,
        consts=lorenz_consts(dt, **weights),
        data=data,
        running_cost=LORENZ_KERNELS["running_cost"],
        running_cost_vjp=LORENZ_KERNELS["running_cost_vjp"],
        terminal_cost=LORENZ_KERNELS["terminal_cost"],
        terminal_cost_vjp=LORENZ_KERNELS["terminal_cost_vjp"],
    )


# ---------------------------------------------------------------------------
# Compiled once per process (loaded from the disk cache after the first run).
# ---------------------------------------------------------------------------


def _compile(prefix):
    namespace = globals()
    return {kind: Kernel(namespace[f"{prefix}_{kind}"], kind) for kind in KINDS}


LQ_KERNELS = _compile("lq")
LORENZ_KERNELS = _compile("lorenz")
LORENZ_STEP_VJP_WRONG = Kernel(lorenz_step_vjp_wrong, "step_vjp")
