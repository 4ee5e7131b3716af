"""Forward, adjoint and tangent sweeps of a homogeneous `Sequence` (issue 2).

The linear-quadratic sequence has a closed-form gradient, derived here with
NumPy alone (block matrices mapping ``(x0, θ)`` to every state); the chaotic
Lorenz-63 sequence is checked against complex step, the Taylor remainder,
the dot-product test and forward- against reverse-mode Jacobians.  A
deliberately wrong VJP shows that each check can fail.
"""

import numpy as np
import pytest
from scipy.linalg import block_diag

import adjoint
import systems
from adjoint import Objective

# Adjoint against an independent route through the same discrete computation
# (closed form, complex step, tangent sweep): DESIGN.md section 2 asks for
# 1e-12 relative; rounding alone stays near 1e-15 on these systems.
GRAD_RTOL = 1e-12
# Observed Taylor remainder orders of an exact gradient (STYLE.md section 10).
TAYLOR_ORDER_RANGE = (1.9, 2.1)
# A wrong gradient leaves a first-order remainder: orders within this of 1.
WRONG_ORDER_TOL = 0.1
# A wrong VJP must be off by far more than rounding in every check.
WRONG_MIN_ERROR = 1e-3

# Seed of the module-scoped systems (the `rng` fixture is per test).
SEED = 271828
# Steps of the Lorenz-63 sequence: t = 3 with dt = 0.01, about three Lyapunov
# times, long enough to be chaotic, short enough for exact-to-1e-12 checks.
N_LORENZ = 300
N_LQ = 20

WRTS = ["x0", "theta", "p", ("x0", "p"), ("theta", "p"), ("x0", "theta", "p")]


def _ids(wrt):
    return wrt if isinstance(wrt, str) else "+".join(wrt)


# ---------------------------------------------------------------------------
# Reference: the LQ cost and gradient in closed form
# ---------------------------------------------------------------------------


def sol_lq(A, B, x0, thetas):
    """Stacked states ``X = Φ x0 + Γ θ`` and the maps ``Φ``, ``Γ``."""
    N, m = thetas.shape
    n = x0.size
    powers = [np.eye(n)]
    for _ in range(N):
        powers.append(A @ powers[-1])
    Phi = np.vstack(powers)
    Gamma = np.zeros(((N + 1) * n, N * m))
    for k in range(1, N + 1):
        for j in range(k):
            Gamma[k * n : (k + 1) * n, j * m : (j + 1) * m] = powers[k - 1 - j] @ B
    return Phi @ x0 + Gamma @ thetas.ravel(), Phi, Gamma


def grad_lq(A, B, Q, R, P, x0, thetas):
    """``J`` and ``∇J`` over ``z = (x0, θ)``.

    J = ½ zᵀ H z, so ∇J = ½ (H + Hᵀ) z.

    ``H = Mᵀ W M + diag(0, R, …, R)`` with ``M = [Φ Γ]`` and
    ``W = diag(Q, …, Q, P)``.
    """
    N, m = thetas.shape
    n = x0.size
    _, Phi, Gamma = sol_lq(A, B, x0, thetas)
    M = np.hstack([Phi, Gamma])
    W = block_diag(*([Q] * N + [P]))
    H = M.T @ W @ M + block_diag(np.zeros((n, n)), *([R] * N))
    z = np.concatenate([x0, thetas.ravel()])
    J = 0.5 * z @ H @ z
    grad = 0.5 * (H + H.T) @ z
    return J, grad[:n], grad[n:].reshape(N, m)


@pytest.fixture(scope="module")
def lq():
    rng = np.random.default_rng(SEED)
    A, B, Q, R, P = systems.lq_matrices(rng, n=3, m=2)
    seq = systems.lq_sequence(A, B, Q, R, P, N_LQ)
    x0 = rng.standard_normal(3)
    thetas = rng.standard_normal((N_LQ, 2))
    return seq, (A, B, Q, R, P), x0, thetas


@pytest.fixture(scope="module")
def lorenz():
    rng = np.random.default_rng(SEED)
    data = systems.lorenz_data(N_LORENZ, 0.01, rng)
    seq = systems.lorenz_sequence(N_LORENZ, data)
    thetas = 0.5 * rng.standard_normal((N_LORENZ, 3))
    return seq, systems.LORENZ_X0.copy(), thetas, systems.LORENZ_P.copy()


def _lorenz_objective(lorenz, wrt, seq=None):
    seq_, x0, thetas, p = lorenz
    return Objective(seq if seq is not None else seq_, x0, thetas, p, wrt=wrt)


# ---------------------------------------------------------------------------
# Linear-quadratic: closed form
# ---------------------------------------------------------------------------


def test_lq_states_match_closed_form(lq):
    seq, (A, B, *_), x0, thetas = lq
    traj = Objective(seq, x0, thetas, wrt="x0").trajectory(x0)
    X, _, _ = sol_lq(A, B, x0, thetas)
    assert adjoint.relative_error(traj.xs.ravel(), X) < GRAD_RTOL


@pytest.mark.parametrize("wrt", ["x0", "theta", ("x0", "theta")], ids=_ids)
def test_lq_gradient_matches_closed_form(lq, wrt):
    seq, mats, x0, thetas = lq
    obj = Objective(seq, x0, thetas, wrt=wrt)
    J, grad = obj.value_and_grad(obj.z0)
    J_ref, grad_x0, grad_thetas = grad_lq(*mats, x0, thetas)
    expected = obj.pack(grad_x0, grad_thetas, None)
    assert abs(J - J_ref) <= GRAD_RTOL * abs(J_ref)
    assert grad.shape == expected.shape
    assert adjoint.relative_error(grad, expected) < GRAD_RTOL


def test_lq_adjoint_matches_complex_step(lq):
    # The LQ kernels are generic: they run on complex128 as well.
    seq, _, x0, thetas = lq
    obj = Objective(seq, x0, thetas, wrt=("x0", "theta"))
    _, ref, adj = adjoint.complex_step_gradient(obj, obj.z0)
    assert adjoint.relative_error(adj, ref) < GRAD_RTOL


def test_lq_jacobian_is_the_state_map(lq):
    # x_N = Φ_N x0 + Γ_N θ exactly, so both modes must return those blocks.
    seq, (A, B, *_), x0, thetas = lq
    obj = Objective(seq, x0, thetas, wrt=("x0", "theta"))
    _, Phi, Gamma = sol_lq(A, B, x0, thetas)
    expected = np.hstack([Phi, Gamma])[-3:]
    for mode in ("forward", "reverse"):
        jac = obj.jacobian(obj.z0, mode=mode)
        assert adjoint.relative_error(jac, expected) < GRAD_RTOL, mode


# ---------------------------------------------------------------------------
# Kernels on complex128: each step_jvp is the complex-step derivative of step
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lq", "lorenz"])
def test_step_jvp_matches_complex_step_of_step(name, lq, lorenz, rng):
    h = adjoint._check.COMPLEX_STEP_H
    if name == "lq":
        seq, _, x, thetas = lq
        p = np.zeros(0)
    else:
        seq, x, thetas, p = lorenz
    theta = thetas[3]
    dx, dtheta, dp = (rng.standard_normal(a.size) for a in (x, theta, p))
    out = np.empty(x.size, dtype=np.complex128)
    seq.step(
        3, x + 1j * h * dx, theta + 1j * h * dtheta, p + 1j * h * dp, seq.consts, out
    )
    tangent = np.empty(x.size)
    seq.step_jvp(3, x, theta, p, seq.consts, dx, dtheta, dp, tangent)
    assert adjoint.relative_error(tangent, out.imag / h) < GRAD_RTOL


# ---------------------------------------------------------------------------
# Nonlinear: Lorenz-63 with forcing, data misfit and a prior on p
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("wrt", WRTS, ids=_ids)
def test_adjoint_matches_complex_step(lorenz, wrt):
    obj = _lorenz_objective(lorenz, wrt)
    _, ref, adj = adjoint.complex_step_gradient(obj, obj.z0)
    assert adjoint.relative_error(adj, ref) < GRAD_RTOL


@pytest.mark.parametrize("wrt", WRTS, ids=_ids)
def test_taylor_remainder_order_is_two(lorenz, wrt):
    obj = _lorenz_objective(lorenz, wrt)
    result = adjoint.taylor_test(obj, obj.z0)
    lo, hi = TAYLOR_ORDER_RANGE
    assert np.all((result.orders >= lo) & (result.orders <= hi)), result.orders


def test_taylor_default_step_clears_rounding_noise(lorenz):
    # Regression (issue 2): with only θ unknown (|z| about 1) and J about 2e4,
    # the default first step left the smallest remainders at rounding level,
    # so an exact gradient showed orders such as -0.4 and 2.3.
    obj = _lorenz_objective(lorenz, "theta")
    J = obj.fun(obj.z0)
    result = adjoint.taylor_test(obj, obj.z0)
    assert result.remainders[-1] > 1e3 * np.finfo(np.float64).eps * abs(J)


@pytest.mark.parametrize("wrt", WRTS, ids=_ids)
def test_dot_product_of_tangent_and_adjoint_sweeps(lorenz, wrt):
    obj = _lorenz_objective(lorenz, wrt)
    result = adjoint.dot_product_test(obj, obj.z0)
    assert result.relative_error < GRAD_RTOL


@pytest.mark.parametrize("wrt", WRTS, ids=_ids)
def test_forward_and_reverse_jacobians_agree(lorenz, wrt):
    obj = _lorenz_objective(lorenz, wrt)
    steps = [1, N_LORENZ // 2, N_LORENZ]
    jf = obj.jacobian(obj.z0, steps, mode="forward")
    jr = obj.jacobian(obj.z0, steps, mode="reverse")
    assert jf.shape == jr.shape == (9, obj.size)
    assert adjoint.relative_error(jf, jr) < GRAD_RTOL


@pytest.mark.parametrize(
    ("wrt", "steps", "mode"),
    [
        ("x0", None, "reverse"),  # 3 unknowns, 3 outputs: a tie goes reverse
        ("p", None, "reverse"),
        ("theta", None, "reverse"),  # 900 unknowns, 3 outputs
        (("x0", "p"), None, "reverse"),  # 6 unknowns, 3 outputs
        (("x0", "p"), [N_LORENZ - 1, N_LORENZ], "reverse"),  # 6 and 6
        ("p", [0, 1, N_LORENZ], "forward"),  # 3 unknowns, 9 outputs
        (("x0", "p"), [0, 1, N_LORENZ], "forward"),  # 6 unknowns, 9 outputs
    ],
)
def test_jacobian_auto_picks_fewer_sweeps(lorenz, wrt, steps, mode):
    obj = _lorenz_objective(lorenz, wrt)
    obj.trajectory(obj.z0)
    before = dict(obj.counts)
    jac = obj.jacobian(obj.z0, steps, mode="auto")
    n_out, n_in = jac.shape
    tangent = obj.counts["tangent"] - before["tangent"]
    adjoint_sweeps = obj.counts["adjoint"] - before["adjoint"]
    if mode == "forward":
        assert (tangent, adjoint_sweeps) == (n_in, 0)
    else:
        assert (tangent, adjoint_sweeps) == (0, n_out)
    assert obj.counts["forward"] == before["forward"]  # trajectory reused
    reference = obj.jacobian(obj.z0, steps, mode="reverse")
    assert adjoint.relative_error(jac, reference) < GRAD_RTOL


def test_jacobian_auto_without_jvp_uses_reverse(lorenz):
    seq, x0, thetas, p = lorenz
    no_jvp = systems.lorenz_sequence(N_LORENZ, seq.data, jvp=False)
    obj = Objective(no_jvp, x0, thetas, p, wrt="p")
    obj.jacobian(obj.z0)
    assert (obj.counts["tangent"], obj.counts["adjoint"]) == (0, 3)
    with pytest.raises(NotImplementedError, match="no `step_jvp` kernel"):
        obj.jacobian(obj.z0, mode="forward")


@pytest.mark.parametrize("wrt", WRTS, ids=_ids)
def test_check_gradients_report_passes(lorenz, wrt):
    obj = _lorenz_objective(lorenz, wrt)
    report = adjoint.check_gradients(obj)
    text = str(report)
    assert report.passed, text
    names = [line[0] for line in report.lines]
    for key in (
        "complex step",
        "central differences",
        "Taylor",
        "dot-product",
        "Jacobian",
    ):
        assert any(key in name for name in names), (key, names)
    for name in names:
        assert name in text
    assert "all passed" in text


# ---------------------------------------------------------------------------
# The checks can fail: a VJP with a bug
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wrong_seq(lorenz):
    seq = lorenz[0]
    return systems.lorenz_sequence(
        N_LORENZ, seq.data, step_vjp=systems.LORENZ_STEP_VJP_WRONG
    )


@pytest.mark.parametrize("wrt", ["x0", "theta", "p", ("x0", "theta", "p")], ids=_ids)
def test_taylor_test_detects_wrong_vjp(lorenz, wrong_seq, wrt):
    obj = _lorenz_objective(lorenz, wrt, seq=wrong_seq)
    result = adjoint.taylor_test(obj, obj.z0)
    assert np.all(np.abs(result.orders - 1.0) < WRONG_ORDER_TOL), result.orders


@pytest.mark.parametrize("wrt", ["x0", "theta", "p"], ids=_ids)
def test_complex_step_detects_wrong_vjp(lorenz, wrong_seq, wrt):
    obj = _lorenz_objective(lorenz, wrt, seq=wrong_seq)
    _, ref, adj = adjoint.complex_step_gradient(obj, obj.z0)
    assert adjoint.relative_error(adj, ref) > WRONG_MIN_ERROR


@pytest.mark.parametrize("wrt", ["x0", "theta", "p"], ids=_ids)
def test_dot_product_detects_wrong_vjp(lorenz, wrong_seq, wrt):
    obj = _lorenz_objective(lorenz, wrt, seq=wrong_seq)
    assert adjoint.dot_product_test(obj, obj.z0).relative_error > WRONG_MIN_ERROR


def test_check_gradients_report_fails_on_wrong_vjp(lorenz, wrong_seq):
    obj = _lorenz_objective(lorenz, ("x0", "p"), seq=wrong_seq)
    report = adjoint.check_gradients(obj)
    text = str(report)
    assert not report.passed
    assert "FAIL" in text and "SOME CHECKS FAILED" in text
    for name, _, _, passed in report.lines:
        assert passed is False, name


# ---------------------------------------------------------------------------
# Sweep counters and the reuse of a forward sweep
# ---------------------------------------------------------------------------


def test_counts_count_each_sweep(lorenz):
    obj = _lorenz_objective(lorenz, ("x0", "p"))
    z = obj.z0
    assert dict(obj.counts) == {"forward": 0, "adjoint": 0, "tangent": 0}
    obj.value_and_grad(z)
    assert dict(obj.counts) == {"forward": 1, "adjoint": 1, "tangent": 0}
    obj.jvp(z, np.ones(obj.size))
    assert dict(obj.counts) == {"forward": 1, "adjoint": 1, "tangent": 1}
    obj.fun(z + 1e-3)
    assert dict(obj.counts) == {"forward": 2, "adjoint": 1, "tangent": 1}


def test_repeated_value_and_grad_reuses_forward_sweep(lorenz):
    obj = _lorenz_objective(lorenz, ("x0", "p"))
    J1, g1 = obj.value_and_grad(obj.z0)
    J2, g2 = obj.value_and_grad(obj.z0.copy())
    assert obj.counts["forward"] == 1
    assert obj.counts["adjoint"] == 2
    assert J1 == J2
    np.testing.assert_array_equal(g1, g2)
    assert obj.fun(obj.z0) == J1
    assert obj.counts["forward"] == 1


def test_changing_z_in_place_reruns_forward_sweep(lorenz):
    # The cached trajectory is keyed on a copy of z, not on the caller's array.
    obj = _lorenz_objective(lorenz, ("x0", "p"))
    z = obj.z0.copy()
    obj.value_and_grad(z)
    z[0] += 0.5
    J, g = obj.value_and_grad(z)
    assert obj.counts["forward"] == 2
    fresh = _lorenz_objective(lorenz, ("x0", "p"))
    J_ref, g_ref = fresh.value_and_grad(z)
    assert J == J_ref
    np.testing.assert_array_equal(g, g_ref)
