"""Bad input and failing kernels give errors that say what went wrong and where.

Inputs are checked once, before a sweep (``ValueError``/``TypeError`` naming
the argument, the expected and the actual shape or the offending index);
failures inside a sweep are `adjoint.SweepError` naming the step; kernels
that write outside their output, leave it unwritten or do not compile are
caught by name when the sequence is built or first run.
"""

import re

import numpy as np
import pytest

import systems
from adjoint import Objective, Sequence, SweepError

N = 12
# The squaring map from x_0 = 10 gives x_k = 10**(2**k): x_8 = 1e256 is the
# last finite state, so step k = 8 (x_8 -> x_9) is the one that overflows.
SQUARE_X0 = 10.0
SQUARE_OVERFLOW_STEP = 8
# Step at which `step_fails_at_5` returns its status, and the status itself.
FAIL_STEP = 5
FAIL_STATUS = 7


# ---------------------------------------------------------------------------
# Kernels for this module (at module level, so Numba caches them on disk)
# ---------------------------------------------------------------------------


def square_step(k, x, theta, p, consts, out):
    out[0] = x[0] * x[0]
    return 0


def square_step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    x_bar[0] += 2.0 * x[0] * lam[0]
    return 0


def square_step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out):
    out[0] = 2.0 * x[0] * x_tan[0]
    return 0


def final_state(x, p, consts, data):
    return x[0]


def final_state_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    x_bar[0] += phi_bar
    return 0


def squared_final_state(x, p, consts, data):
    return x[0] * x[0]


def squared_final_state_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    x_bar[0] += 2.0 * phi_bar * x[0]
    return 0


def huge_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    # Multiplies the adjoint by 1e300 per step: λ_{N-1} = 1e300, λ_{N-2} = inf.
    x_bar[0] += 1e300 * lam[0]
    return 0


def step_writes_past_out(k, x, theta, p, consts, out):
    for i in range(x.shape[0]):
        out[i] = x[i]
    out[x.shape[0]] = 0.0  # one past the end
    return 0


def vjp_writes_past_bar(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    x_bar[0] += lam[0]
    p_bar[1] += lam[0]  # p has one entry
    return 0


def step_leaves_out_unwritten(k, x, theta, p, consts, out):
    out[0] = x[0]  # out[1] is never set
    return 0


def step_fails_at_5(k, x, theta, p, consts, out):
    out[0] = x[0]
    if k == FAIL_STEP:
        return FAIL_STATUS
    return 0


def vjp_fails_at_3(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    x_bar[0] += lam[0]
    if k == 3:
        return 4
    return 0


def step_does_not_compile(k, x, theta, p, consts, out):
    out[0] = x.no_such_attribute
    return 0


def step_returns_nothing(k, x, theta, p, consts, out):
    out[0] = x[0]


def identity_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    for i in range(x.shape[0]):
        x_bar[i] += lam[i]
    return 0


def square_sequence(N=N, **kwargs):
    return Sequence(
        square_step,
        square_step_vjp,
        square_step_jvp,
        n=1,
        N=N,
        terminal_cost=final_state,
        terminal_cost_vjp=final_state_vjp,
        **kwargs,
    )


@pytest.fixture(scope="module")
def lorenz():
    data = np.full((N + 1, 3), np.nan)
    return systems.lorenz_sequence(N, data)


def lorenz_objective(seq, x0=None, thetas=None, p=None, wrt="p"):
    x0 = systems.LORENZ_X0 if x0 is None else x0
    thetas = np.zeros((N, 3)) if thetas is None else thetas
    p = systems.LORENZ_P if p is None else p
    return Objective(seq, x0, thetas, p, wrt=wrt)


# ---------------------------------------------------------------------------
# Inputs: shapes, dtypes, finiteness
# ---------------------------------------------------------------------------


def test_x0_wrong_shape_raises(lorenz):
    with pytest.raises(ValueError, match=r"`x0` has shape \(2,\).*shape \(3,\)"):
        lorenz_objective(lorenz, x0=[1.0, 2.0])


def test_x0_matrix_raises(lorenz):
    with pytest.raises(ValueError, match=r"`x0` has shape \(3, 1\).*n = 3"):
        lorenz_objective(lorenz, x0=np.ones((3, 1)))


def test_thetas_wrong_shape_raises(lorenz):
    with pytest.raises(
        ValueError, match=rf"`thetas` has shape \({N}, 2\).*shape \({N}, 3\)"
    ):
        lorenz_objective(lorenz, thetas=np.zeros((N, 2)))


def test_thetas_wrong_number_of_steps_raises(lorenz):
    with pytest.raises(
        ValueError, match=rf"`thetas` has shape \({N + 1}, 3\).*N = {N}"
    ):
        lorenz_objective(lorenz, thetas=np.zeros((N + 1, 3)))


def test_p_wrong_shape_raises(lorenz):
    with pytest.raises(ValueError, match=r"`p` has shape \(2,\).*n_p = 3.*\(3,\)"):
        lorenz_objective(lorenz, p=[10.0, 28.0])


@pytest.mark.parametrize("name", ["x0", "thetas", "p"])
def test_strings_raise_type_error(lorenz, name):
    bad = {"x0": ["a", "b", "c"], "thetas": np.full((N, 3), "1"), "p": "abc"}
    with pytest.raises(TypeError, match=f"`{name}` must hold real numbers"):
        lorenz_objective(lorenz, **{name: bad[name]})


@pytest.mark.parametrize("name", ["x0", "thetas", "p"])
def test_complex_input_raises_type_error(lorenz, name):
    good = {"x0": systems.LORENZ_X0, "thetas": np.zeros((N, 3)), "p": systems.LORENZ_P}
    with pytest.raises(TypeError, match=f"`{name}` must be real; got dtype complex128"):
        lorenz_objective(lorenz, **{name: good[name] + 0j})


def _thetas_with_nan():
    thetas = np.zeros((N, 3))
    thetas[4, 1] = np.nan
    return thetas


@pytest.mark.parametrize(
    ("name", "value", "where"),
    [
        ("x0", [1.0, np.nan, 20.0], "index 1"),
        ("p", [10.0, 28.0, np.inf], "index 2"),
        ("thetas", _thetas_with_nan(), r"index \(4, 1\)"),
    ],
    ids=["x0", "p", "thetas"],
)
def test_nonfinite_input_names_the_index(lorenz, name, value, where):
    with pytest.raises(ValueError, match=rf"`{name}` contains a non-finite.*{where}"):
        lorenz_objective(lorenz, **{name: value})


def test_nonfinite_z_names_the_index(lorenz):
    obj = lorenz_objective(lorenz, wrt=("x0", "p"))
    z = obj.z0.copy()
    z[4] = -np.inf
    with pytest.raises(ValueError, match=r"`z` contains a non-finite.*index 4"):
        obj.value_and_grad(z)


def test_z_wrong_length_raises(lorenz):
    obj = lorenz_objective(lorenz, wrt=("x0", "p"))
    with pytest.raises(ValueError, match=r"`z` has shape \(5,\).*6 unknowns.*\(6,\)"):
        obj.value_and_grad(np.zeros(5))
    with pytest.raises(ValueError, match=r"`z` has shape \(5,\)"):
        obj.jacobian(np.zeros(5))


def test_jvp_direction_wrong_length_raises(lorenz):
    obj = lorenz_objective(lorenz, wrt="p")
    with pytest.raises(ValueError, match=r"`v` has shape \(4,\).*\(3,\)"):
        obj.jvp(obj.z0, np.zeros(4))


@pytest.mark.parametrize("wrt", ["theta_k", ("x0", "P"), "params"])
def test_unknown_wrt_raises(lorenz, wrt):
    bad = wrt if isinstance(wrt, str) else wrt[1]
    with pytest.raises(ValueError, match=rf"`wrt` must be one of .*got '{bad}'"):
        lorenz_objective(lorenz, wrt=wrt)


def test_empty_wrt_raises(lorenz):
    with pytest.raises(ValueError, match="`wrt` is empty"):
        lorenz_objective(lorenz, wrt=())


def test_jacobian_unknown_mode_raises(lorenz):
    obj = lorenz_objective(lorenz)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        obj.jacobian(obj.z0, mode="backward")


def test_jacobian_step_out_of_range_raises(lorenz):
    obj = lorenz_objective(lorenz)
    with pytest.raises(ValueError, match=rf"`steps` holds {N + 1}.*N = {N}"):
        obj.jacobian(obj.z0, [0, N + 1])


# ---------------------------------------------------------------------------
# Building a sequence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing", ["running_cost_vjp", "terminal_cost_vjp", "running_cost"]
)
def test_cost_without_its_pair_raises(missing):
    kernels = systems.LORENZ_KERNELS
    costs = {
        name: kernels[name]
        for name in (
            "running_cost",
            "running_cost_vjp",
            "terminal_cost",
            "terminal_cost_vjp",
        )
        if name != missing
    }
    with pytest.raises(ValueError, match=f"come as a pair; `{missing}` is missing"):
        Sequence(
            kernels["step"],
            kernels["step_vjp"],
            n=3,
            N=N,
            m=3,
            n_p=3,
            consts=systems.lorenz_consts(),
            data=np.zeros((N + 1, 3)),
            **costs,
        )


def test_data_wrong_rows_raises():
    with pytest.raises(
        ValueError, match=rf"`data` has shape \({N}, 3\).*\({N + 1}, q\)"
    ):
        systems.lorenz_sequence(N, np.zeros((N, 3)))


def test_data_infinite_names_row_and_column():
    data = np.zeros((N + 1, 3))
    data[6, 2] = np.inf
    with pytest.raises(ValueError, match="infinite value at row 6, column 2"):
        systems.lorenz_sequence(N, data)


@pytest.mark.parametrize(("name", "value"), [("n", 0), ("N", -1)])
def test_nonpositive_sizes_raise(name, value):
    sizes = {"n": 1, "N": N, name: value}
    with pytest.raises(ValueError, match=f"`{name}` must be at least 1, got {value}"):
        Sequence(square_step, square_step_vjp, **sizes)


def test_noninteger_size_raises():
    with pytest.raises(TypeError, match="`N` must be an integer, got 2.5"):
        Sequence(square_step, square_step_vjp, n=1, N=2.5)


def test_kernel_that_does_not_compile_names_it():
    # The message gives Numba's reason and line, not its "Failed in nopython
    # mode pipeline" header.
    with pytest.raises(
        TypeError,
        match=r"step kernel `step_does_not_compile` does not compile.*"
        r"Unknown attribute 'no_such_attribute'.*test_errors\.py\", line \d+",
    ):
        Sequence(step_does_not_compile, square_step_vjp, n=1, N=N)


def test_kernel_without_status_names_it():
    with pytest.raises(
        TypeError,
        match="`step_returns_nothing`.*returning an integer status.*"
        "No conversion from none",
    ):
        Sequence(step_returns_nothing, square_step_vjp, n=1, N=N)


def test_kernel_of_the_wrong_kind_raises():
    kernels = systems.LORENZ_KERNELS
    with pytest.raises(TypeError, match="Expected a step_vjp kernel, got a step"):
        Sequence(kernels["step"], kernels["step"], n=3, N=N, m=3, n_p=3)


# ---------------------------------------------------------------------------
# Kernels that misbehave: caught by the first-run probe
# ---------------------------------------------------------------------------


def test_step_writing_past_out_names_the_kernel():
    seq = Sequence(step_writes_past_out, identity_vjp, n=2, N=N)
    obj = Objective(seq, x0=[1.0, 2.0], wrt="x0")
    with pytest.raises(
        ValueError,
        match=r"step kernel `step_writes_past_out` indexed outside its arrays",
    ):
        obj.value_and_grad(obj.z0)


def test_vjp_writing_past_bar_names_the_kernel():
    seq = Sequence(square_step, vjp_writes_past_bar, n=1, N=N, n_p=1)
    obj = Objective(seq, x0=[0.5], p=[1.0], wrt="x0")
    with pytest.raises(
        ValueError,
        match=r"step_vjp kernel `vjp_writes_past_bar` indexed outside its arrays",
    ):
        obj.value_and_grad(obj.z0)


def test_step_leaving_out_unwritten_names_the_entry():
    seq = Sequence(step_leaves_out_unwritten, identity_vjp, n=2, N=N)
    obj = Objective(seq, x0=[1.0, 2.0], wrt="x0")
    with pytest.raises(
        ValueError, match=r"`step_leaves_out_unwritten` left out\[1\] unwritten"
    ):
        obj.fun(obj.z0)


def test_probe_can_be_turned_off_and_runs_once():
    # With probe=False the bad kernel is not caught (and must not be run).
    seq = Sequence(step_leaves_out_unwritten, identity_vjp, n=2, N=N, probe=False)
    assert seq._probe_pending is False
    good = square_sequence()
    Objective(good, x0=[0.5], wrt="x0").fun(np.array([0.5]))
    assert good._probe_pending is False


# ---------------------------------------------------------------------------
# Failures during a sweep: SweepError naming the step
# ---------------------------------------------------------------------------


def test_state_overflow_names_the_step():
    obj = Objective(square_sequence(), x0=[SQUARE_X0], wrt="x0")
    k = SQUARE_OVERFLOW_STEP
    with pytest.raises(
        SweepError, match=rf"state became non-finite at step {k}: x_{k + 1} = \[inf\]"
    ) as info:
        obj.fun(obj.z0)
    assert re.search(rf"from x_{k} = \[1\.?0*e\+256\]", str(info.value))


def test_state_overflow_below_n_steps_is_fine():
    # The same map with N = 8 stops at x_8 = 1e256: finite, no error.
    obj = Objective(square_sequence(N=SQUARE_OVERFLOW_STEP), x0=[SQUARE_X0], wrt="x0")
    assert obj.fun(obj.z0) == pytest.approx(1e256)


def test_nonfinite_cost_raises():
    # States stay finite up to x_8 = 1e256, but Φ = x_8² overflows.
    seq = Sequence(
        square_step,
        square_step_vjp,
        n=1,
        N=SQUARE_OVERFLOW_STEP,
        terminal_cost=squared_final_state,
        terminal_cost_vjp=squared_final_state_vjp,
    )
    obj = Objective(seq, x0=[SQUARE_X0], wrt="x0")
    with pytest.raises(SweepError, match=r"cost is not finite \(J = inf\)"):
        obj.fun(obj.z0)


def test_adjoint_overflow_names_the_step():
    seq = Sequence(
        square_step,
        huge_vjp,
        n=1,
        N=N,
        terminal_cost=final_state,
        terminal_cost_vjp=final_state_vjp,
    )
    obj = Objective(seq, x0=[0.5], wrt="x0")
    with pytest.raises(
        SweepError, match=f"adjoint sweep produced a non-finite value at step {N - 2}"
    ):
        obj.value_and_grad(obj.z0)


def test_step_status_names_the_step_and_kernel():
    seq = Sequence(step_fails_at_5, identity_vjp, n=1, N=N)
    obj = Objective(seq, x0=[1.0], wrt="x0")
    with pytest.raises(
        SweepError,
        match=rf"forward sweep stopped at step {FAIL_STEP}: kernel `step_fails_at_5`"
        rf".*status {FAIL_STATUS}",
    ):
        obj.fun(obj.z0)


def test_vjp_status_names_the_step_and_kernel():
    seq = Sequence(square_step, vjp_fails_at_3, n=1, N=N)
    obj = Objective(seq, x0=[0.5], wrt="x0")
    with pytest.raises(
        SweepError,
        match=r"adjoint sweep stopped at step 3: kernel `vjp_fails_at_3`.*status 4",
    ):
        obj.value_and_grad(obj.z0)
