"""Goddard rocket (COPS problem 10) against the published optimum (issue 6)."""

import numpy as np
import pytest

import adjoint
from problems import goddard

# Issue 6: within 2e-3 of the published final altitude 1.0128.
PUBLISHED_TOL = 2e-3
# What this transcription reaches at N = 100 (RK4, piecewise thrust, SLSQP).
MEASURED_TOL = 1e-4
# A terminal constraint must be met to this at the solution.
VIOLATION_TOL = 1e-6


@pytest.fixture(scope="module")
def solved():
    problem = goddard.build()
    return problem, goddard.solve(problem)


@pytest.mark.slow
def test_altitude_within_2e3_of_published(solved):
    problem, result = solved
    assert problem.N == 100
    assert result.success, result.message
    altitude = -result.fun
    assert abs(altitude - goddard.REFERENCE["h(T)"]) < PUBLISHED_TOL
    assert abs(altitude - goddard.REFERENCE["h(T) COPS 3.0 table"]) < MEASURED_TOL


@pytest.mark.slow
def test_final_mass_constraint_and_bounds_hold(solved):
    problem, result = solved
    xs = problem.states(result.x)
    assert result.max_violation < VIOLATION_TOL
    assert abs(xs[-1, 2] - goddard.FINAL_MASS) < VIOLATION_TOL
    u = problem.controls(result.x)
    assert u.min() >= 0.0 and u.max() <= goddard.THRUST_MAX
    assert goddard.T_LOWER <= problem.horizon(result.x) <= goddard.T_UPPER
    # the path bounds of COPS (h ≥ 1, v ≥ 0) hold without being imposed
    assert xs[:, 0].min() >= 1.0 and xs[:-1, 1].min() >= 0.0


@pytest.mark.slow
def test_final_time_near_published(solved):
    problem, result = solved
    assert problem.horizon(result.x) == pytest.approx(0.1989, abs=2e-3)


def test_coarse_grid_already_close():
    problem = goddard.build(N=30)
    result = goddard.solve(problem)
    assert result.success, result.message
    assert abs(-result.fun - goddard.REFERENCE["h(T)"]) < PUBLISHED_TOL
    assert result.max_violation < VIOLATION_TOL


def test_initial_guess_is_feasible():
    problem = goddard.build(N=40)
    w0 = goddard.initial_guess(problem)
    assert problem.constraints.violation(w0) < 1e-12
    assert np.all(w0 >= problem.lower()) and np.all(w0 <= problem.upper())


def test_check_report_passes():
    report = goddard.check(goddard.build(N=20))
    assert report.passed, str(report)
    assert "constraint Jac. forward" in str(report)


def test_free_final_time_scales_the_reported_times():
    problem = goddard.build(N=10)
    w = goddard.initial_guess(problem)
    w[-1] = 0.25
    np.testing.assert_allclose(problem.times(w), np.linspace(0, 0.25, 11))


def test_plot_has_states_and_thrust():
    problem = goddard.build(N=20)
    result = adjoint.ControlResult(
        x=goddard.initial_guess(problem),
        fun=problem.fun(goddard.initial_guess(problem)),
    )
    assert len(goddard.plot(problem, result).get_axes()) == 4


def test_zero_steps_and_data_file_are_refused():
    with pytest.raises(ValueError, match="`N` must be at least 1, got 0"):
        goddard.build(N=0)
    with pytest.raises(ValueError, match="no data file"):
        goddard.build(data="flight.csv")
