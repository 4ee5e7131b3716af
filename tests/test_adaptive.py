"""Adaptive-step integration: the embedded pairs, the controller, and the exact
adjoint of the accepted steps with their sizes frozen.

Reference problems (kernels at module level so Numba caches them):

- ``rhs_vdp``: a forced van der Pol oscillator ``x'' = μ(1 − x²)x' − ω² x +
  u(t)``, ``p = (μ, ω²)``, piecewise-constant forcing ``u``;
- ``rhs_decay``: ``x' = −p x``, with ``sol_decay`` and ``grad_decay``.
"""

from __future__ import annotations

import numpy as np
import pytest

from adjoint import (
    AdaptiveODESequence,
    Checkpointing,
    Objective,
    ODESystem,
    SweepError,
    check_gradients,
    complex_step_gradient,
    dot_product_test,
    observation_cost,
    relative_error,
)
from adjoint._integrators._adaptive import PAIRS
from adjoint._integrators._continuous import continuous_adjoint_gradient

# The adjoint and complex step run the same frozen steps: both exact to rounding.
COMPLEX_STEP_RTOL = 1e-12
T_END = 3.0
N_OUT = 15


def rhs_vdp(t, x, p, u, out):
    out[0] = x[1]
    out[1] = p[0] * (1.0 - x[0] * x[0]) * x[1] - p[1] * x[0] + u[0]
    return 0


def rhs_vdp_vjp(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    x_bar[0] += f_bar[1] * (-2.0 * p[0] * x[0] * x[1] - p[1])
    x_bar[1] += f_bar[0] + f_bar[1] * p[0] * (1.0 - x[0] * x[0])
    p_bar[0] += f_bar[1] * (1.0 - x[0] * x[0]) * x[1]
    p_bar[1] -= f_bar[1] * x[0]
    u_bar[0] += f_bar[1]
    return 0


def rhs_vdp_jvp(t, x, p, u, x_tan, p_tan, u_tan, out):
    out[0] = x_tan[1]
    out[1] = (
        (-2.0 * p[0] * x[0] * x[1] - p[1]) * x_tan[0]
        + p[0] * (1.0 - x[0] * x[0]) * x_tan[1]
        + (1.0 - x[0] * x[0]) * x[1] * p_tan[0]
        - x[0] * p_tan[1]
        + u_tan[0]
    )
    return 0


def rhs_decay(t, x, p, u, out):
    out[0] = -p[0] * x[0]
    return 0


def final_value(x, p, consts, data):
    return x[0]


def final_value_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    x_bar[0] += phi_bar
    return 0


def sol_decay(x0, p, t):
    return x0 * np.exp(-p * t)


def grad_decay(x0, p, t):
    """d x(t)/d(x0, p)."""
    return np.array([np.exp(-p * t), -t * x0 * np.exp(-p * t)])


VDP = ODESystem.from_kernels(rhs_vdp, rhs_vdp_vjp, rhs_vdp_jvp, n=2, n_p=2, n_u=1)
DECAY = ODESystem.from_rhs(rhs_decay, n=1, n_p=1)
T_OUT = np.linspace(0.0, T_END, N_OUT + 1)
X0 = np.array([1.5, 0.0])
P = np.array([1.2, 2.0])
U = 0.3 * np.sin(np.arange(N_OUT))[:, None]


def observations():
    rng = np.random.default_rng(5)
    steps = np.arange(1, N_OUT + 1)
    return observation_cost(
        steps, rng.standard_normal((N_OUT, 2)), N=N_OUT, weights=[1.0, 0.5]
    )


def vdp_objective(pair="dopri5", rtol=1e-6, atol=1e-9, **kw):
    seq = AdaptiveODESequence(
        VDP,
        pair=pair,
        t_out=T_OUT,
        rtol=rtol,
        atol=atol,
        observations=observations(),
        **kw,
    )
    return Objective(seq, X0, U, P, wrt=("x0", "theta", "p"))


# ---- the pairs ----


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_pair_tableau_is_consistent(name):
    pair = PAIRS[name]
    np.testing.assert_allclose(pair.A.sum(axis=1), pair.c, atol=1e-15)
    assert np.allclose(np.tril(pair.A, -1), pair.A)
    # Quadrature conditions Σ b c^(q-1) = 1/q up to each weight's order, and
    # the third-order condition Σ b_i A_ij c_j = 1/6.
    for weights, order in ((pair.b, pair.order), (pair.b_hat, pair.err_order)):
        for q in range(1, order + 1):
            assert weights @ pair.c ** (q - 1) == pytest.approx(1.0 / q, abs=1e-14)
        if order >= 3:
            assert weights @ pair.A @ pair.c == pytest.approx(1.0 / 6.0, abs=1e-14)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_error_shrinks_with_the_tolerance(name):
    errors = []
    for rtol in (1e-4, 1e-7, 1e-10):
        seq = AdaptiveODESequence(
            DECAY,
            pair=name,
            t_out=[0.0, 2.0],
            rtol=rtol,
            atol=rtol * 1e-2,
            terminal_cost=final_value,
            terminal_cost_vjp=final_value_vjp,
        )
        J = Objective(seq, x0=[1.0], p=[0.5], wrt="p").fun([0.5])
        errors.append(abs(J - sol_decay(1.0, 0.5, 2.0)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-8


def test_steps_land_on_the_output_times():
    obj = vdp_objective(first_step=1.0)  # too large: the controller rejects it
    rec = obj.trajectory(obj.z0).extra["steps"]

    np.testing.assert_array_equal(rec.ts[rec.starts[:-1]], T_OUT[:-1])
    ends = rec.ts[rec.starts[1:] - 1] + rec.hs[rec.starts[1:] - 1]
    np.testing.assert_allclose(ends, T_OUT[1:], rtol=1e-14)
    assert rec.n_rejected > 0
    assert np.all(np.diff(rec.starts) >= 1)


# ---- the exact discrete adjoint with the steps frozen ----


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_gradient_matches_complex_step_through_the_frozen_steps(pair):
    obj = vdp_objective(pair)

    _, reference, adjoint = complex_step_gradient(obj, obj.z0)

    assert relative_error(adjoint, reference) < COMPLEX_STEP_RTOL


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_frozen_sequence_passes_every_gradient_check(pair):
    obj = vdp_objective(pair)
    frozen = obj.seq.freeze(X0, U, P)
    frozen_obj = Objective(frozen, X0, U, P, wrt=("x0", "theta", "p"))

    report = check_gradients(frozen_obj)

    assert report.passed, str(report)
    assert np.array_equal(frozen_obj.grad(frozen_obj.z0), obj.grad(obj.z0))
    assert frozen_obj.fun(frozen_obj.z0) == obj.fun(obj.z0)


def test_tangent_and_adjoint_are_transposes():
    obj = vdp_objective()
    assert dot_product_test(obj, obj.z0).relative_error < 1e-12


def test_gradient_is_exact_for_decay():
    seq = AdaptiveODESequence(
        DECAY,
        t_out=[0.0, 2.0],
        rtol=1e-11,
        atol=1e-13,
        terminal_cost=final_value,
        terminal_cost_vjp=final_value_vjp,
    )
    obj = Objective(seq, x0=[1.3], p=[0.5], wrt=("x0", "p"))

    _, g = obj.value_and_grad(obj.z0)

    np.testing.assert_allclose(g, grad_decay(1.3, 0.5, 2.0), rtol=1e-9)


def test_gradient_approaches_the_continuous_gradient():
    reference = continuous_adjoint_gradient(
        VDP,
        X0,
        P,
        t1=T_END,
        u=U,
        observations=observations(),
        method="DOP853",
        rtol=1e-13,
        atol=1e-13,
    ).gradient(("x0", "theta", "p"))

    errors = []
    for rtol in (1e-4, 1e-7, 1e-10):
        obj = vdp_objective(rtol=rtol, atol=rtol * 1e-2)
        errors.append(relative_error(obj.grad(obj.z0), reference))

    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-7


# ---- options and errors ----


def test_checkpointing_is_refused_with_the_way_out():
    obj = vdp_objective()
    with pytest.raises(NotImplementedError, match="checkpoint=None"):
        obj.value_and_grad(obj.z0, checkpoint=Checkpointing(n_snapshots=3))


def test_too_many_steps_is_a_sweep_error():
    obj = vdp_objective(rtol=1e-10, max_steps=20)
    with pytest.raises(SweepError, match="max_steps"):
        obj.fun(obj.z0)


@pytest.mark.parametrize("t_out", [[0.0], [0.0, 1.0, 1.0], [1.0, 0.5]])
def test_output_times_must_increase(t_out):
    with pytest.raises(ValueError, match="strictly increasing"):
        AdaptiveODESequence(DECAY, t_out=t_out)


def test_unknown_pair_is_refused():
    with pytest.raises(ValueError, match="`pair` must be one of"):
        AdaptiveODESequence(DECAY, t_out=[0.0, 1.0], pair="rk45")


def test_tiny_rtol_is_lifted_with_a_warning():
    with pytest.warns(UserWarning, match="rounding"):
        seq = AdaptiveODESequence(DECAY, t_out=[0.0, 1.0], rtol=1e-18)
    assert seq.rtol > 1e-15
