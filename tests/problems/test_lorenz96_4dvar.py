"""Cycled 4D-Var on Lorenz-96: the window cost's gradient, checkpointing of
long windows, and the analysis beating both background and observations."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from adjoint import Checkpointing, relative_error
from problems import lorenz96_4dvar as l96

GRADIENT_RTOL = 1e-13
# Over the cycled period the analysis must be well below the background and
# the observation error: at most these fractions of them (measured: about
# 0.55 and 0.4 with the default settings).
ANALYSIS_OVER_BACKGROUND = 0.75
ANALYSIS_OVER_OBS_ERROR = 0.6


@functools.cache
def cycled(n_windows=80):
    problem = l96.build(n_windows=n_windows)
    return problem, l96.cycle(problem)


def test_window_gradient_checks_pass():
    report = l96.check(l96.build(n_windows=2))
    assert report.passed, str(report)


def test_model_step_is_rk4_at_dt_001():
    problem = l96.build(n_windows=2)
    obj = l96.window_objective(problem, problem.first_background, 0)
    assert obj.seq.scheme == "rk4"
    assert obj.seq.dt == 0.01
    assert obj.seq.N == l96.WINDOW


def test_cycled_analysis_beats_background_and_observations():
    problem, result = cycled()

    a, b = result.mean_analysis_rmse, result.mean_background_rmse
    assert a < ANALYSIS_OVER_BACKGROUND * b
    assert a < ANALYSIS_OVER_OBS_ERROR * problem.obs_error
    # The analysis forecast to the end of one window is the next background.
    W = problem.window
    for j in (0, 10, 40):
        forecast = l96.integrate(result.analysis[j * W], W)[-1]
        np.testing.assert_array_equal(result.background[(j + 1) * W], forecast)


def test_long_window_is_checkpointed_with_the_same_gradient():
    problem = l96.build(n_windows=2, window=200)  # two time units
    ref = l96.window_objective(problem, problem.first_background, 0)
    ckpt = l96.window_objective(
        problem, problem.first_background, 0, checkpoint=Checkpointing(n_snapshots=10)
    )
    x = problem.first_background

    J_ref, g_ref = ref.value_and_grad(x)
    J, g = ckpt.value_and_grad(x)

    assert relative_error(g, g_ref) <= GRADIENT_RTOL
    assert J == pytest.approx(J_ref, rel=1e-13)
    stats = ckpt.last_checkpoint_stats
    assert stats.snapshots <= 10
    assert stats.recomputed_steps == stats.optimal_recomputed_steps


@pytest.mark.slow
def test_quasi_static_continuation_rescues_two_time_unit_windows():
    # Over two time units the cost has many minima: minimised from the
    # background directly, the analysis is lost; lengthened four observation
    # times at a time (QSVA), it is better than the observations.
    problem = l96.build(n_windows=4, window=200)

    direct = l96.cycle(problem)
    continued = l96.cycle(problem, qsva=4)

    assert direct.mean_analysis_rmse > problem.obs_error
    assert continued.mean_analysis_rmse < ANALYSIS_OVER_OBS_ERROR * problem.obs_error


def test_plot_shows_variables_and_errors():
    problem, result = cycled()

    fig = l96.plot(problem, result, variables=(0, 1))

    assert len(fig.axes) == 3
    assert len(fig.axes[-1].lines) == 3  # background, analysis, σ_o


def test_window_must_end_on_an_observation():
    with pytest.raises(ValueError, match="multiple of `obs_every`"):
        l96.build(window=42)
