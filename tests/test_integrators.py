"""Integrators as sequences: exact discrete adjoints of every scheme.

Reference problems (``tests/ode_systems.py``): Lotka–Volterra with a seasonal
rate and a harvesting control (nonlinear, time-dependent, one control), Van
der Pol with a forcing control, Fisher–KPP by the method of lines (banded).
Oracles: complex step of the same discrete computation, the Taylor
remainder, the dot-product test, and the dense path for the sparse one.
"""

from __future__ import annotations

import numpy as np
import pytest

import ode_systems as systems
from adjoint import (
    Objective,
    ODESequence,
    SweepError,
    Tableau,
    complex_step_gradient,
    dot_product_test,
    observation_cost,
    relative_error,
    taylor_test,
)
from adjoint._integrators import _kernels as ik
from adjoint._integrators._tableaus import EXPLICIT_SCHEMES, IMPLICIT_SCHEMES

# DESIGN.md section 2: reverse mode equals complex step of the discrete scheme
# to about 1e-12 relative; both are exact to rounding, so this holds with room.
COMPLEX_STEP_RTOL = 1e-12
DOT_RTOL = 1e-12
TAYLOR_RANGE = (1.9, 2.1)

RALSTON = Tableau(
    [[0, 0], [2 / 3, 0]], [1 / 4, 3 / 4], [0, 2 / 3], name="ralston", order=2
)
THREE_EIGHTHS = Tableau(
    [[0, 0, 0, 0], [1 / 3, 0, 0, 0], [-1 / 3, 1, 0, 0], [1, -1, 1, 0]],
    [1 / 8, 3 / 8, 3 / 8, 1 / 8],
    [0, 1 / 3, 2 / 3, 1],
    name="3/8 rule",
    order=4,
)
SCHEMES = [*EXPLICIT_SCHEMES, *IMPLICIT_SCHEMES, RALSTON, THREE_EIGHTHS]
SCHEME_IDS = [s if isinstance(s, str) else s.name for s in SCHEMES]

LV_X0 = np.array([1.0, 0.5])
LV_P = np.array([1.0, 0.8, 0.6, 0.9])
LV_T = 3.0
VDP_X0 = np.array([1.5, 0.2])
VDP_P = np.array([1.3])


@pytest.fixture(scope="module")
def lv():
    return systems.lotka_volterra("kernels")


@pytest.fixture(scope="module")
def vdp():
    return systems.van_der_pol("kernels")


def lv_objective(system, scheme, N=24, **kw):
    obs = observation_cost(
        [N // 3, 2 * N // 3, N], [[1.0, 0.5], [0.8, 0.7], [1.1, 0.6]], N=N
    )
    seq = ODESequence(system, scheme=scheme, dt=LV_T / N, N=N, observations=obs, **kw)
    us = 0.1 + 0.05 * np.sin(np.arange(N))[:, None]
    return Objective(seq, x0=LV_X0, thetas=us, p=LV_P, wrt=("x0", "theta", "p"))


def vdp_objective(system, scheme, N=20):
    obs = observation_cost(
        [N // 2, N], [[1.0, 0.0], [-0.5, 0.3]], N=N, weights=[1.0, 0.5]
    )
    seq = ODESequence(system, scheme=scheme, t0=0.5, dt=0.1, N=N, observations=obs)
    us = 0.2 * np.cos(np.arange(N))[:, None]
    return Objective(seq, x0=VDP_X0, thetas=us, p=VDP_P, wrt=("x0", "theta", "p"))


# ---- tableaus ----


@pytest.mark.parametrize("name", list(EXPLICIT_SCHEMES))
def test_tableau_is_consistent(name):
    tab = EXPLICIT_SCHEMES[name]
    assert tab.is_explicit
    np.testing.assert_allclose(tab.A.sum(axis=1), tab.c, atol=1e-15)
    np.testing.assert_allclose(tab.b.sum(), 1.0, atol=1e-15)
    # Order conditions up to order 3 where the scheme claims them.
    if tab.order >= 2:
        np.testing.assert_allclose(tab.b @ tab.c, 1 / 2, atol=1e-15)
    if tab.order >= 3:
        np.testing.assert_allclose(tab.b @ tab.c**2, 1 / 3, atol=1e-15)
        np.testing.assert_allclose(tab.b @ tab.A @ tab.c, 1 / 6, atol=1e-15)


def test_user_tableau_equal_to_rk4_gives_the_same_numbers(lv):
    rk4 = EXPLICIT_SCHEMES["rk4"]
    mine = Tableau(rk4.A.tolist(), rk4.b.tolist(), rk4.c.tolist(), name="mine")
    J1, g1 = (o := lv_objective(lv, "rk4")).value_and_grad(o.z0)
    J2, g2 = (o := lv_objective(lv, mine)).value_and_grad(o.z0)
    assert J1 == J2
    np.testing.assert_array_equal(g1, g2)


def test_implicit_tableau_is_refused_naming_the_implicit_schemes(lv):
    gauss = Tableau([[0.5]], [1.0], [0.5], name="gauss1")
    with pytest.raises(NotImplementedError, match="backward_euler"):
        ODESequence(lv, scheme=gauss, dt=0.1, N=3)


# ---- exact discrete adjoints ----


@pytest.mark.parametrize("scheme", SCHEMES, ids=SCHEME_IDS)
def test_adjoint_matches_complex_step_lotka_volterra(lv, scheme):
    obj = lv_objective(lv, scheme)
    _, ref, adj = complex_step_gradient(obj, obj.z0)
    assert relative_error(adj, ref) < COMPLEX_STEP_RTOL


@pytest.mark.parametrize("scheme", SCHEMES, ids=SCHEME_IDS)
def test_adjoint_matches_complex_step_van_der_pol(vdp, scheme):
    obj = vdp_objective(vdp, scheme)
    _, ref, adj = complex_step_gradient(obj, obj.z0)
    assert relative_error(adj, ref) < COMPLEX_STEP_RTOL


@pytest.mark.parametrize("scheme", SCHEMES, ids=SCHEME_IDS)
def test_taylor_remainder_is_second_order(lv, scheme, rng):
    obj = lv_objective(lv, scheme)
    result = taylor_test(obj, obj.z0, rng=rng)
    lo, hi = TAYLOR_RANGE
    assert np.all((result.orders >= lo) & (result.orders <= hi)), result.orders


@pytest.mark.parametrize("scheme", SCHEMES, ids=SCHEME_IDS)
def test_tangent_and_adjoint_pass_dot_product_test(vdp, scheme, rng):
    obj = vdp_objective(vdp, scheme)
    assert dot_product_test(obj, obj.z0, rng=rng).relative_error < DOT_RTOL


@pytest.mark.parametrize("scheme", ["rk4", "implicit_midpoint"])
def test_forward_and_reverse_jacobians_agree(lv, scheme):
    obj = lv_objective(lv, scheme, N=9)
    jf = obj.jacobian(obj.z0, steps=[3, 9], mode="forward")
    jr = obj.jacobian(obj.z0, steps=[3, 9], mode="reverse")
    assert relative_error(jf, jr) < 1e-13


def test_recomputed_stages_give_the_stored_stages_gradient(lv):
    J1, g1 = (o := lv_objective(lv, "dopri5")).value_and_grad(o.z0)
    o2 = lv_objective(lv, "dopri5", store_stages=False)
    J2, g2 = o2.value_and_grad(o2.z0)
    assert J1 == J2
    np.testing.assert_array_equal(g1, g2)
    v = np.ones(o.size)
    np.testing.assert_allclose(o2.jvp(o2.z0, v)[0], o.jvp(o.z0, v)[0], rtol=1e-15)


@pytest.mark.parametrize("scheme", ["heun", "crank_nicolson"])
def test_sweeps_run_in_segments(lv, scheme):
    """The compiled sweeps run steps k_start … k_end-1 into segment buffers."""
    obj = lv_objective(lv, scheme, N=12)
    seq = obj.seq
    J, g = obj.value_and_grad(obj.z0)
    traj = obj.trajectory(obj.z0)
    fns, modes, costs = seq.system.kernel_tuple(), seq.system.modes, seq._costs()
    N, n, K = seq.N, seq.n, 5

    def forward(k0, k1, x_start):
        xs = np.empty((k1 - k0 + 1, n))
        info = np.zeros(4, dtype=np.intp)
        if seq.is_explicit:
            tab = seq.tableau
            stages = np.empty((0, tab.n_stages, n))
            Jpart = ik.rk_forward(
                fns,
                costs,
                tab.A,
                tab.b,
                tab.c,
                seq.t0,
                seq.dt,
                x_start,
                obj.thetas,
                obj.p,
                seq.consts,
                seq.data,
                k0,
                k1,
                xs,
                stages,
                info,
            )
        else:
            Jpart = ik.implicit_forward(
                fns,
                modes,
                costs,
                seq._implicit_code,
                seq.t0,
                seq.dt,
                x_start,
                obj.thetas,
                obj.p,
                seq.consts,
                seq.data,
                seq.max_iter,
                seq.tol,
                k0,
                k1,
                xs,
                info,
                np.zeros(1),
            )
        assert info[0] == 0
        return xs, Jpart

    xs_a, J_a = forward(0, K, obj.x0)
    xs_b, J_b = forward(K, N, xs_a[-1])
    np.testing.assert_array_equal(np.vstack([xs_a, xs_b[1:]]), traj.xs)
    assert J_a + J_b == pytest.approx(J, rel=1e-15)

    def backward(k0, k1, xs, lam_end):
        lams = np.empty_like(xs)
        lams[-1] = lam_end
        grad_us = np.zeros((N, seq.m))
        grad_p = np.zeros(seq.n_p)
        info = np.zeros(4, dtype=np.intp)
        xs_bar = np.zeros_like(xs)
        if seq.is_explicit:
            tab = seq.tableau
            ik.rk_adjoint(
                fns,
                modes,
                costs,
                tab.A,
                tab.b,
                tab.c,
                seq.t0,
                seq.dt,
                xs,
                obj.thetas,
                obj.p,
                seq.consts,
                seq.data,
                np.empty((0, tab.n_stages, n)),
                xs_bar,
                1.0,
                k0,
                k1,
                lams,
                grad_us,
                grad_p,
                info,
            )
        else:
            ik.implicit_adjoint(
                fns,
                modes,
                costs,
                seq._implicit_code,
                seq.t0,
                seq.dt,
                xs,
                obj.thetas,
                obj.p,
                seq.consts,
                seq.data,
                xs_bar,
                1.0,
                k0,
                k1,
                lams,
                grad_us,
                grad_p,
                info,
            )
        assert info[0] == 0
        return lams, grad_us, grad_p

    lams_b, gu_b, gp_b = backward(K, N, xs_b, np.zeros(n))
    lams_a, gu_a, gp_a = backward(0, K, xs_a, lams_b[0])
    full = obj.pack(lams_a[0], gu_a + gu_b, gp_a + gp_b)
    np.testing.assert_allclose(full, g, rtol=1e-14, atol=1e-16)


# ---- sparse implicit path ----


@pytest.fixture(scope="module")
def fisher_pair():
    return systems.fisher(30, bandwidth=(1, 1)), systems.fisher(30)


def fisher_objective(system, scheme):
    n = system.n
    grid = (np.arange(n) + 0.5) / n
    x0 = 0.5 * np.exp(-20 * (grid - 0.3) ** 2)
    obs = observation_cost(
        [5, 10],
        np.vstack([x0[::3], x0[::3] * 1.1]),
        N=10,
        components=np.arange(0, n, 3),
    )
    seq = ODESequence(system, scheme=scheme, dt=0.01, N=10, observations=obs)
    return Objective(seq, x0=x0, p=[0.05, 2.0], wrt=("x0", "p"))


@pytest.mark.parametrize("scheme", list(IMPLICIT_SCHEMES))
def test_sparse_path_matches_dense_path(fisher_pair, scheme):
    sparse, dense = (fisher_objective(s, scheme) for s in fisher_pair)
    assert sparse.seq.sparse and not dense.seq.sparse
    Js, gs = sparse.value_and_grad(sparse.z0)
    Jd, gd = dense.value_and_grad(dense.z0)
    assert Js == pytest.approx(Jd, rel=1e-13)
    assert relative_error(gs, gd) < 1e-12
    v = np.linspace(-1, 1, sparse.size)
    assert (
        relative_error(sparse.jvp(sparse.z0, v)[0], dense.jvp(dense.z0, v)[0]) < 1e-12
    )


def test_sparse_path_matches_complex_step(fisher_pair):
    obj = fisher_objective(fisher_pair[0], "backward_euler")
    _, ref, adj = complex_step_gradient(obj, obj.z0, max_directions=4)
    assert relative_error(adj, ref) < COMPLEX_STEP_RTOL


def test_sparse_jacobian_uses_one_jvp_per_band(fisher_pair):
    rows, cols, group, seeds = fisher_pair[0]._column_groups()
    assert seeds.shape == (3, 30)
    dense = fisher_pair[1].jacobian_x(0.0, np.linspace(0, 1, 30), [0.05, 2.0])
    sparse = fisher_pair[0]._sparse_jac_x(
        0.0, np.linspace(0, 1, 30), np.array([0.05, 2.0]), np.zeros(0)
    )
    np.testing.assert_allclose(sparse.toarray(), dense, rtol=1e-14, atol=1e-12)


def test_linear_solver_sparse_needs_a_pattern(lv):
    with pytest.raises(ValueError, match="jac_sparsity"):
        ODESequence(lv, scheme="backward_euler", dt=0.1, N=3, linear_solver="sparse")


# ---- Newton failures and other errors ----


def test_newton_failure_names_step_and_residual(vdp):
    seq = ODESequence(vdp, scheme="backward_euler", dt=50.0, N=4, max_iter=2)
    obj = Objective(seq, x0=[2.0, 0.0], p=[1000.0])
    with pytest.raises(SweepError, match=r"did not converge at step 0 .*residual"):
        obj.fun(obj.z0)


def test_newton_options_warn_for_explicit_schemes(lv):
    with pytest.warns(UserWarning, match="`max_iter` has no effect"):
        ODESequence(lv, scheme="rk4", dt=0.1, N=3, max_iter=5)


@pytest.mark.parametrize("dt", [0.0, -0.1, np.nan, np.inf])
def test_bad_dt_raises(lv, dt):
    with pytest.raises(ValueError, match="`dt` must be"):
        ODESequence(lv, dt=dt, N=3)


def test_bad_N_raises(lv):
    with pytest.raises(ValueError, match="`N` must be at least 1"):
        ODESequence(lv, dt=0.1, N=0)


def test_unknown_scheme_lists_the_names(lv):
    with pytest.raises(ValueError, match="'rk4'.*'backward_euler'"):
        ODESequence(lv, scheme="rk5", dt=0.1, N=3)


def test_not_a_system_raises(lv):
    with pytest.raises(TypeError, match="ODESystem"):
        ODESequence(lv.rhs, dt=0.1, N=3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x0": [1.0, 2.0, 3.0]}, r"`x0` has shape \(3,\); the system has n = 2"),
        ({"thetas": np.zeros((4, 1))}, r"`thetas` has shape \(4, 1\)"),
        ({"p": [1.0]}, r"`p` has shape \(1,\); the system has n_p = 4"),
    ],
)
def test_wrong_shapes_raise(lv, kwargs, match):
    seq = ODESequence(lv, dt=0.1, N=3)
    args = {"x0": LV_X0, "thetas": np.zeros((3, 1)), "p": LV_P, **kwargs}
    with pytest.raises(ValueError, match=match):
        Objective(seq, **args)


def test_observation_cost_for_other_N_raises(lv):
    obs = observation_cost([2], [[1.0, 1.0]], N=5)
    with pytest.raises(ValueError, match="built for N = 5"):
        ODESequence(lv, dt=0.1, N=4, observations=obs)


def test_observation_of_missing_component_raises(lv):
    obs = observation_cost([2], [1.0], N=4, components=[2])
    with pytest.raises(ValueError, match="observes component 2"):
        ODESequence(lv, dt=0.1, N=4, observations=obs)


# ---- observation costs ----


def test_observation_data_layout():
    cost = observation_cost(
        [1, 3], [[2.0, np.nan], [4.0, 5.0]], N=3, components=[1, 0], weights=[2.0, 3.0]
    )
    data = cost.data
    assert data.shape == (4, 6)
    np.testing.assert_array_equal(data[1], [2.0, 0.0, 2.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(data[3], [4.0, 5.0, 2.0, 3.0, 1.0, 0.0])
    np.testing.assert_array_equal(data[0], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    rc, rc_vjp, tc, tc_vjp, d = cost
    x = np.array([1.0, 1.5])
    assert rc(1, x, np.zeros(0), np.zeros(0), np.zeros(0), d[1]) == 0.5 * 2.0 * 0.25
    assert tc(x, np.zeros(0), np.zeros(0), d[3]) == 0.5 * (2.0 * 6.25 + 3.0 * 16.0)


def test_log_observation_cost_matches_complex_step(lv):
    N = 20
    obs = observation_cost(
        [5, 10, 20], [[1.0, 0.5], [0.8, 0.7], [1.1, 0.6]], N=N, log=True
    )
    seq = ODESequence(lv, scheme="heun", dt=0.1, N=N, observations=obs)
    obj = Objective(seq, x0=LV_X0, p=LV_P, wrt=("x0", "p"))
    g, gx = obs.misfit(10, np.array([0.9, 0.6]))
    assert g == pytest.approx(0.5 * (np.log(0.9 / 0.8) ** 2 + np.log(0.6 / 0.7) ** 2))
    _, ref, adj = complex_step_gradient(obj, obj.z0)
    assert relative_error(adj, ref) < COMPLEX_STEP_RTOL


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"obs_steps": [0, 9]}, "states are numbered 0 … N = 5"),
        ({"obs_steps": [2, 2]}, "a step twice"),
        ({"values": [[1.0], [np.inf]]}, "infinite"),
        ({"weights": -1.0}, "non-negative"),
        ({"values": [[1.0], [-1.0]], "log": True}, "positive"),
    ],
)
def test_bad_observations_raise(kwargs, match):
    args = {"obs_steps": [1, 2], "values": [[1.0], [2.0]], "N": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        observation_cost(**args)


def test_times_and_final_time(lv):
    seq = ODESequence(lv, t0=1.0, dt=0.25, N=4)
    np.testing.assert_allclose(seq.times, [1.0, 1.25, 1.5, 1.75, 2.0])
    assert seq.t1 == 2.0
