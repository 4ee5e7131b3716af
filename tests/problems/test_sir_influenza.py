"""The SIR fit to the 1978 boarding-school outbreak (issue 4)."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

from problems import sir_influenza as sir

INDEPENDENT_RTOL = 1e-3  # adjoint fit against a SciPy-only fit of the same misfit


def _scipy_fit(day, in_bed, fit_i0):
    N = sir.POPULATION

    def f(t, x, p):
        infection = p[0] * x[0] * x[1] / N
        return [-infection, infection - p[1] * x[1], p[1] * x[1]]

    def residuals(z):
        p = np.exp(z[:2])
        i0 = np.exp(z[2]) if fit_i0 else sir.INITIAL_INFECTED
        x0 = [N - sir.INITIAL_INFECTED, i0, 0.0]
        sol = solve_ivp(
            f,
            (day[0] - 1, day[-1]),
            x0,
            t_eval=day,
            args=(p,),
            method="DOP853",
            rtol=1e-12,
            atol=1e-10,
        )
        return sol.y[1] - in_bed

    z0 = np.log([*sir.INITIAL_RATES, 1.0][: 3 if fit_i0 else 2])
    fit = least_squares(residuals, z0, xtol=1e-15, ftol=1e-15, gtol=1e-15)
    return np.exp(fit.x)


@pytest.mark.parametrize("fit_i0", [False, True])
def test_fit_matches_independent_scipy_fit(fit_i0):
    problem = sir.build(fit_initial_infected=fit_i0)
    result = sir.solve(problem)
    ref = _scipy_fit(problem.t_obs, problem.y_obs[:, 0], fit_i0)
    values = {name: v for name, v, _ in result.table}
    np.testing.assert_allclose(values["beta"], ref[0], rtol=INDEPENDENT_RTOL)
    np.testing.assert_allclose(values["gamma"], ref[1], rtol=INDEPENDENT_RTOL)
    np.testing.assert_allclose(values["R0"], ref[0] / ref[1], rtol=INDEPENDENT_RTOL)
    if fit_i0:
        np.testing.assert_allclose(values["I(t0)"], ref[2], rtol=INDEPENDENT_RTOL)


def test_r0_standard_error_by_delta_method():
    problem = sir.build()
    result = sir.solve(problem)
    rows = {name: (v, se) for name, v, se in result.table}
    r0, r0_se = rows["R0"]
    # Independent: propagate the covariance of (β, γ) on the natural scale.
    beta, gamma = result.x
    C = result.cov_z * np.outer(result.x, result.x)  # log → natural scale
    grad = np.array([1 / gamma, -beta / gamma**2])
    np.testing.assert_allclose(r0_se, np.sqrt(grad @ C @ grad), rtol=1e-10)
    assert 0 < r0_se < 0.2 * r0


def test_check_report_passes():
    report = sir.check(sir.build())
    assert report.passed, str(report)


def test_negative_counts_are_refused(tmp_path):
    from adjoint import DataError

    path = tmp_path / "flu.csv"
    path.write_text("day,in_bed\n1,3\n2,-8\n3,26\n")
    with pytest.raises(DataError, match="negative"):
        sir.build(path)
