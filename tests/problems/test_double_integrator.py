"""Minimum-energy double integrator: J = 12 in the continuum (issue 6)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import linregress

import adjoint
from problems import double_integrator as di

# Issue 6: within 1e-3 relative of the continuous optimum at 200 steps.
CONTINUUM_RTOL = 1e-3
# A terminal constraint must be met to this at the solution.
VIOLATION_TOL = 1e-6
# The discrete optimum is known in closed form (see sol_discrete); SLSQP on
# this equality-constrained quadratic program reaches it to rounding.
DISCRETE_RTOL = 1e-9


def sol_discrete(N):
    """Optimum over piecewise-constant u on N steps, by hand.

    The optimal u_k lies in the span of the two constraint rows, u_k = a + b s_k
    with s_k = (k + 1/2)/N; v(1) = 0 gives a = -b/2, x(1) = 1 with
    h Σ s_k² = 1/3 - h²/12 gives b = -12 / (1 - h²), and J = 12 / (1 - h²).
    """
    h = 1.0 / N
    s = (np.arange(N) + 0.5) * h
    u = (6.0 - 12.0 * s) / (1.0 - h * h)
    return u, 12.0 / (1.0 - h * h)


@pytest.fixture(scope="module")
def solved():
    problem = di.build()
    return problem, di.solve(problem)


def test_cost_within_1e3_of_continuum_at_200_steps(solved):
    problem, result = solved
    assert problem.N == 200
    assert result.success, result.message
    assert abs(result.fun - 12.0) / 12.0 < CONTINUUM_RTOL


def test_terminal_constraints_hold(solved):
    problem, result = solved
    assert result.max_violation < VIOLATION_TOL
    np.testing.assert_allclose(
        problem.states(result.x)[-1], [1.0, 0.0], atol=VIOLATION_TOL
    )


def test_matches_closed_form_discrete_optimum(solved):
    problem, result = solved
    u_ref, J_ref = sol_discrete(problem.N)
    assert result.fun == pytest.approx(J_ref, rel=DISCRETE_RTOL)
    np.testing.assert_allclose(problem.controls(result.x)[:, 0], u_ref, atol=1e-7)


def test_error_falls_at_second_order_as_grid_refines():
    Ns = [10, 20, 40, 80]
    errors = []
    for N in Ns:
        result = di.solve(di.build(N=N))
        errors.append(abs(result.fun - 12.0))
    assert all(e1 < e0 for e0, e1 in zip(errors, errors[1:]))
    slope = linregress(np.log(Ns), np.log(errors)).slope
    assert slope == pytest.approx(-2.0, abs=0.1)


def test_control_approaches_six_minus_twelve_t(solved):
    problem, result = solved
    t_mid = problem.control_times(result.x) + 0.5 / problem.N
    u = problem.controls(result.x)[:, 0]
    assert np.max(np.abs(u - di.optimal_control(t_mid))) < 1e-3


@pytest.mark.parametrize(
    "method, handling", [("trust-constr", None), ("L-BFGS-B", "augmented-lagrangian")]
)
@pytest.mark.filterwarnings("ignore:delta_grad == 0.0")
def test_other_constrained_methods_agree(method, handling):
    problem = di.build(N=20)
    _, J_ref = sol_discrete(20)
    result = adjoint.optimise(
        problem, di.initial_guess(problem), method=method, constraint_handling=handling
    )
    assert result.max_violation < VIOLATION_TOL
    assert result.fun == pytest.approx(J_ref, rel=1e-6)


def test_constraint_jacobian_matches_complex_step():
    problem = di.build(N=30)
    w = di.initial_guess(problem) + np.linspace(-1, 1, problem.size)
    for mode in ("forward", "reverse"):
        assert problem.constraints.check_jacobian(w, mode=mode) < 1e-12


def test_check_report_passes():
    report = di.check(di.build(N=20))
    assert report.passed, str(report)
    assert "constraint Jac. reverse" in str(report)


def test_plot_has_reference_curve(solved):
    problem, result = solved
    figure = di.plot(problem, result)
    axes = figure.get_axes()
    assert len(axes) == 3
    assert any(line.get_label() == "6 - 12 t" for line in axes[2].get_lines())


def test_zero_steps_and_data_file_are_refused():
    with pytest.raises(ValueError, match="`N` must be at least 1, got 0"):
        di.build(N=0)
    with pytest.raises(ValueError, match="no data file"):
        di.build(data="moves.csv")


def test_solve_from_the_command_line(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    root = str(Path(adjoint.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "adjoint.cli",
            "solve",
            "double-integrator",
            "--out",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "double-integrator.json").read_text())
    assert abs(data["cost"] - 12.0) < 12e-3
    assert (tmp_path / "double-integrator.png").stat().st_size > 10_000
