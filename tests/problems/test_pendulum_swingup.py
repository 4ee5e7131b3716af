"""Pendulum swing-up with bounded torque: upright at rest, bound respected."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from problems import pendulum_swingup as ps

# A terminal constraint must be met to this at the solution.
VIOLATION_TOL = 1e-6
# Replaying the controls with DOP853: RK4's error at 100 steps of 0.1.
REPLAY_TOL = 1e-4


def rhs_pendulum(t, x, u):
    return [x[1], u - ps.DAMPING * x[1] - np.sin(x[0])]


@pytest.fixture(scope="module")
def solved():
    problem = ps.build()
    return problem, ps.solve(problem)


def test_ends_upright_at_rest(solved):
    problem, result = solved
    assert result.success, result.message
    assert result.max_violation < VIOLATION_TOL
    np.testing.assert_allclose(
        problem.states(result.x)[-1], [np.pi, 0.0], atol=VIOLATION_TOL
    )


def test_torque_bound_holds_and_is_used(solved):
    problem, result = solved
    u = problem.controls(result.x)[:, 0]
    assert np.abs(u).max() <= ps.U_MAX
    assert np.abs(u).max() == pytest.approx(ps.U_MAX)  # too weak to lift directly


def test_replay_with_solve_ivp_ends_upright(solved):
    problem, result = solved
    t = problem.times(result.x)
    x = np.array(ps.X0)
    for k, uk in enumerate(problem.thetas(result.x)[:, 0]):
        x = solve_ivp(
            rhs_pendulum,
            (t[k], t[k + 1]),
            x,
            args=(uk,),
            method="DOP853",
            rtol=1e-12,
            atol=1e-12,
        ).y[:, -1]
    np.testing.assert_allclose(x, [np.pi, 0.0], atol=REPLAY_TOL)


def test_cost_is_the_recorded_local_optimum(solved):
    _, result = solved
    key = "J (this transcription, N = 100)"
    assert result.fun == pytest.approx(ps.REFERENCE[key], rel=1e-6)


def test_check_report_passes():
    report = ps.check(ps.build(N=20))
    assert report.passed, str(report)


def test_figure_and_animation_are_written(solved, tmp_path):
    pytest.importorskip("PIL")
    problem, result = solved
    figure = ps.plot(problem, result)
    figure.savefig(tmp_path / "swing.png")
    assert (tmp_path / "swing.png").stat().st_size > 10_000
    path = ps.animate(problem, result, tmp_path / "swing.gif", max_frames=8)
    assert path.stat().st_size > 1_000


def test_script_entry_point_writes_both_files(tmp_path, capsys):
    pytest.importorskip("PIL")
    assert ps.main(str(tmp_path), max_frames=8) == 0
    assert (tmp_path / "pendulum_swingup.png").exists()
    assert (tmp_path / "pendulum_swingup.gif").exists()
    assert "wrote" in capsys.readouterr().out


def test_zero_steps_and_data_file_are_refused():
    with pytest.raises(ValueError, match="`N` must be at least 1, got 0"):
        ps.build(N=0)
    with pytest.raises(ValueError, match="no data file"):
        ps.build(data="swing.csv")
