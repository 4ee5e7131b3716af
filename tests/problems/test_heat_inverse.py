"""The heat-source problem: forward sweep against the modal solution, gradients
under every checkpointing schedule, the fit against the least-squares optimum."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from adjoint import Checkpointing, binomial_forward_steps, relative_error
from problems import heat_inverse

# A short problem for the tests: 40 points, 1350 steps (t ≈ 0.5).
N_POINTS = 40
N_STEPS = 1350
GRADIENT_RTOL = 1e-13  # every schedule runs store-all's arithmetic
MODAL_RTOL = 1e-12  # the modal recursion is the same RK4, summed differently
FIT_RTOL = 1e-6  # L-BFGS-B against the normal equations


@functools.cache
def problem(n_steps=N_STEPS):
    return heat_inverse.build(n_points=N_POINTS, n_steps=n_steps)


def test_forward_sweep_matches_the_modal_solution():
    pb = problem()
    rows = pb.settings["rows"]

    xs = pb.objective.trajectory(pb.p_true).xs

    assert relative_error(xs[np.ix_(rows, pb.sensors)], pb.clean[rows]) < MODAL_RTOL


def test_step_is_at_the_stability_limit():
    dx = 1.0 / (N_POINTS + 1)
    mu_max = 4.0 * heat_inverse.KAPPA / dx**2
    assert problem().dt * mu_max == pytest.approx(
        heat_inverse.CFL * heat_inverse.RK4_LIMIT
    )


def test_gradient_checks_pass():
    report = heat_inverse.check(problem())
    assert report.passed, str(report)


@pytest.mark.parametrize(
    "checkpoint",
    [
        Checkpointing(n_snapshots=2),
        Checkpointing(n_snapshots=30),
        Checkpointing(memory="20 kB"),
        Checkpointing("periodic", n_snapshots=80),
        Checkpointing(n_snapshots=8, storage="disk"),
    ],
    ids=repr,
)
def test_checkpointed_gradient_equals_store_all(checkpoint):
    pb = problem()
    p = np.linspace(-3.0, 3.0, heat_inverse.N_MODES)
    J_ref, g_ref = pb.objective.value_and_grad(p, checkpoint=None)

    J, g = pb.objective.value_and_grad(p, checkpoint=checkpoint)

    assert relative_error(g, g_ref) <= GRADIENT_RTOL
    assert J == pytest.approx(J_ref, rel=GRADIENT_RTOL)


def test_recomputations_are_the_binomial_optimum_on_a_long_run():
    N, s = 30_000, 25
    pb = problem(N)

    pb.objective.value_and_grad(
        np.ones(heat_inverse.N_MODES), checkpoint=Checkpointing(n_snapshots=s)
    )

    stats = pb.objective.last_checkpoint_stats
    assert stats.recomputed_steps == binomial_forward_steps(N, s) + 1 - N
    assert stats.peak_bytes <= (s + 1) * N_POINTS * 8


def test_fit_is_the_least_squares_optimum():
    pb = problem()

    result = heat_inverse.solve(pb)

    reference, cov = heat_inverse.reference_solution(pb)
    assert relative_error(result.x, reference) < FIT_RTOL
    z = (result.x - pb.p_true) / np.sqrt(np.diag(cov))
    assert np.all(np.abs(z) < 4.0)  # within noise of the truth
    stderr = np.array([row[2] for row in result.table])
    np.testing.assert_allclose(stderr, np.sqrt(np.diag(cov)), rtol=1e-4)


def test_plot_shows_source_and_sensors():
    pb = problem()
    result = heat_inverse.solve(pb)

    fig = heat_inverse.plot(pb, result)

    ax_f, ax_d = fig.axes
    assert len(ax_f.lines) >= 2
    assert len(ax_d.lines) == 2 * len(pb.sensors)


def test_data_file_is_refused():
    with pytest.raises(ValueError, match="synthetic"):
        heat_inverse.build(data="readings.csv")
