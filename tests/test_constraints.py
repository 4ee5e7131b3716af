"""Constraints with adjoint Jacobians and the SciPy bridge (adjoint._constraints)."""

import numpy as np
import pytest

import adjoint
from _control_systems import PI, pendulum_problem
from adjoint import Constraint, ControlProblem
from problems.lqr import QF, Q, R, carts_model, linear_quadratic_sequence

# Complex step against adjoint/tangent Jacobians: exact to rounding.
JACOBIAN_RTOL = 1e-12
# A constrained optimum must meet its constraints to this (issue 6).
VIOLATION_TOL = 1e-6
# Agreement with the KKT solution of the equality-constrained LQ problem.
KKT_RTOL = 1e-6
N_LQ = 15
# Optimum of the bounded swing in test_inequalities_hold_at_the_solution, as
# found by SLSQP; the augmented Lagrangian must reach the same point.
INEQUALITY_J = 1.3520218217188347
X0_LQ = np.array([1.0, 0.0, -0.5, 0.0])


def _lq_problem(constraints=(), **kwargs):
    A, B = carts_model(0.2)
    seq = linear_quadratic_sequence(A, B, Q, R, QF, N_LQ)
    return ControlProblem(seq, X0_LQ, constraints=constraints, **kwargs)


def sol_lq_kkt(x_final):
    """Controls and cost of the LQ problem with x_N = x_final, by one KKT solve."""
    A, B = carts_model(0.2)
    n, m, N = 4, 1, N_LQ
    S = np.vstack([np.linalg.matrix_power(A, k) for k in range(N + 1)])
    G = np.zeros(((N + 1) * n, N * m))
    for k in range(1, N + 1):
        for j in range(k):
            G[k * n : (k + 1) * n, j] = (np.linalg.matrix_power(A, k - 1 - j) @ B)[:, 0]
    W = np.kron(np.diag([1.0] * N + [0.0]), Q)
    W[N * n :, N * n :] = QF
    H = G.T @ W @ G + np.kron(np.eye(N), R)
    g = G.T @ W @ S @ X0_LQ
    C = G[N * n :]
    d = x_final - (S @ X0_LQ)[N * n :]
    K = np.block([[H, C.T], [C, np.zeros((n, n))]])
    sol = np.linalg.solve(K, np.concatenate([-g, d]))
    u = sol[: N * m]
    X = S @ X0_LQ + G @ u
    return u, 0.5 * X @ W @ X + 0.5 * u @ np.kron(np.eye(N), R) @ u


def _nonlinear_constraints():
    def terminal(x, p):
        return np.array([x[0] ** 2 + np.sin(x[1]) * p[1], x[0] * x[1] - p[0]])

    def path(x, p):
        return np.array([np.cos(x[0]) + 0.1 * x[1] ** 3])

    return [
        adjoint.terminal_equality(terminal, [0.5, 1.0], name="terminal"),
        adjoint.path_inequality(path, lower=-2.0, upper=2.0, name="path"),
        adjoint.state_bound(1, upper=3.0, steps=[3, -1]),
    ]


# ---- Jacobians ----


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_constraint_jacobian_matches_complex_step(mode, rng):
    problem = pendulum_problem(12, free_p=(0, 1), constraints=_nonlinear_constraints())
    w = rng.uniform(-1, 1, problem.size)
    w[-2:] = [2.0, 0.3]
    assert problem.constraints.check_jacobian(w, mode=mode, rng=rng) < JACOBIAN_RTOL


def test_forward_and_reverse_jacobians_agree(rng):
    problem = pendulum_problem(12, free_p=(0, 1), constraints=_nonlinear_constraints())
    w = rng.uniform(-1, 1, problem.size)
    w[-2:] = [2.0, 0.3]
    cons = problem.constraints
    jf = cons.jacobian(w, mode="forward")
    jr = cons.jacobian(w, mode="reverse")
    assert jf.shape == (cons.n_rows, problem.size)
    np.testing.assert_allclose(jf, jr, rtol=1e-12, atol=1e-14 * np.abs(jr).max())


def test_auto_mode_counts_sweeps():
    # 12 path rows against 5 + 1 unknowns: forward mode, one tangent per unknown
    path = adjoint.path_inequality(lambda x, p: x[:1], upper=1.0)
    problem = pendulum_problem(
        12, control=adjoint.PiecewiseConstant(5), constraints=[path]
    )
    w = problem.pack(0.1)
    before = dict(problem.counts)
    problem.constraints.jacobian(w)
    assert problem.counts["tangent"] - before["tangent"] == problem.size
    assert problem.counts["adjoint"] == before["adjoint"]
    # one terminal row against 13 unknowns: reverse mode, one adjoint sweep
    problem = pendulum_problem(12, constraints=[adjoint.final_state([1.0], [0])])
    before = dict(problem.counts)
    problem.constraints.jacobian(problem.pack(0.1))
    assert problem.counts["adjoint"] - before["adjoint"] == 1
    assert problem.counts["tangent"] == before["tangent"]


def test_vjp_is_gradient_plus_jacobian_transpose(rng):
    problem = pendulum_problem(10, free_p=(0, 1), constraints=_nonlinear_constraints())
    w = rng.uniform(-1, 1, problem.size)
    w[-2:] = [2.0, 0.3]
    cons = problem.constraints
    y = rng.standard_normal(cons.n_rows)
    expected = problem.grad(w) + cons.jacobian(w).T @ y
    np.testing.assert_allclose(cons.vjp(w, y, 1.0), expected, rtol=1e-12, atol=1e-13)


def test_given_jacobian_matches_complex_step_default():
    def fun(x, p):
        return np.array([x[0] * x[1], p[0] * x[0]])

    def jac(x, p):
        return (
            np.array([[x[1], x[0]], [p[0], 0.0]]),
            np.array([[0.0, 0.0], [x[0], 0.0]]),
        )

    x, p = np.array([0.3, -1.2]), np.array([2.0, 0.5])
    for a, b in zip(Constraint(fun).local(x, p), Constraint(fun, jac).local(x, p)):
        np.testing.assert_allclose(a, b, rtol=1e-14)


# ---- solvers against the KKT solution ----


@pytest.mark.parametrize(
    "method, handling",
    [
        ("SLSQP", None),
        ("trust-constr", None),
        ("L-BFGS-B", "augmented-lagrangian"),
        ("BFGS", "augmented-lagrangian"),
    ],
)
@pytest.mark.filterwarnings("ignore:delta_grad == 0.0")  # trust-constr, linear c
def test_terminal_equality_lq_matches_kkt(method, handling):
    target = np.array([0.2, 0.0, 0.2, 0.0])
    problem = _lq_problem([adjoint.final_state(target)])
    options = {"maxiter": 2000}
    if method == "trust-constr":
        options.update(gtol=1e-10, xtol=1e-14)
    res = adjoint.optimise(
        problem,
        np.zeros(problem.size),
        method=method,
        constraint_handling=handling,
        options=options,
    )
    u_ref, J_ref = sol_lq_kkt(target)
    assert res.max_violation < VIOLATION_TOL
    assert res.fun == pytest.approx(J_ref, rel=KKT_RTOL)
    np.testing.assert_allclose(res.x, u_ref, atol=1e-4 * np.abs(u_ref).max())
    np.testing.assert_allclose(problem.states(res.x)[-1], target, atol=VIOLATION_TOL)


def test_quadratic_penalty_approaches_the_constraint():
    target = np.zeros(4)
    problem = _lq_problem([adjoint.final_state(target)])
    res = adjoint.optimise(
        problem,
        method="L-BFGS-B",
        constraint_handling="penalty",
        constraint_tol=1e-5,
        options={"max_outer": 12},
    )
    _, J_ref = sol_lq_kkt(target)
    assert res.max_violation < 1e-5
    assert res.fun == pytest.approx(J_ref, rel=1e-3)


def test_augmented_lagrangian_multipliers_match_slsqp_cost():
    target = np.array([0.1, 0.0, 0.1, 0.0])
    problem = _lq_problem([adjoint.final_state(target)])
    res = adjoint.optimise(problem, method="L-BFGS-B")
    assert "augmented-lagrangian" in res.message
    assert res.multipliers.shape == (4,)
    # At the optimum ∇J + Cᵀλ = 0: the multipliers explain the gradient
    jac = problem.constraints.jacobian(res.x)
    np.testing.assert_allclose(
        problem.grad(res.x) + jac.T @ res.multipliers, 0.0, atol=1e-5
    )


@pytest.mark.parametrize(
    "method, handling", [("SLSQP", None), ("L-BFGS-B", "augmented-lagrangian")]
)
def test_inequalities_hold_at_the_solution(method, handling):
    # Swing to θ = π/2 at rest with |ω| ≤ 0.6 along the way: 30 path rows.
    # (trust-constr is left out: its interior point runs ~70 dense QRs here,
    # seconds, and far more when OpenBLAS threads compete for busy cores.)
    cons = [
        adjoint.final_state([PI / 2, 0.0]),
        adjoint.state_bound(1, lower=-0.6, upper=0.6),
    ]
    problem = pendulum_problem(
        30,
        T=4.0,
        free_p=(),
        final_time=None,
        duration=4.0,
        constraints=cons,
        u_lower=-3,
        u_upper=3,
    )
    res = adjoint.optimise(
        problem, problem.pack(0.3), method=method, constraint_handling=handling
    )
    assert res.success, res.message
    assert res.max_violation < VIOLATION_TOL
    assert res.fun == pytest.approx(INEQUALITY_J, rel=1e-6)
    assert np.abs(problem.states(res.x)[:, 1]).max() <= 0.6 + VIOLATION_TOL
    # the bound is active: without it the swing is faster
    assert np.abs(problem.states(res.x)[:, 1]).max() > 0.6 - 1e-6


# ---- bad input ----


def test_constraint_lower_above_upper_raises():
    with pytest.raises(ValueError, match="lower > upper"):
        pendulum_problem(5, constraints=[Constraint(lambda x, p: x, lower=1, upper=0)])


def test_constraint_step_out_of_range_raises():
    with pytest.raises(ValueError, match="names step 9"):
        pendulum_problem(5, constraints=[Constraint(lambda x, p: x, steps=[9])])
    with pytest.raises(ValueError, match="'final', 'all'"):
        pendulum_problem(5, constraints=[Constraint(lambda x, p: x, steps="end")])


def test_constraint_of_wrong_type_raises():
    with pytest.raises(TypeError, match="Constraint objects"):
        pendulum_problem(5, constraints=[lambda x, p: x])


def test_constraint_bounds_of_wrong_size_raise():
    with pytest.raises(ValueError, match="expected one number or \\(2,\\)"):
        pendulum_problem(5, constraints=[Constraint(lambda x, p: x, lower=[0, 0, 0])])


def test_gradient_free_method_with_constraints_raises():
    problem = pendulum_problem(5, constraints=[adjoint.final_state([1.0], [0])])
    with pytest.raises(NotImplementedError, match="cannot take the constraints"):
        adjoint.optimise(problem, method="Nelder-Mead")


def test_constraint_handling_without_effect_warns():
    problem = pendulum_problem(5, constraints=[adjoint.final_state([0.1], [0])])
    with pytest.warns(UserWarning, match="SLSQP takes the constraints itself"):
        adjoint.optimise(problem, method="SLSQP", constraint_handling="penalty")


def test_violation_is_reported_when_not_met():
    problem = pendulum_problem(
        10,
        u_lower=-0.01,
        u_upper=0.01,
        p_lower=[1],
        p_upper=[1.5],
        constraints=[adjoint.final_state([PI, 0])],
    )
    res = adjoint.optimise(problem, problem.pack(0.0, [1.2]), options={"maxiter": 30})
    assert not res.success
    assert res.max_violation > 1.0
