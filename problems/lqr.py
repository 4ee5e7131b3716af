"""Finite-horizon discrete linear-quadratic regulator (LQR).

Two carts on a track, coupled by a spring and a damper, with a force on the
first cart; state ``x = (q1, v1, q2, v2)``, control ``u`` (the force).  The
continuous model ``ẋ = A_c x + B_c u`` is sampled with a zero-order hold of
step ``DT`` (``[A B] = expm([[A_c, B_c], [0, 0]] DT)``), giving the discrete
system and cost

    x_{k+1} = A x_k + B u_k,                       k = 0 … N-1,
    J = ½ Σ_k (x_kᵀ Q x_k + u_kᵀ R u_k) + ½ x_Nᵀ Q_f x_N.

The unknowns are the ``N`` controls ``u_k`` (``θ_k`` of a homogeneous
:class:`~adjoint.Sequence`); the cost is quadratic in them, so the default
solver is conjugate gradients with Hessian–vector products from differences
of adjoint gradients (``method='quadratic'``), which reaches the optimum to
rounding.

Reference: the backward Riccati recursion of the discrete LQR [1]_,

    P_N = Q_f,  K_k = (R + BᵀP_{k+1}B)⁻¹ BᵀP_{k+1}A,
    P_k = Q + AᵀP_{k+1}(A - B K_k),  u_k = -K_k x_k,  J* = ½ x_0ᵀ P_0 x_0,

which the tests compute independently with NumPy and compare to 1e-8.

References
----------
.. [1] A. E. Bryson and Y.-C. Ho, *Applied Optimal Control*, Hemisphere,
   1975, sections 2.3 (discrete systems) and 5.2 (linear-quadratic problems).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.linalg

import adjoint
from adjoint.kernels import Kernel

DESCRIPTION = (
    "Finite-horizon discrete LQR of two coupled carts; checked against Riccati."
)

# ---- model constants (SI-like units: kg, N/m, N s/m, s) ----
MASS_1 = 1.0
MASS_2 = 0.5
SPRING = 2.0
DAMPING = 0.2
DT = 0.1  # sampling step (s)
N_STEPS = 60  # horizon: 6 s
Q = np.diag([1.0, 0.1, 1.0, 0.1])  # state weight
R = np.array([[0.05]])  # control weight
QF = np.diag([20.0, 2.0, 20.0, 2.0])  # terminal weight
X0 = np.array([1.0, 0.0, -0.5, 0.0])  # initial positions (m) and velocities (m/s)

REFERENCE = {
    "source": "backward Riccati recursion (Bryson & Ho 1975, sec. 5.2)",
    "quantity": "optimal cost J and control sequence u_k",
    "tolerance": 1e-8,
}


# ---- kernels of a general discrete linear-quadratic sequence ----
# consts = [n, m, A (n·n), B (n·m), Q (n·n), R (m·m), Q_f (n·n)], row-major.
# Written with arithmetic only, so they also run on complex128 (complex-safe).


def _lq_step(k, x, theta, p, consts, out):
    n = int(consts[0])
    m = int(consts[1])
    a = 2
    b = a + n * n
    for i in range(n):
        s = x[0] * 0.0
        for j in range(n):
            s += consts[a + i * n + j] * x[j]
        for j in range(m):
            s += consts[b + i * m + j] * theta[j]
        out[i] = s
    return 0


def _lq_step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    n = int(consts[0])
    m = int(consts[1])
    a = 2
    b = a + n * n
    for i in range(n):
        for j in range(n):
            x_bar[j] += consts[a + i * n + j] * lam[i]
        for j in range(m):
            theta_bar[j] += consts[b + i * m + j] * lam[i]
    return 0


def _lq_step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out):
    n = int(consts[0])
    m = int(consts[1])
    a = 2
    b = a + n * n
    for i in range(n):
        s = x_tan[0] * 0.0
        for j in range(n):
            s += consts[a + i * n + j] * x_tan[j]
        for j in range(m):
            s += consts[b + i * m + j] * theta_tan[j]
        out[i] = s
    return 0


def _lq_running_cost(k, x, theta, p, consts, data):
    n = int(consts[0])
    m = int(consts[1])
    q = 2 + n * n + n * m
    r = q + n * n
    s = x[0] * 0.0
    for i in range(n):
        for j in range(n):
            s += x[i] * consts[q + i * n + j] * x[j]
    for i in range(m):
        for j in range(m):
            s += theta[i] * consts[r + i * m + j] * theta[j]
    return 0.5 * s


def _lq_running_cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    # Q and R are symmetric (build symmetrises them), so ∂g/∂x = Q x.
    n = int(consts[0])
    m = int(consts[1])
    q = 2 + n * n + n * m
    r = q + n * n
    for i in range(n):
        for j in range(n):
            x_bar[i] += g_bar * consts[q + i * n + j] * x[j]
    for i in range(m):
        for j in range(m):
            theta_bar[i] += g_bar * consts[r + i * m + j] * theta[j]
    return 0


def _lq_terminal_cost(x, p, consts, data):
    n = int(consts[0])
    m = int(consts[1])
    f = 2 + 2 * n * n + n * m + m * m
    s = x[0] * 0.0
    for i in range(n):
        for j in range(n):
            s += x[i] * consts[f + i * n + j] * x[j]
    return 0.5 * s


def _lq_terminal_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    n = int(consts[0])
    m = int(consts[1])
    f = 2 + 2 * n * n + n * m + m * m
    for i in range(n):
        for j in range(n):
            x_bar[i] += phi_bar * consts[f + i * n + j] * x[j]
    return 0


@functools.cache
def _kernels():
    # Compiled on first use (cached on disk), not at import: `adjoint list`
    # imports this module only for DESCRIPTION.
    return {
        "step": Kernel(_lq_step, "step"),
        "step_vjp": Kernel(_lq_step_vjp, "step_vjp"),
        "step_jvp": Kernel(_lq_step_jvp, "step_jvp"),
        "running_cost": Kernel(_lq_running_cost, "running_cost"),
        "running_cost_vjp": Kernel(_lq_running_cost_vjp, "running_cost_vjp"),
        "terminal_cost": Kernel(_lq_terminal_cost, "terminal_cost"),
        "terminal_cost_vjp": Kernel(_lq_terminal_cost_vjp, "terminal_cost_vjp"),
    }


def linear_quadratic_sequence(A, B, Q, R, Qf, N) -> adjoint.Sequence:
    """A :class:`~adjoint.Sequence` for ``x_{k+1} = A x_k + B u_k`` with LQ cost.

    ``Q``, ``R`` and ``Qf`` are symmetrised.  Raises ``ValueError`` for shapes
    that do not fit and for ``N < 1``.
    """
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    B = np.asarray(B, dtype=np.float64)
    B = B[:, None] if B.ndim == 1 else B
    n, m = A.shape[0], B.shape[1]
    shapes = {
        "A": (A, (n, n)),
        "B": (B, (n, m)),
        "Q": (Q, (n, n)),
        "R": (R, (m, m)),
        "Qf": (Qf, (n, n)),
    }
    mats = {}
    for name, (mat, shape) in shapes.items():
        mat = np.atleast_2d(np.asarray(mat, dtype=np.float64))
        if mat.shape != shape:
            raise ValueError(
                f"`{name}` has shape {mat.shape}; with n = {n} states and m = {m} "
                f"controls it must have shape {shape}."
            )
        mats[name] = mat
    for name in ("Q", "R", "Qf"):
        mats[name] = 0.5 * (mats[name] + mats[name].T)
    consts = np.concatenate(
        [[n, m]] + [mats[k].ravel() for k in ("A", "B", "Q", "R", "Qf")]
    )
    kern = _kernels()
    return adjoint.Sequence(
        kern["step"],
        kern["step_vjp"],
        kern["step_jvp"],
        n=n,
        N=N,
        m=m,
        consts=consts,
        running_cost=kern["running_cost"],
        running_cost_vjp=kern["running_cost_vjp"],
        terminal_cost=kern["terminal_cost"],
        terminal_cost_vjp=kern["terminal_cost_vjp"],
    )


def carts_model(dt: float = DT) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)``: the coupled carts sampled with a zero-order hold of step ``dt``."""
    k, c = SPRING, DAMPING
    Ac = np.array(
        [
            [0.0, 1.0, 0.0, 0.0],
            [-k / MASS_1, -c / MASS_1, k / MASS_1, c / MASS_1],
            [0.0, 0.0, 0.0, 1.0],
            [k / MASS_2, c / MASS_2, -k / MASS_2, -c / MASS_2],
        ]
    )
    Bc = np.array([[0.0], [1.0 / MASS_1], [0.0], [0.0]])
    M = np.zeros((5, 5))
    M[:4, :4], M[:4, 4:] = Ac, Bc
    E = scipy.linalg.expm(M * dt)
    return E[:4, :4], E[:4, 4:]


# ---- the problem surface ----


def build(data=None, *, N: int = N_STEPS) -> adjoint.ControlProblem:
    """The LQR problem over ``N`` steps of ``DT`` (no data file)."""
    if data is not None:
        raise ValueError("The lqr problem takes no data file; omit `--data`.")
    A, B = carts_model(DT)
    seq = linear_quadratic_sequence(A, B, Q, R, QF, N)
    problem = adjoint.ControlProblem(
        seq,
        X0,
        duration=N * DT,
        state_names=["q1", "v1", "q2", "v2"],
        control_names=["force u"],
    )
    problem.model = {"A": A, "B": B, "Q": Q, "R": R, "Qf": QF, "x0": X0}
    return problem


def initial_guess(problem) -> np.ndarray:
    """Zero force everywhere."""
    return np.zeros(problem.size)


def riccati(problem) -> tuple[np.ndarray, float]:
    """``(u, J)``: the optimal controls (N, m) and cost by the Riccati recursion."""
    model = problem.model
    A, B, Q_, R_, Qf = (model[k] for k in ("A", "B", "Q", "R", "Qf"))
    P = Qf
    gains = []
    for _ in range(problem.N):
        K = np.linalg.solve(R_ + B.T @ P @ B, B.T @ P @ A)
        P = Q_ + A.T @ P @ (A - B @ K)
        gains.append(K)
    x = model["x0"]
    u = np.empty((problem.N, B.shape[1]))
    for k, K in enumerate(reversed(gains)):
        u[k] = -K @ x
        x = A @ x + B @ u[k]
    return u, float(0.5 * model["x0"] @ P @ model["x0"])


def solve(problem, method: str | None = None, progress=None):
    """Minimise ``J``; default conjugate gradients (``method='quadratic'``)."""
    result = adjoint.optimise(
        problem,
        initial_guess(problem),
        method=method or "quadratic",
        progress=progress,
    )
    u_ref, J_ref = riccati(problem)
    result.reference_cost = J_ref
    result.control_error = float(np.max(np.abs(problem.controls(result.x) - u_ref)))
    result.table = [
        ("cost J", result.fun, None),
        ("cost J (Riccati)", J_ref, None),
        ("relative cost error", abs(result.fun - J_ref) / abs(J_ref), None),
        ("max |u - u_Riccati|", result.control_error, None),
    ]
    return result


def plot(problem, result):
    """States and force against time, with the Riccati controls dashed."""
    from adjoint.plotting import plot_states_controls

    u_ref, _ = riccati(problem)
    t_u = problem.control_times(result.x)
    return plot_states_controls(
        problem.times(result.x),
        problem.states(result.x),
        t_u,
        problem.controls(result.x),
        state_names=problem.state_names,
        control_names=problem.control_names,
        references={
            "Riccati": (
                t_u,
                u_ref[:, 0],
                problem.control_names[0],
                {"linestyle": "none", "marker": "x"},
            )
        },
        title=f"LQR, N = {problem.N}: J = {result.fun:.10g}",
    )


def check(problem):
    """Gradient checks (complex step, Taylor, dot product) at a random control."""
    rng = np.random.default_rng(7)
    return adjoint.check_control_problem(problem, rng.standard_normal(problem.size))


def compare(problem, methods=None, *, out="results", **options):
    """Optimisers and gradient sources on the LQR from a zero control
    (see :func:`adjoint.compare`); writes ``lqr-compare.*`` to ``out``."""
    from ._control_common import compare as compare_control

    return compare_control(
        problem, "lqr", initial_guess(problem), methods, out=out, **options
    )
