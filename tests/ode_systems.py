"""ODE systems the integrator tests and benchmarks are built from.

Kernels live in this file (not inside test functions) so Numba caches them
on disk next to it.  Every right-hand side here is generic (complex-safe:
arithmetic and NumPy functions only, branches on sizes only), so the same
function serves ``ODESystem.from_kernels`` (with its hand-written VJP, JVP
and Jacobian), ``ODESystem.from_rhs`` (complex-step products) and the
complex-step checks.  ``sympy_<name>()`` returns the same model as SymPy
expressions for ``ODESystem.from_sympy``.

Systems:

- Lotka–Volterra with a seasonal growth rate and a harvesting control:
  ``x1' = a x1 (1 + ε sin t) − b x1 x2``, ``x2' = −c x2 + d x1 x2 − u x2``,
  ``p = (a, b, c, d)``, ``u = (u,)``, ``ε = 0.1`` (time-dependent);
- Van der Pol with a forcing control: ``x1' = x2``,
  ``x2' = μ (1 − x1²) x2 − x1 + u``, ``p = (μ,)``, ``u = (u,)``;
- Lorenz-96: ``x_j' = (x_{j+1} − x_{j−2}) x_{j−1} − x_j + F``, ``p = (F,)``,
  any ``n ≥ 4`` (periodic indices);
- Robertson's stiff chemical kinetics, ``p = (k1, k2, k3)``;
- linear decay ``x' = −a x``, whose costs have closed-form gradients;
- a reaction–diffusion (Fisher–KPP) method-of-lines system on ``n`` cells,
  ``x_j' = D (x_{j−1} − 2 x_j + x_{j+1}) / h² + r x_j (1 − x_j)`` with
  zero-flux ends, ``h = 1/n``, ``p = (D, r)``: tridiagonal Jacobian.
"""

from __future__ import annotations

import numpy as np

from adjoint import ODESystem

EPS_LV = 0.1  # amplitude of the seasonal forcing of Lotka–Volterra

# ---- Lotka–Volterra (time-dependent, one control) ----


def rhs_lotka_volterra(t, x, p, u, out):
    season = 1.0 + EPS_LV * np.sin(t)
    out[0] = p[0] * x[0] * season - p[1] * x[0] * x[1]
    out[1] = -p[2] * x[1] + p[3] * x[0] * x[1] - u[0] * x[1]
    return 0


def vjp_lotka_volterra(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    season = 1.0 + EPS_LV * np.sin(t)
    a, b = f_bar[0], f_bar[1]
    x_bar[0] += a * (p[0] * season - p[1] * x[1]) + b * p[3] * x[1]
    x_bar[1] += -a * p[1] * x[0] + b * (-p[2] + p[3] * x[0] - u[0])
    p_bar[0] += a * x[0] * season
    p_bar[1] += -a * x[0] * x[1]
    p_bar[2] += -b * x[1]
    p_bar[3] += b * x[0] * x[1]
    u_bar[0] += -b * x[1]
    return 0


def jvp_lotka_volterra(t, x, p, u, x_tan, p_tan, u_tan, out):
    season = 1.0 + EPS_LV * np.sin(t)
    out[0] = (
        (p[0] * season - p[1] * x[1]) * x_tan[0]
        - p[1] * x[0] * x_tan[1]
        + x[0] * season * p_tan[0]
        - x[0] * x[1] * p_tan[1]
    )
    out[1] = (
        p[3] * x[1] * x_tan[0]
        + (-p[2] + p[3] * x[0] - u[0]) * x_tan[1]
        - x[1] * p_tan[2]
        + x[0] * x[1] * p_tan[3]
        - x[1] * u_tan[0]
    )
    return 0


def jac_lotka_volterra(t, x, p, u, jac_out):
    season = 1.0 + EPS_LV * np.sin(t)
    jac_out[0, 0] = p[0] * season - p[1] * x[1]
    jac_out[0, 1] = -p[1] * x[0]
    jac_out[1, 0] = p[3] * x[1]
    jac_out[1, 1] = -p[2] + p[3] * x[0] - u[0]
    return 0


def sympy_lotka_volterra():
    import sympy as sp

    t = sp.Symbol("t")
    x1, x2, a, b, c, d, h = sp.symbols("x1 x2 a b c d h")
    f = [
        a * x1 * (1 + sp.Float(EPS_LV) * sp.sin(t)) - b * x1 * x2,
        -c * x2 + d * x1 * x2 - h * x2,
    ]
    return f, [x1, x2], [a, b, c, d], [h], t


# ---- Van der Pol (one control) ----


def rhs_van_der_pol(t, x, p, u, out):
    out[0] = x[1]
    out[1] = p[0] * (1.0 - x[0] * x[0]) * x[1] - x[0] + u[0]
    return 0


def vjp_van_der_pol(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    x_bar[0] += f_bar[1] * (-2.0 * p[0] * x[0] * x[1] - 1.0)
    x_bar[1] += f_bar[0] + f_bar[1] * p[0] * (1.0 - x[0] * x[0])
    p_bar[0] += f_bar[1] * (1.0 - x[0] * x[0]) * x[1]
    u_bar[0] += f_bar[1]
    return 0


def jvp_van_der_pol(t, x, p, u, x_tan, p_tan, u_tan, out):
    out[0] = x_tan[1]
    out[1] = (
        (-2.0 * p[0] * x[0] * x[1] - 1.0) * x_tan[0]
        + p[0] * (1.0 - x[0] * x[0]) * x_tan[1]
        + (1.0 - x[0] * x[0]) * x[1] * p_tan[0]
        + u_tan[0]
    )
    return 0


def jac_van_der_pol(t, x, p, u, jac_out):
    jac_out[0, 0] = 0.0
    jac_out[0, 1] = 1.0
    jac_out[1, 0] = -2.0 * p[0] * x[0] * x[1] - 1.0
    jac_out[1, 1] = p[0] * (1.0 - x[0] * x[0])
    return 0


def sympy_van_der_pol():
    import sympy as sp

    x1, x2, mu, v = sp.symbols("x1 x2 mu v")
    return [x2, mu * (1 - x1**2) * x2 - x1 + v], [x1, x2], [mu], [v], None


# ---- Lorenz-96 (any n >= 4) ----
# Periodic neighbours by explicit index arithmetic: Numba's `%` follows
# Python's sign rules and costs a branch per use, too slow for a benchmark.


def rhs_lorenz96(t, x, p, u, out):
    n = x.shape[0]
    F = p[0]
    out[0] = (x[1] - x[n - 2]) * x[n - 1] - x[0] + F
    out[1] = (x[2] - x[n - 1]) * x[0] - x[1] + F
    for j in range(2, n - 1):
        out[j] = (x[j + 1] - x[j - 2]) * x[j - 1] - x[j] + F
    out[n - 1] = (x[0] - x[n - 3]) * x[n - 2] - x[n - 1] + F
    return 0


def vjp_lorenz96(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    n = x.shape[0]
    total = 0.0
    for j in range(n):
        jp1 = j + 1 if j + 1 < n else 0
        jm1 = j - 1 if j >= 1 else n - 1
        jm2 = j - 2 if j >= 2 else j - 2 + n
        fb = f_bar[j]
        xm1 = x[jm1]
        x_bar[jp1] += fb * xm1
        x_bar[jm2] -= fb * xm1
        x_bar[jm1] += fb * (x[jp1] - x[jm2])
        x_bar[j] -= fb
        total += fb
    p_bar[0] += total
    return 0


def jvp_lorenz96(t, x, p, u, x_tan, p_tan, u_tan, out):
    n = x.shape[0]
    for j in range(n):
        jp1 = j + 1 if j + 1 < n else 0
        jm1 = j - 1 if j >= 1 else n - 1
        jm2 = j - 2 if j >= 2 else j - 2 + n
        out[j] = (
            (x_tan[jp1] - x_tan[jm2]) * x[jm1]
            + (x[jp1] - x[jm2]) * x_tan[jm1]
            - x_tan[j]
            + p_tan[0]
        )
    return 0


def jac_lorenz96(t, x, p, u, jac_out):
    n = x.shape[0]
    jac_out[:, :] = 0.0
    for j in range(n):
        jp1 = j + 1 if j + 1 < n else 0
        jm1 = j - 1 if j >= 1 else n - 1
        jm2 = j - 2 if j >= 2 else j - 2 + n
        jac_out[j, jp1] += x[jm1]
        jac_out[j, jm2] -= x[jm1]
        jac_out[j, jm1] += x[jp1] - x[jm2]
        jac_out[j, j] -= 1.0
    return 0


def sympy_lorenz96(n):
    import sympy as sp

    x = sp.symbols(f"x0:{n}")
    F = sp.Symbol("F")
    f = [
        (x[(j + 1) % n] - x[(j - 2) % n]) * x[(j - 1) % n] - x[j] + F for j in range(n)
    ]
    return f, list(x), [F], [], None


# ---- Robertson (stiff) ----


def rhs_robertson(t, x, p, u, out):
    out[0] = -p[0] * x[0] + p[1] * x[1] * x[2]
    out[1] = p[0] * x[0] - p[1] * x[1] * x[2] - p[2] * x[1] * x[1]
    out[2] = p[2] * x[1] * x[1]
    return 0


def vjp_robertson(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    d01 = f_bar[1] - f_bar[0]  # the k1 and k2 reactions move mass 0 <-> 1
    d12 = f_bar[2] - f_bar[1]  # the k3 reaction moves mass 1 -> 2
    x_bar[0] += p[0] * d01
    x_bar[1] += -p[1] * x[2] * d01 + 2.0 * p[2] * x[1] * d12
    x_bar[2] += -p[1] * x[1] * d01
    p_bar[0] += x[0] * d01
    p_bar[1] += -x[1] * x[2] * d01
    p_bar[2] += x[1] * x[1] * d12
    return 0


def jac_robertson(t, x, p, u, jac_out):
    jac_out[0, 0] = -p[0]
    jac_out[0, 1] = p[1] * x[2]
    jac_out[0, 2] = p[1] * x[1]
    jac_out[1, 0] = p[0]
    jac_out[1, 1] = -p[1] * x[2] - 2.0 * p[2] * x[1]
    jac_out[1, 2] = -p[1] * x[1]
    jac_out[2, 0] = 0.0
    jac_out[2, 1] = 2.0 * p[2] * x[1]
    jac_out[2, 2] = 0.0
    return 0


# ---- Fisher–KPP reaction–diffusion, method of lines ----


def rhs_fisher(t, x, p, u, out):
    n = x.shape[0]
    scale = p[0] * n * n
    for j in range(n):
        left = x[j - 1] if j > 0 else x[j]
        right = x[j + 1] if j < n - 1 else x[j]
        out[j] = scale * (left - 2.0 * x[j] + right) + p[1] * x[j] * (1.0 - x[j])
    return 0


# ---- linear decay (analytic gradients) ----


def rhs_decay(t, x, p, u, out):
    out[0] = -p[0] * x[0]
    return 0


# ---- constructors ----


def lotka_volterra(way="kernels", **kw):
    if way == "rhs":
        return ODESystem.from_rhs(rhs_lotka_volterra, n=2, n_p=4, n_u=1, **kw)
    if way == "sympy":
        f, x, p, u, t = sympy_lotka_volterra()
        return ODESystem.from_sympy(f, x, p, u, t, **kw)
    return ODESystem.from_kernels(
        rhs_lotka_volterra,
        vjp_lotka_volterra,
        jvp_lotka_volterra,
        jac_lotka_volterra,
        n=2,
        n_p=4,
        n_u=1,
        **kw,
    )


def van_der_pol(way="kernels", **kw):
    if way == "rhs":
        return ODESystem.from_rhs(rhs_van_der_pol, n=2, n_p=1, n_u=1, **kw)
    if way == "sympy":
        f, x, p, u, t = sympy_van_der_pol()
        return ODESystem.from_sympy(f, x, p, u, t, **kw)
    return ODESystem.from_kernels(
        rhs_van_der_pol,
        vjp_van_der_pol,
        jvp_van_der_pol,
        jac_van_der_pol,
        n=2,
        n_p=1,
        n_u=1,
        **kw,
    )


def lorenz96(n=40, way="kernels", **kw):
    if way == "rhs":
        return ODESystem.from_rhs(rhs_lorenz96, n=n, n_p=1, **kw)
    if way == "sympy":
        f, x, p, u, t = sympy_lorenz96(n)
        return ODESystem.from_sympy(f, x, p, u, t, **kw)
    return ODESystem.from_kernels(
        rhs_lorenz96, vjp_lorenz96, jvp_lorenz96, jac_lorenz96, n=n, n_p=1, **kw
    )


def robertson(**kw):
    return ODESystem.from_kernels(
        rhs_robertson, vjp_robertson, None, jac_robertson, n=3, n_p=3, **kw
    )


def fisher(n=50, **kw):
    return ODESystem.from_rhs(rhs_fisher, n=n, n_p=2, **kw)


def decay(**kw):
    return ODESystem.from_rhs(rhs_decay, n=1, n_p=1, **kw)
