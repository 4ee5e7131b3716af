"""The continuous adjoint (solve_ivp) as an independent route to ODE gradients.

Oracles: closed-form gradients of a linear decay; the discrete adjoint,
which must approach the continuous gradient at the order of its scheme as
the step shrinks (slope of a log-log fit, ``scipy.stats.linregress``); and,
for a stiff Van der Pol oscillator (μ = 1000), the discrete gradient of an
implicit scheme against a stiff SciPy solver given the Jacobian.
"""

from __future__ import annotations

import numpy as np
import pytest

import ode_systems as systems
from adjoint import (
    Objective,
    ODESequence,
    compare_adjoints,
    continuous_adjoint_gradient,
    gradient_convergence,
    observation_cost,
    relative_error,
)
from adjoint.plotting import plot_convergence

# Fixed-step schemes in their asymptotic range keep the fitted order within
# ±0.2 of the classical one (STYLE.md section 10).
ORDER_TOL = 0.2

LV_X0 = np.array([1.0, 0.5])
LV_P = np.array([1.0, 0.8, 0.6, 0.9])
LV_T = 3.0
LV_OBS = np.array([[1.0, 0.5], [0.8, 0.7], [1.1, 0.6]])


@pytest.fixture(scope="module")
def lv():
    return systems.lotka_volterra("kernels")


def lv_sequence(system, scheme, N):
    """Observations at t = 1, 2, 3 whatever the step."""
    obs = observation_cost([N // 3, 2 * N // 3, N], LV_OBS, N=N)
    return ODESequence(system, scheme=scheme, dt=LV_T / N, N=N, observations=obs)


# ---- closed-form oracle ----


@pytest.mark.parametrize("method", ["RK45", "DOP853", "Radau", "BDF"])
def test_decay_gradients_match_closed_form(method):
    a, x0, T = 0.7, 1.3, 2.0
    decay = np.exp(-2 * a * T)
    result = continuous_adjoint_gradient(
        systems.decay(),
        [x0],
        [a],
        t1=T,
        method=method,
        rtol=1e-10,
        atol=1e-12,
        terminal_cost=lambda x, p: (0.5 * x[0] ** 2, x, np.zeros(1)),
        running_cost_density=lambda t, x, p, u: (0.5 * x[0] ** 2, x, np.zeros(1)),
    )
    # J = ½ x(T)² + ∫ ½ x² dt with x = x0 e^{-a t}
    J = 0.5 * x0**2 * decay + x0**2 * (1 - decay) / (4 * a)
    dJ_da = -T * x0**2 * decay + x0**2 * (2 * a * T * decay - (1 - decay)) / (4 * a**2)
    dJ_dx0 = x0 * decay + x0 * (1 - decay) / (2 * a)
    tol = 1e-6 if method == "BDF" else 1e-8
    assert result.J == pytest.approx(J, rel=tol)
    assert result.grad_p[0] == pytest.approx(dJ_da, rel=tol)
    assert result.grad_x0[0] == pytest.approx(dJ_dx0, rel=tol)


# ---- against the discrete adjoint ----


def test_continuous_matches_fine_rk4_with_controls(lv):
    N = 90
    seq = lv_sequence(lv, "rk4", N)
    us = 0.1 + 0.05 * np.sin(np.arange(N))[:, None]
    cmp = compare_adjoints(
        seq,
        LV_X0,
        LV_P,
        us,
        wrt=("x0", "theta", "p"),
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
    )
    assert set(cmp.blocks) == {"x0", "theta", "p"}
    assert max(cmp.blocks.values()) < 1e-5
    assert cmp.relative_difference == pytest.approx(
        relative_error(cmp.discrete, cmp.continuous)
    )
    assert cmp.J_continuous == pytest.approx(cmp.J_discrete, rel=1e-6)
    assert cmp.result.n_segments == N  # one per control interval


def running_cost_x1_u(k, x, theta, p, consts, data):
    return 0.5 * (x[0] * x[0] + theta[0] * theta[0])


def running_cost_x1_u_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    x_bar[0] += g_bar * x[0]
    theta_bar[0] += g_bar * theta[0]
    return 0


def terminal_cost_x2(x, p, consts, data):
    return x[1] * x[1]


def terminal_cost_x2_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    x_bar[1] += 2.0 * phi_bar * x[1]
    return 0


def test_sequence_cost_kernels_become_point_costs(lv):
    N = 60
    seq = ODESequence(
        lv,
        scheme="rk4",
        dt=LV_T / N,
        N=N,
        running_cost=running_cost_x1_u,
        running_cost_vjp=running_cost_x1_u_vjp,
        terminal_cost=terminal_cost_x2,
        terminal_cost_vjp=terminal_cost_x2_vjp,
    )
    us = 0.1 * np.ones((N, 1))
    cmp = compare_adjoints(
        seq,
        LV_X0,
        LV_P,
        us,
        wrt=("x0", "theta", "p"),
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
    )
    assert cmp.relative_difference < 1e-5


@pytest.mark.parametrize(
    "scheme",
    ["euler", "heun", "rk4", "backward_euler", "implicit_midpoint", "crank_nicolson"],
)
def test_discrete_gradient_converges_at_the_scheme_order(lv, scheme):
    Ns = [24, 48, 96, 192] if scheme != "rk4" else [12, 24, 48, 96]
    result = gradient_convergence(
        lambda N: lv_sequence(lv, scheme, N), LV_X0, LV_P, Ns, wrt=("x0", "p")
    )
    assert abs(result.order - result.expected_order) < ORDER_TOL, result.errors
    assert np.all(np.diff(result.errors) < 0)


# ---- stiff: Van der Pol, μ = 1000 ----


@pytest.mark.parametrize("method", ["Radau", "BDF"])
def test_stiff_implicit_gradient_matches_stiff_solver(method):
    vdp = systems.van_der_pol("kernels")
    T, mu = 400.0, 1000.0

    def make(N):
        obs = observation_cost([N // 2, N], [[1.8], [1.5]], N=N)
        return ODESequence(
            vdp, scheme="backward_euler", dt=T / N, N=N, observations=obs
        )

    result = gradient_convergence(
        make,
        [2.0, 0.0],
        [mu],
        [200, 400, 800],
        wrt="p",
        method=method,
        rtol=1e-10,
        atol=1e-12,
    )
    assert result.errors[-1] < 1e-3
    assert abs(result.order - 1.0) < ORDER_TOL


# ---- errors and plotting ----


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"t1": 0.0}, ValueError, "`t1` must be greater"),
        ({"method": "Euler"}, ValueError, "`method` must be one of"),
        ({"u": None}, ValueError, "pass `u`"),
        ({"u": np.zeros((3, 2))}, ValueError, r"must have shape \(N, 1\)"),
        ({"observations": "data"}, TypeError, "observation_cost"),
    ],
)
def test_bad_arguments_raise(lv, kwargs, error, match):
    args = {"t1": 1.0, "u": np.zeros((3, 1)), **kwargs}
    with pytest.raises(error, match=match):
        continuous_adjoint_gradient(lv, LV_X0, LV_P, **args)


def test_compare_needs_an_ode_sequence(lv):
    with pytest.raises(TypeError, match="ODESequence"):
        compare_adjoints(lv, LV_X0, LV_P)


def test_plot_convergence_draws_one_line_per_scheme_and_reference(lv):
    results = [
        gradient_convergence(
            lambda N, s=s: lv_sequence(lv, s, N),
            LV_X0,
            LV_P,
            [24, 48],
            reference=np.ones(4),
        )
        for s in ("euler", "heun")
    ]
    fig = plot_convergence(
        [r.dts for r in results],
        [r.errors for r in results],
        ["euler", "heun"],
        orders=[1, 2],
    )
    ax = fig.axes[0]
    assert len(ax.lines) == 4
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_objective_gradient_is_what_compare_reports(lv):
    seq = lv_sequence(lv, "heun", 30)
    cmp = compare_adjoints(seq, LV_X0, LV_P, wrt="p")
    obj = Objective(seq, x0=LV_X0, p=LV_P, wrt="p")
    np.testing.assert_array_equal(cmp.discrete, obj.grad(obj.z0))
