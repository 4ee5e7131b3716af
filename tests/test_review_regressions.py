"""Regression tests for defects found in review (first session)."""

import numpy as np
import pytest

from adjoint import (
    Objective,
    ODESystem,
    ParameterEstimation,
    Sequence,
    SweepError,
    check_gradients,
)


def _step_divides(k, x, theta, p, consts, out):
    out[0] = x[0] + 0.1 * p[0] / (x[0] - 1.0)
    return 0


def _step_divides_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    d = x[0] - 1.0
    x_bar[0] += lam[0] * (1.0 - 0.1 * p[0] / (d * d))
    p_bar[0] += lam[0] * 0.1 / d
    return 0


def test_division_by_zero_in_a_kernel_is_reported_not_ignored():
    # Numba's default error model raises ZeroDivisionError, which a cfunc can
    # only print and ignore, leaving garbage in the state.
    seq = Sequence(_step_divides, _step_divides_vjp, n=1, N=3, n_p=1, probe=False)
    obj = Objective(seq, x0=[1.0], p=[1.0])
    with pytest.raises(SweepError, match="non-finite at step 0"):
        obj.fun(obj.z0)


def _step_overflows(k, x, theta, p, consts, out):
    # x_1 = exp(800) = inf, then 1/(1 + inf) = 0: finite again a step later.
    out[0] = np.exp(x[1]) if k == 0 else 1.0 / (1.0 + x[0])
    out[1] = p[0]
    return 0


def _step_overflows_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    return 0


def test_a_transient_overflow_is_caught_by_the_forward_sweep():
    seq = Sequence(_step_overflows, _step_overflows_vjp, n=2, N=5, n_p=1)
    obj = Objective(seq, x0=[0.0, 800.0], p=[1.0])
    with pytest.raises(SweepError, match="non-finite at step 0"):
        obj.fun(obj.z0)


def _decay(t, x, p, u, out):
    out[0] = -p[0] * x[0]
    return 0


def test_objective_cache_is_not_aliased_with_the_callers_array():
    from adjoint import ODESequence

    seq = ODESequence(ODESystem.from_rhs(_decay, n=1, n_p=1), dt=0.1, N=10)
    obj = Objective(seq, x0=[1.0], p=[0.5], wrt="p")
    z = np.array([0.5])
    first = obj.jacobian(z).copy()
    z[0] = 3.0  # the caller reuses its array
    obj.fun(np.array([3.0]) * 0 + 0.5)  # same values as before
    np.testing.assert_array_equal(obj.jacobian(np.array([0.5])), first)


def test_fit_noise_at_an_exact_fit_gives_a_clear_error_and_no_stale_weights():
    system = ODESystem.from_rhs(_decay, n=1, n_p=1)
    t = np.linspace(0.0, 2.0, 5)
    # Data from the discrete model itself, so the residuals vanish exactly.
    probe = ParameterEstimation(system, t, np.ones(5), x0=[1.0], p=[0.5])
    _, xs = probe.simulate(probe.z_from_values([1.0], [0.5]))
    exact = xs[probe.obs_steps, 0]
    est = ParameterEstimation(system, t, exact, x0=[1.0], p=[0.5], fit_noise=True)
    data_before = est.seq.data.copy()
    with pytest.raises(ValueError, match="cannot be estimated"):
        est.value_and_grad(est.z_from_values([1.0], [0.5]))
    np.testing.assert_array_equal(est.seq.data, data_before)
    J, _ = est.value_and_grad(est.z_from_values([1.0], [0.6]))
    assert np.isfinite(J)
    np.testing.assert_array_equal(est.seq.data, data_before)


def test_derivative_free_fit_runs_no_adjoint_sweeps():
    system = ODESystem.from_rhs(_decay, n=1, n_p=1)
    t = np.linspace(0.0, 2.0, 5)
    est = ParameterEstimation(system, t, np.exp(-0.5 * t) * 1.01, x0=[1.0], p=[0.3])
    before = dict(est.objective.counts)
    est.fit(method="Nelder-Mead")
    assert est.objective.counts["adjoint"] == before["adjoint"]


def test_check_gradients_refuses_an_objective_without_unknowns():
    seq = Sequence(_step_overflows, _step_overflows_vjp, n=2, N=2, n_p=0)
    obj = Objective(seq, x0=[0.0, 1.0], wrt="p")
    with pytest.raises(ValueError, match="no unknowns"):
        check_gradients(obj)


def test_data_without_a_cost_is_refused():
    from adjoint import ODESequence

    system = ODESystem.from_rhs(_decay, n=1, n_p=1)
    with pytest.raises(ValueError, match="no cost reads it"):
        ODESequence(system, dt=0.1, N=4, data=np.ones((5, 2)))


def _scaled_integrator(t, x, p, u, out):
    out[0] = p[0] * u[0]  # dx/ds = T u: time scaled to s in [0, 1]
    return 0


def test_free_final_time_needs_a_unit_grid():
    import adjoint

    system = ODESystem.from_rhs(_scaled_integrator, n=1, n_p=1, n_u=1)
    seq = adjoint.ODESequence(system, dt=0.1, N=40)  # spans s in [0, 4]
    with pytest.raises(ValueError, match="dt·N = 1"):
        adjoint.ControlProblem(seq, [0.0], p=[2.0], free_p=(0,), final_time=0)
