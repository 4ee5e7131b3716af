"""Kernels and hand-fused loops the core benchmark times.

Kernels live in a file so Numba caches them on disk; a fresh process loads
them instead of compiling (the cold/warm benchmark relies on that).

- ``lv_*``: Lotka–Volterra, explicit Euler, ``p = (a, b, c, d)``, a
  least-squares misfit to ``data`` at every step;
- ``l96_*``: Lorenz-96 (any ``n``, forcing ``p = (F,)``), explicit Euler, the
  same misfit; ``fused_l96_*`` are hand-fused Numba loops of the identical
  computation, the yardstick for the general engine's overhead;
- ``ring_*``: ``n`` coupled states forced by ``n_p`` parameters
  (``p_j`` drives state ``j mod n``), for forward- against reverse-mode
  Jacobians as the number of inputs grows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from adjoint import Sequence
from adjoint.kernels import Kernel

# ---------------------------------------------------------------------------
# Shared least-squares misfit: g_k = ½ Σ_i (x_i − d_{k,i})², Φ likewise.
# ---------------------------------------------------------------------------


def misfit(k, x, theta, p, consts, data):
    g = 0.0
    for i in range(x.shape[0]):
        r = x[i] - data[i]
        g += 0.5 * r * r
    return g


def misfit_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    for i in range(x.shape[0]):
        x_bar[i] += g_bar * (x[i] - data[i])
    return 0


def terminal_misfit(x, p, consts, data):
    g = 0.0
    for i in range(x.shape[0]):
        r = x[i] - data[i]
        g += 0.5 * r * r
    return g


def terminal_misfit_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    for i in range(x.shape[0]):
        x_bar[i] += phi_bar * (x[i] - data[i])
    return 0


# ---------------------------------------------------------------------------
# Lotka–Volterra: x' = a x − b x y, y' = c x y − d y
# ---------------------------------------------------------------------------


def lv_step(k, x, theta, p, consts, out):
    dt = consts[0]
    out[0] = x[0] + dt * (p[0] * x[0] - p[1] * x[0] * x[1])
    out[1] = x[1] + dt * (p[2] * x[0] * x[1] - p[3] * x[1])
    return 0


def lv_step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    dt = consts[0]
    x_bar[0] += lam[0] + dt * ((p[0] - p[1] * x[1]) * lam[0] + p[2] * x[1] * lam[1])
    x_bar[1] += lam[1] + dt * (-p[1] * x[0] * lam[0] + (p[2] * x[0] - p[3]) * lam[1])
    p_bar[0] += dt * x[0] * lam[0]
    p_bar[1] -= dt * x[0] * x[1] * lam[0]
    p_bar[2] += dt * x[0] * x[1] * lam[1]
    p_bar[3] -= dt * x[1] * lam[1]
    return 0


def lv_step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out):
    dt = consts[0]
    out[0] = x_tan[0] + dt * (
        (p[0] - p[1] * x[1]) * x_tan[0]
        - p[1] * x[0] * x_tan[1]
        + p_tan[0] * x[0]
        - p_tan[1] * x[0] * x[1]
    )
    out[1] = x_tan[1] + dt * (
        p[2] * x[1] * x_tan[0]
        + (p[2] * x[0] - p[3]) * x_tan[1]
        + p_tan[2] * x[0] * x[1]
        - p_tan[3] * x[1]
    )
    return 0


LV_P = np.array([1.0, 0.5, 0.2, 0.6])
LV_X0 = np.array([3.0, 1.0])


def lv_sequence(N, dt):
    """Lotka–Volterra over ``N`` Euler steps, fitted to its own noisy run."""
    xs = np.empty((N + 1, 2))
    xs[0] = LV_X0
    for k in range(N):  # plain NumPy: the data, not the thing timed
        x, y = xs[k]
        a, b, c, d = LV_P * 1.05
        xs[k + 1] = [x + dt * (a * x - b * x * y), y + dt * (c * x * y - d * y)]
    return Sequence(
        KERNELS["lv_step"],
        KERNELS["lv_step_vjp"],
        KERNELS["lv_step_jvp"],
        n=2,
        N=N,
        n_p=4,
        consts=[dt],
        data=xs,
        running_cost=KERNELS["misfit"],
        running_cost_vjp=KERNELS["misfit_vjp"],
        terminal_cost=KERNELS["terminal_misfit"],
        terminal_cost_vjp=KERNELS["terminal_misfit_vjp"],
    )


# ---------------------------------------------------------------------------
# Lorenz-96: x_i' = (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F
# ---------------------------------------------------------------------------


def l96_step(k, x, theta, p, consts, out):
    dt = consts[0]
    n = x.shape[0]
    for i in range(n):
        f = (x[(i + 1) % n] - x[i - 2]) * x[i - 1] - x[i] + p[0]
        out[i] = x[i] + dt * f
    return 0


def l96_step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    dt = consts[0]
    n = x.shape[0]
    for i in range(n):
        w = dt * lam[i]
        x_bar[i] += lam[i] - w
        x_bar[(i + 1) % n] += x[i - 1] * w
        x_bar[i - 2] -= x[i - 1] * w
        x_bar[i - 1] += (x[(i + 1) % n] - x[i - 2]) * w
        p_bar[0] += w
    return 0


def l96_step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out):
    dt = consts[0]
    n = x.shape[0]
    for i in range(n):
        j = (i + 1) % n
        f_tan = (
            (x_tan[j] - x_tan[i - 2]) * x[i - 1]
            + (x[j] - x[i - 2]) * x_tan[i - 1]
            - x_tan[i]
            + p_tan[0]
        )
        out[i] = x_tan[i] + dt * f_tan
    return 0


L96_F = 8.0


def l96_x0(n):
    x0 = np.full(n, L96_F)
    x0[0] += 0.01
    return x0


def l96_data(n, N, dt, seed=0):
    """Noisy states of a run from a perturbed start (plain NumPy)."""
    rng = np.random.default_rng(seed)
    xs = np.empty((N + 1, n))
    xs[0] = l96_x0(n) + 0.1 * rng.standard_normal(n)
    for k in range(N):
        x = xs[k]
        f = (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + L96_F
        xs[k + 1] = x + dt * f
    return xs + 0.1 * rng.standard_normal(xs.shape)


def l96_sequence(n, N, dt, data):
    return Sequence(
        KERNELS["l96_step"],
        KERNELS["l96_step_vjp"],
        KERNELS["l96_step_jvp"],
        n=n,
        N=N,
        n_p=1,
        consts=[dt],
        data=data,
        running_cost=KERNELS["misfit"],
        running_cost_vjp=KERNELS["misfit_vjp"],
        terminal_cost=KERNELS["terminal_misfit"],
        terminal_cost_vjp=KERNELS["terminal_misfit_vjp"],
    )


@njit(cache=True)
def fused_l96_forward(x0, F, dt, data, xs):
    """Hand-fused forward sweep with the same arithmetic as the kernels;
    overwrites ``xs`` (N + 1, n), returns J."""
    N = xs.shape[0] - 1
    n = xs.shape[1]
    xs[0, :] = x0
    J = 0.0
    for k in range(N):
        for i in range(n):
            r = xs[k, i] - data[k, i]
            J += 0.5 * r * r
        for i in range(n):
            f = (xs[k, (i + 1) % n] - xs[k, i - 2]) * xs[k, i - 1] - xs[k, i] + F
            xs[k + 1, i] = xs[k, i] + dt * f
    for i in range(n):
        r = xs[N, i] - data[N, i]
        J += 0.5 * r * r
    return J


@njit(cache=True)
def fused_l96_value_and_grad(x0, F, dt, data, xs, lam, lam_next):
    """Hand-fused forward and adjoint sweeps; returns ``(J, dJ/dF)`` and
    leaves ``dJ/dx0`` in ``lam``.  Overwrites ``xs``, ``lam``, ``lam_next``."""
    J = fused_l96_forward(x0, F, dt, data, xs)
    N = xs.shape[0] - 1
    n = xs.shape[1]
    grad_F = 0.0
    for i in range(n):
        lam_next[i] = xs[N, i] - data[N, i]
    for k in range(N - 1, -1, -1):
        for i in range(n):
            lam[i] = xs[k, i] - data[k, i]
        for i in range(n):
            w = dt * lam_next[i]
            lam[i] += lam_next[i] - w
            lam[(i + 1) % n] += xs[k, i - 1] * w
            lam[i - 2] -= xs[k, i - 1] * w
            lam[i - 1] += (xs[k, (i + 1) % n] - xs[k, i - 2]) * w
            grad_F += w
        for i in range(n):
            lam_next[i] = lam[i]
    return J, grad_F


# ---------------------------------------------------------------------------
# Ring of n states forced by n_p parameters (Jacobian crossover)
# ---------------------------------------------------------------------------


def ring_step(k, x, theta, p, consts, out):
    dt = consts[0]
    n = x.shape[0]
    for i in range(n):
        out[i] = x[i] + dt * (np.sin(x[(i + 1) % n]) - x[i])
    for j in range(p.shape[0]):
        out[j % n] += dt * p[j]
    return 0


def ring_step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    dt = consts[0]
    n = x.shape[0]
    for i in range(n):
        x_bar[i] += (1.0 - dt) * lam[i]
        x_bar[(i + 1) % n] += dt * np.cos(x[(i + 1) % n]) * lam[i]
    for j in range(p.shape[0]):
        p_bar[j] += dt * lam[j % n]
    return 0


def ring_step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out):
    dt = consts[0]
    n = x.shape[0]
    for i in range(n):
        j = (i + 1) % n
        out[i] = x_tan[i] + dt * (np.cos(x[j]) * x_tan[j] - x_tan[i])
    for j in range(p.shape[0]):
        out[j % n] += dt * p_tan[j]
    return 0


def ring_sequence(n, n_p, N, dt):
    return Sequence(
        KERNELS["ring_step"],
        KERNELS["ring_step_vjp"],
        KERNELS["ring_step_jvp"],
        n=n,
        N=N,
        n_p=n_p,
        consts=[dt],
    )


# ---------------------------------------------------------------------------
# Compiled once per process (loaded from the disk cache after the first run)
# ---------------------------------------------------------------------------

_KINDS = {
    "misfit": "running_cost",
    "misfit_vjp": "running_cost_vjp",
    "terminal_misfit": "terminal_cost",
    "terminal_misfit_vjp": "terminal_cost_vjp",
    "lv_step": "step",
    "lv_step_vjp": "step_vjp",
    "lv_step_jvp": "step_jvp",
    "l96_step": "step",
    "l96_step_vjp": "step_vjp",
    "l96_step_jvp": "step_jvp",
    "ring_step": "step",
    "ring_step_vjp": "step_vjp",
    "ring_step_jvp": "step_jvp",
}
KERNELS = {name: Kernel(globals()[name], kind) for name, kind in _KINDS.items()}
