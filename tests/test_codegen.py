"""Generated symbolic kernels against hand derivatives, on expressions whose
printing is easy to get wrong (powers inside quotients)."""

import numpy as np
import pytest
import sympy as sp

from adjoint import ODESystem

RTOL = 1e-12


def test_power_in_a_denominator_is_parenthesised():
    # Regression: x**2/K**2 was once printed as x*x/K*K, so ∂f/∂K came out
    # wrong while the state Jacobian (no such quotient) was right.
    x, r, K = sp.symbols("x r K")
    system = ODESystem.from_sympy([r * x * (1 - x / K)], [x], [r, K])
    xv, rv, Kv = 0.5, 1.0, 1.5
    _, p_bar, _ = system.vjp(0.0, [xv], [rv, Kv], None, [1.0])
    np.testing.assert_allclose(
        p_bar, [xv * (1 - xv / Kv), rv * xv**2 / Kv**2], rtol=RTOL
    )


def test_negative_and_cubed_powers():
    x, a = sp.symbols("x a")
    system = ODESystem.from_sympy([a / x**3 + x**3 / a**2], [x], [a])
    xv, av = 1.3, 0.7
    x_bar, p_bar, _ = system.vjp(0.0, [xv], [av], None, [1.0])
    np.testing.assert_allclose(x_bar, [-3 * av / xv**4 + 3 * xv**2 / av**2], rtol=RTOL)
    np.testing.assert_allclose(p_bar, [1 / xv**3 - 2 * xv**3 / av**3], rtol=RTOL)


def _fd_jacobian(system, x, p):
    h = 1e-7
    cols = []
    for j in range(len(x)):
        dx = np.zeros(len(x))
        dx[j] = h
        cols.append((system.f(0.0, x + dx, p) - system.f(0.0, x - dx, p)) / (2 * h))
    return np.column_stack(cols)


def test_nonsmooth_functions_compile_and_differentiate():
    # Regression: Abs and sign once failed (complex derivatives of
    # assumption-free symbols), Piecewise and Max/Min did not compile.
    x, y, a = sp.symbols("x y a")
    exprs = [
        sp.Abs(x - a) + sp.sign(y) * x,
        sp.Piecewise((x * x, x > 0), (-y, True)) + sp.Max(x, y) - sp.Min(x, 2 * y),
    ]
    system = ODESystem.from_sympy(exprs, [x, y], [a])
    for point in ([0.7, -0.4], [-0.6, 0.9]):
        xv = np.array(point)
        p = np.array([0.2])
        np.testing.assert_allclose(
            system.jacobian_x(0.0, xv, p),
            _fd_jacobian(system, xv, p),
            rtol=1e-6,
            atol=1e-8,
        )
    xv = np.array([0.7, -0.4])
    expected = [abs(0.7 - 0.2) - 0.7, 0.49 + 0.7 + 0.8]
    np.testing.assert_allclose(system.f(0.0, xv, [0.2]), expected, rtol=1e-14)


def test_unwritable_cache_directory_falls_back_with_a_warning(tmp_path, monkeypatch):
    import os

    from adjoint import _systems_codegen

    blocked = tmp_path / "blocked"
    monkeypatch.setattr(_systems_codegen, "_writable", lambda d: d != blocked)
    x, b = sp.symbols("x b")
    expr = [b * x * x * x * 0.123456789]  # a system no other test generates
    with pytest.warns(RuntimeWarning, match="not writable"):
        system = ODESystem.from_sympy(expr, [x], [b], cache_dir=blocked)
    assert not blocked.exists() or not os.listdir(blocked)
    np.testing.assert_allclose(system.f(0.0, [2.0], [1.0]), [8 * 0.123456789])
