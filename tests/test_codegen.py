"""Generated symbolic kernels against hand derivatives, on expressions whose
printing is easy to get wrong (powers inside quotients)."""

import numpy as np
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
