"""Control parameterisation, bounds and free final time (adjoint._control)."""

import json
import warnings

import numpy as np
import pytest
import sympy

import adjoint
from _control_systems import pendulum_problem, pendulum_sequence
from adjoint import ControlProblem, PiecewiseConstant, PiecewiseLinear
from adjoint._check import COMPLEX_STEP_H, relative_error

# Complex step against the adjoint: exact to rounding (DESIGN.md section 2).
GRAD_RTOL = 1e-12
DOT_RTOL = 1e-12


def _complex_step_directional(problem, w, V):
    return np.array(
        [
            problem.fun_complex(w + 1j * COMPLEX_STEP_H * v)[1].imag / COMPLEX_STEP_H
            for v in V
        ]
    )


# ---- parameterisations ----


def test_piecewise_constant_default_is_one_value_per_step():
    P = PiecewiseConstant().matrix(7).toarray()
    np.testing.assert_array_equal(P, np.eye(7))


def test_piecewise_constant_intervals_cover_consecutive_steps():
    P = PiecewiseConstant(3).matrix(10).toarray()
    assert P.shape == (10, 3)
    np.testing.assert_array_equal(P.sum(axis=1), 1.0)
    owner = P.argmax(axis=1)
    assert list(owner) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    np.testing.assert_allclose(PiecewiseConstant(3).node_positions(10), [0, 0.4, 0.7])


def test_piecewise_linear_applies_midpoint_values():
    N, M = 12, 4
    P = PiecewiseLinear(M).matrix(N).toarray()
    nodes = np.linspace(0.0, 1.0, M + 1)
    a, b = 0.7, -2.0  # a linear control is reproduced exactly at step midpoints
    mids = (np.arange(N) + 0.5) / N
    np.testing.assert_allclose(P @ (a + b * nodes), a + b * mids, rtol=1e-14)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)


@pytest.mark.parametrize("n_intervals", [0, 21])
def test_bad_number_of_intervals_raises(n_intervals):
    with pytest.raises(ValueError, match="n_intervals"):
        pendulum_problem(20, control=PiecewiseConstant(n_intervals))


def test_unknown_control_kind_raises():
    with pytest.raises(TypeError, match="`control`"):
        pendulum_problem(10, control="cubic")


# ---- gradients through the parameterisation ----


@pytest.mark.parametrize(
    "control", ["constant", "linear", PiecewiseConstant(5), PiecewiseLinear(4)]
)
def test_gradient_matches_complex_step(control, rng):
    problem = pendulum_problem(20, control=control, free_p=(0, 1))
    w = rng.uniform(-0.5, 0.5, problem.size)
    w[-2:] = [2.5, 0.2]
    _, g = problem.value_and_grad(w)
    V = rng.standard_normal((4, problem.size))
    ref = _complex_step_directional(problem, w, V)
    assert relative_error(V @ g, ref) < GRAD_RTOL


def test_tangent_and_adjoint_are_transposes(rng):
    problem = pendulum_problem(15, control=PiecewiseLinear(5))
    w = rng.uniform(-0.5, 0.5, problem.size)
    w[-1] = 2.0
    v = rng.standard_normal(problem.size)
    W = rng.standard_normal((problem.N + 1, problem.n))
    xs_tan, J_tan = problem.jvp(w, v)
    forward = float(np.sum(xs_tan * W) + 0.3 * J_tan)
    reverse = float(v @ problem.vjp(w, W, 0.3))
    assert abs(forward - reverse) <= DOT_RTOL * abs(forward)


def test_fixed_parameters_are_not_unknowns():
    problem = pendulum_problem(10, free_p=(), final_time=None, duration=3.0)
    assert problem.size == 10
    w = problem.pack(0.1)
    _, p = problem.unpack(w)
    np.testing.assert_array_equal(p, [3.0, 0.1])


# ---- free final time ----


def test_free_final_time_scales_the_time_grid():
    problem = pendulum_problem(10, t0=1.0)
    w = problem.pack(0.0, [4.0])
    np.testing.assert_allclose(problem.times(w), 1.0 + np.linspace(0, 4.0, 11))
    np.testing.assert_allclose(problem.control_times(w), 1.0 + 0.4 * np.arange(10))
    assert problem.horizon(w) == 4.0


def test_final_time_must_be_free():
    with pytest.raises(ValueError, match="not free"):
        pendulum_problem(10, free_p=(1,), final_time=0)


def test_final_time_index_out_of_range_raises():
    with pytest.raises(ValueError, match="n_p = 2"):
        pendulum_problem(10, free_p=(0,), final_time=5)


def test_time_scaled_multiplies_the_right_hand_side():
    x, u, T = sympy.symbols("x u T")
    assert adjoint.time_scaled([x * u, -x], T) == [T * x * u, -T * x]


def test_free_final_time_optimum_is_found():
    # Minimum-energy swing to θ = 1 at rest with time as an unknown: a longer
    # horizon needs less torque, so T runs to its upper bound.
    problem = pendulum_problem(
        20,
        T=2.0,
        u_lower=-2,
        u_upper=2,
        p_lower=[1.0],
        p_upper=[3.0],
        constraints=[adjoint.final_state([1.0, 0.0])],
    )
    res = adjoint.optimise(problem, problem.pack(0.5))
    assert res.success, res.message
    assert res.x[-1] == pytest.approx(3.0, abs=1e-6)
    assert res.max_violation < 1e-8


def test_minimum_time_double_integrator_is_bang_bang_with_time_two():
    # x'' = u, |u| ≤ 1, rest at 0 to rest at 1 in least time: u = +1 then -1,
    # T* = 2; with an even number of steps the discrete optimum is exact.
    x, v, u, T = sympy.symbols("x v u T")
    system = adjoint.ODESystem.from_sympy(
        adjoint.time_scaled([v, u], T), [x, v], [T], [u]
    )
    costs = adjoint.costs_from_sympy([x, v], [T], [u], terminal=T)
    seq = adjoint.ODESequence(system, dt=1.0 / 20, N=20, **costs)
    problem = ControlProblem(
        seq,
        [0.0, 0.0],
        p=[3.0],
        free_p=[0],
        final_time=0,
        u_lower=-1,
        u_upper=1,
        p_lower=[0.1],
        p_upper=[10.0],
        constraints=[adjoint.final_state([1.0, 0.0])],
    )
    res = adjoint.optimise(problem, problem.pack(0.0, [3.0]))
    assert res.success, res.message
    assert res.fun == pytest.approx(2.0, abs=1e-8)
    assert problem.horizon(res.x) == pytest.approx(2.0, abs=1e-8)
    np.testing.assert_allclose(
        problem.controls(res.x)[:, 0], np.repeat([1.0, -1.0], 10), atol=1e-6
    )
    assert problem.times(res.x)[-1] == pytest.approx(2.0, abs=1e-8)


# ---- bounds and bad input ----


def test_lower_bound_above_upper_raises():
    with pytest.raises(ValueError, match="`u_lower` exceeds `u_upper`"):
        pendulum_problem(10, u_lower=1.0, u_upper=-1.0)


def test_parameter_lower_bound_above_upper_raises():
    with pytest.raises(ValueError, match="`p_lower` exceeds `p_upper`"):
        pendulum_problem(10, p_lower=[5.0], p_upper=[1.0])


def test_bound_with_wrong_shape_raises():
    with pytest.raises(ValueError, match="`u_upper` has shape"):
        pendulum_problem(10, u_upper=[1.0, 2.0])


def test_zero_steps_raises():
    with pytest.raises(ValueError, match="`N` must be at least 1, got 0"):
        pendulum_sequence(0)


def test_initial_guess_outside_bounds_is_clipped_with_warning():
    problem = pendulum_problem(10, u_lower=-1, u_upper=1, p_lower=[1], p_upper=[4])
    w0 = problem.pack(np.linspace(-3, 3, 10), [2.0])
    with pytest.warns(UserWarning, match="clipped into the bounds"):
        res = adjoint.optimise(problem, w0, options={"maxiter": 3})
    assert np.all(res.x >= problem.lower()) and np.all(res.x <= problem.upper())


def test_initial_guess_inside_bounds_does_not_warn():
    problem = pendulum_problem(10, u_lower=-1, u_upper=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        problem.clip(problem.pack(0.5))


def test_pack_with_wrong_shape_raises():
    problem = pendulum_problem(10)
    with pytest.raises(ValueError, match=r"must have shape \(10, 1\)"):
        problem.pack(np.zeros(9))
    with pytest.raises(ValueError, match="`w` has shape"):
        problem.fun(np.zeros(3))


def test_sequence_without_controls_and_nothing_free_raises():
    seq = adjoint.Sequence(
        pendulum_sequence(3).step,
        pendulum_sequence(3).step_vjp,
        n=2,
        N=3,
        m=0,
        n_p=2,
        consts=[1 / 3],
    )
    with pytest.raises(ValueError, match="nothing to optimise"):
        ControlProblem(seq, [0.0, 0.0], p=[1.0, 0.0])


def test_bounded_problem_with_unbounded_method_raises():
    problem = pendulum_problem(10, u_lower=-1, u_upper=1)
    with pytest.raises(NotImplementedError, match="does not take bounds"):
        adjoint.optimise(problem, method="BFGS")


# ---- results and progress ----


def test_progress_accepts_both_signatures():
    problem = pendulum_problem(10, u_lower=-1, u_upper=1, p_lower=[1], p_upper=[4])
    calls, results = [], []
    res = adjoint.optimise(
        problem, problem.pack(0.2), progress=lambda i, cost: calls.append((i, cost))
    )
    assert [i for i, _ in calls] == list(range(1, res.nit + 1))
    assert calls[-1][1] == pytest.approx(res.fun)

    def scipy_style(intermediate_result):
        results.append(intermediate_result.fun)

    adjoint.optimise(problem, problem.pack(0.2), progress=scipy_style)
    assert len(results) == len(calls)


def test_result_to_json_round_trips():
    problem = pendulum_problem(10, u_lower=-1, u_upper=1, p_lower=[1], p_upper=[4])
    res = adjoint.optimise(problem, problem.pack(0.2))
    res.table = [("J", res.fun, None)]
    data = json.loads(json.dumps(res.to_json()))
    assert data["fun"] == pytest.approx(res.fun)
    assert len(data["x"]) == problem.size
    assert data["table"] == [["J", res.fun, None]]
    assert {"nit", "nfev", "njev", "success", "message", "sweeps"} <= set(data)


# ---- plotting ----


def test_plot_states_controls_has_one_panel_per_state_and_control():
    from adjoint.plotting import plot_states_controls

    problem = pendulum_problem(10, u_lower=-1, u_upper=1)
    w = problem.pack(np.linspace(-1, 1, 10), [3.0])
    figure = plot_states_controls(
        problem.times(w),
        problem.states(w),
        problem.control_times(w),
        problem.controls(w),
        u_lower=-1,
        u_upper=1,
        references={"zero": ([0, 3], [0, 0], "u0")},
    )
    axes = figure.get_axes()
    assert len(axes) == 3
    assert axes[2].get_legend() is not None  # the reference curve
    assert len(axes[0].get_lines()) == 1


def test_plot_reference_on_unknown_panel_raises():
    from adjoint.plotting import plot_states_controls

    with pytest.raises(ValueError, match="names panel"):
        plot_states_controls(
            [0, 1], [[0], [1]], [0], [1.0], references={"r": ([0], [0], "nope")}
        )


def test_animation_writes_gif(tmp_path):
    from adjoint.plotting import animate_pendulum

    pytest.importorskip("PIL")
    t = np.linspace(0, 1, 30)
    path = animate_pendulum(t, np.pi * t, tmp_path / "p.gif", max_frames=5)
    assert path.exists() and path.stat().st_size > 0


def test_animation_without_writer_says_what_to_install(tmp_path, monkeypatch):
    from matplotlib.animation import PillowWriter

    from adjoint.plotting import animate_pendulum

    monkeypatch.setattr(PillowWriter, "isAvailable", classmethod(lambda cls: False))
    with pytest.raises(RuntimeError, match="pillow"):
        animate_pendulum([0, 1], [0, 1], tmp_path / "p.gif")
    with pytest.raises(ValueError, match=".gif or .mp4"):
        animate_pendulum([0, 1], [0, 1], tmp_path / "p.avi")
