"""The Lotka–Volterra fit to the Hudson's Bay pelts (issue 4)."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

from adjoint import relative_error
from problems import lotka_volterra as lv

# The adjoint fit (RK4, 20 steps a year) against SciPy alone (DOP853 at 1e-12):
# the RK4 discretisation error at this step is far below this.
INDEPENDENT_RTOL = 1e-3
# Least-squares rates against the Stan case study's posterior means (a
# Bayesian fit with priors): close, not equal.
STAN_RTOL = 0.06


def _scipy_fit(t, y):
    """Same log-scale misfit, solved with solve_ivp and least_squares only."""

    def f(t, x, p):
        return [p[0] * x[0] - p[1] * x[0] * x[1], p[3] * x[0] * x[1] - p[2] * x[1]]

    def residuals(z):
        p, x0 = np.exp(z[:4]), np.exp(z[4:])
        sol = solve_ivp(
            f,
            (t[0], t[-1]),
            x0,
            t_eval=t,
            args=(p,),
            method="DOP853",
            rtol=1e-12,
            atol=1e-12,
        )
        return (np.log(sol.y.T) - np.log(y)).ravel()

    z0 = np.log([*lv.INITIAL_RATES, *y[0]])
    fit = least_squares(residuals, z0, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    return np.exp(fit.x)


@pytest.fixture(scope="module")
def fitted():
    problem = lv.build()
    return problem, lv.solve(problem)


def test_fit_matches_independent_scipy_fit(fitted):
    problem, result = fitted
    t = problem.t_obs - problem.t_obs[0]
    reference = _scipy_fit(t, problem.y_obs)
    values = dict(zip(result.names, result.x))
    ours = np.array(
        [values[n] for n in lv.PARAMETER_NAMES]
        + [values["hare(t0)"], values["lynx(t0)"]]
    )
    assert result.success
    assert relative_error(ours, reference) < INDEPENDENT_RTOL
    np.testing.assert_allclose(ours, reference, rtol=INDEPENDENT_RTOL)


def test_rates_close_to_stan_case_study(fitted):
    _, result = fitted
    values = dict(zip(result.names, result.x))
    for name, ref in lv.REFERENCE["stan_case_study"].items():
        assert abs(values[name] - ref) / ref < STAN_RTOL, name


def test_standard_errors_and_correlation(fitted):
    problem, result = fitted
    assert np.all(np.isfinite(result.stderr)) and np.all(result.stderr > 0)
    # Standard errors are a modest fraction of each value for this data set.
    assert np.all(result.stderr / result.x < 0.5)
    corr = result.corr
    np.testing.assert_allclose(np.diag(corr), 1.0, atol=1e-12)
    np.testing.assert_allclose(corr, corr.T, atol=1e-12)
    assert np.all(np.abs(corr) <= 1 + 1e-9)


def test_gauss_newton_jacobian_matches_finite_differences(fitted):
    problem, result = fitted
    est = problem.estimation
    jac = est.residual_jacobian(result.z)
    h = 1e-6
    cols = []
    for i in range(result.z.size):
        dz = np.zeros(result.z.size)
        dz[i] = h
        rp = est.residuals(result.z + dz)[~np.isnan(est.y_obs)]
        rm = est.residuals(result.z - dz)[~np.isnan(est.y_obs)]
        cols.append((rp - rm) / (2 * h))
    assert relative_error(jac, np.column_stack(cols)) < 1e-6


def test_check_report_passes():
    report = lv.check(lv.build())
    assert report.passed, str(report)
    assert report.value("complex step vs adjoint (rel.)") < 1e-10
    orders = report.value("Taylor remainder orders")
    assert np.all((orders > 1.9) & (orders < 2.1))


def test_figure_has_data_fit_and_phase_panels(fitted):
    problem, result = fitted
    fig = lv.plot(problem, result)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 4  # two fitted curves, two data series
    assert fig.axes[1].get_title() == "phase plane"


def test_json_has_required_fields(fitted):
    _, result = fitted
    out = result.to_json()
    for key in (
        "values",
        "errors",
        "cost",
        "iterations",
        "gradient_evaluations",
        "wall_time_s",
    ):
        assert key in out
    assert set(out["values"]) == set(result.names)
