"""The finite-horizon discrete LQR problem against the Riccati recursion (issue 6)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

import adjoint
from problems import lqr

# Issue 6: the adjoint optimum equals the Riccati optimum to 1e-8.
RICCATI_TOL = 1e-8


def sol_riccati(A, B, Q, R, Qf, x0, N):
    """Optimal controls and cost by the backward Riccati recursion, from scratch."""
    P = Qf.copy()
    gains = [None] * N
    for k in range(N - 1, -1, -1):
        S = R + B.T @ P @ B
        K = scipy.linalg.solve(S, B.T @ P @ A, assume_a="pos")
        P = Q + A.T @ P @ A - A.T @ P @ B @ K
        P = 0.5 * (P + P.T)
        gains[k] = K
    x, u, J = x0.copy(), [], 0.0
    for k in range(N):
        uk = -gains[k] @ x
        J += 0.5 * (x @ Q @ x + uk @ R @ uk)
        x = A @ x + B @ uk
        u.append(uk)
    J += 0.5 * x @ Qf @ x
    return np.array(u), J, 0.5 * x0 @ P @ x0


def _model():
    # The carts model rebuilt from the module's constants, so the oracle does
    # not reuse the module's discretisation either.
    k, c, m1, m2 = lqr.SPRING, lqr.DAMPING, lqr.MASS_1, lqr.MASS_2
    Ac = np.array(
        [
            [0, 1, 0, 0],
            [-k / m1, -c / m1, k / m1, c / m1],
            [0, 0, 0, 1],
            [k / m2, c / m2, -k / m2, -c / m2],
        ],
        dtype=float,
    )
    Bc = np.array([[0.0], [1.0 / m1], [0.0], [0.0]])
    # Zero-order hold: A = e^{Ac dt}, B = ∫_0^dt e^{Ac s} ds Bc
    A = scipy.linalg.expm(Ac * lqr.DT)
    B = np.linalg.solve(Ac, (A - np.eye(4)) @ Bc) if np.linalg.cond(Ac) < 1e12 else None
    if B is None:  # Ac is singular (free translation): integrate the series
        from scipy.integrate import quad_vec

        B = quad_vec(
            lambda s: scipy.linalg.expm(Ac * s) @ Bc,
            0.0,
            lqr.DT,
            epsabs=1e-15,
            epsrel=1e-14,
        )[0]
    return A, B


@pytest.fixture(scope="module")
def solved():
    problem = lqr.build()
    return problem, lqr.solve(problem)


def test_model_matches_independent_discretisation():
    A, B = _model()
    A_mod, B_mod = lqr.carts_model(lqr.DT)
    np.testing.assert_allclose(A_mod, A, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(B_mod, B, rtol=1e-10, atol=1e-14)


def test_cost_and_controls_equal_riccati(solved):
    problem, result = solved
    A, B = _model()
    u_ref, J_ref, J_value = sol_riccati(A, B, lqr.Q, lqr.R, lqr.QF, lqr.X0, problem.N)
    assert J_ref == pytest.approx(J_value, rel=1e-12)  # the oracle agrees with itself
    assert result.success, result.message
    assert abs(result.fun - J_ref) <= RICCATI_TOL * abs(J_ref)
    u = problem.controls(result.x)
    assert np.max(np.abs(u - u_ref)) <= RICCATI_TOL * np.max(np.abs(u_ref))


def test_lbfgs_reaches_the_same_optimum():
    problem = lqr.build(N=20)
    A, B = _model()
    u_ref, J_ref, _ = sol_riccati(A, B, lqr.Q, lqr.R, lqr.QF, lqr.X0, 20)
    result = lqr.solve(problem, method="L-BFGS-B")
    assert result.fun == pytest.approx(J_ref, rel=1e-10)
    np.testing.assert_allclose(problem.controls(result.x), u_ref, atol=1e-6)


def test_table_and_json(solved):
    problem, result = solved
    names = [row[0] for row in result.table]
    assert "cost J" in names and "cost J (Riccati)" in names
    data = json.loads(json.dumps(result.to_json()))
    assert data["fun"] == pytest.approx(result.fun)


def test_gradient_checks_pass():
    report = lqr.check(lqr.build(N=10))
    assert report.passed, str(report)
    assert "complex step" in str(report)


def test_plot_has_states_and_control(solved):
    problem, result = solved
    figure = lqr.plot(problem, result)
    assert len(figure.get_axes()) == problem.n + problem.m


def test_progress_is_called_per_iteration():
    problem = lqr.build(N=10)
    calls = []
    result = lqr.solve(problem, progress=lambda i, cost: calls.append((i, cost)))
    assert len(calls) == result.nit > 0


def test_zero_steps_raises():
    with pytest.raises(ValueError, match="`N` must be at least 1, got 0"):
        lqr.build(N=0)


def test_data_file_is_refused():
    with pytest.raises(ValueError, match="no data file"):
        lqr.build(data="carts.csv")


def test_bad_matrix_shape_raises():
    A, B = _model()
    with pytest.raises(ValueError, match="`R` has shape"):
        lqr.linear_quadratic_sequence(A, B, lqr.Q, np.eye(2), lqr.QF, 5)


def test_registered_and_solvable_from_the_command_line(tmp_path):
    # Through the real entry point in a subprocess: inside pytest the name
    # `problems` may be this test package rather than the problem registry.
    env = dict(os.environ, MPLBACKEND="Agg")
    root = str(Path(adjoint.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "adjoint.cli", "solve", "lqr", "--out", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cost J (Riccati)" in proc.stdout
    data = json.loads((tmp_path / "lqr.json").read_text())
    assert data["success"] is True
    assert (tmp_path / "lqr.png").stat().st_size > 10_000


def test_problem_surface_is_complete():
    for name in (
        "DESCRIPTION",
        "REFERENCE",
        "build",
        "initial_guess",
        "solve",
        "plot",
        "check",
    ):
        assert hasattr(lqr, name), name
    assert "\n" not in lqr.DESCRIPTION
    assert isinstance(adjoint.ControlProblem, type)
