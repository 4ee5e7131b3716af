"""Heat source recovered from a few sensors: a long sequence for checkpointing.

Model: the heat equation on ``0 < x < 1`` with ``u = 0`` at both ends, a
source with a known time modulation and an unknown profile::

    u_t = κ u_xx + a(t) f(x),   a(t) = 1 + A sin(2π t / P),
    f(x) = Σ_{j=1..M} p_j sin(jπx),   u(x, 0) = 0.

Method of lines on ``n`` interior points (second differences), classical RK4
with the step at ``CFL`` times its stability limit (``|h μ_max| ≤ 2.785``,
``μ_max = 4κ/Δx²``), so ``n = 200`` needs about 65,000 steps per unit time and
``10^6`` steps reach ``t ≈ 15``.  The sequence is long but well conditioned:
the step is a contraction, the adjoint as tame as the forward sweep.

Data: synthetic, from ``P_TRUE`` with Gaussian noise (``NOISE``), at
``SENSORS`` every ``SAMPLE_EVERY`` steps.

Unknowns: the ``M`` coefficients ``p``; cost
``J = ½ Σ_{k,s} ((u_{k,s} − d_{k,s}) / σ)² + ½ α |p|²``, a misfit at many
steps (a running cost) and a small ridge prior (the terminal cost).

Reference: the sine modes are eigenvectors of the discrete Laplacian, so each
mode's amplitude follows a scalar RK4 recursion.  :func:`modal_responses`
runs those recursions with a linear filter, independently of the adjoint
code; :func:`reference_solution` solves the least-squares problem they
define.  The fitted ``p`` must equal it, and lie within a few standard
errors of ``P_TRUE``.

This is the problem where checkpointing is exercised at scale
(``benchmarks/bench_checkpoint.py``): pass ``checkpoint=Checkpointing(...)``
to :func:`build`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy.optimize import minimize
from scipy.signal import lfilter

from adjoint import Checkpointing, Objective, Sequence, check_gradients

DESCRIPTION = "Heat source profile recovered from 4 sensors; RK4 at its stability limit"
N_POINTS = 200  # interior grid points
KAPPA = 1.0  # diffusivity
CFL = 0.9  # fraction of RK4's stability limit on the negative real axis
RK4_LIMIT = 2.785293563405282  # |h μ| at which RK4 stops being stable
DURATION = 0.5  # default time horizon; ≈ 32,000 steps at n = 200
N_MODES = 6
P_TRUE = (10.0, -6.0, 5.0, 3.0, -2.5, 2.0)
SENSORS = (0.13, 0.37, 0.58, 0.81)  # positions; the nearest grid points
SAMPLE_EVERY = 20  # steps between sensor readings
NOISE = 0.005  # standard deviation of the sensor noise (u is of order 1)
AMPLITUDE = 0.5  # A of the modulation a(t)
PERIOD = 0.05  # P of the modulation a(t)
RIDGE = 1e-6  # α of the prior ½ α |p|²
SEED = 8
REFERENCE = {"p_true": P_TRUE}

# consts layout: dt, κ/Δx², A, 2π/P, M, n_s, σ, α |
#   sensor indices (n_s) | φ (M n)
_HEAD = 8


# ---- kernels (complex-safe: branches on data and step index only) ----


@njit(cache=True)
def _laplacian(c, v, out):
    """``out = c (v_{i-1} - 2 v_i + v_{i+1})`` with zero boundary values."""
    n = v.shape[0]
    for i in range(n):
        left = v[i - 1] if i > 0 else 0.0 * v[i]
        right = v[i + 1] if i < n - 1 else 0.0 * v[i]
        out[i] = c * (left - 2.0 * v[i] + right)


@njit(cache=True)
def _source(p, consts, like):
    """``f = Σ_j p_j φ_j`` on the grid."""
    n = like.shape[0]
    M = int(consts[4])
    base = _HEAD + int(consts[5])
    f = np.zeros_like(like) * p[0]
    for j in range(M):
        for i in range(n):
            f[i] += p[j] * consts[base + j * n + i]
    return f


@njit(cache=True)
def _modulation(consts, t):
    return 1.0 + consts[2] * math.sin(consts[3] * t)


@njit(cache=True)
def _rk4(x, f, consts, k, out):
    """One RK4 step of ``u' = L u + a(t) f`` from ``x`` at ``t = k dt``."""
    h = consts[0]
    c = consts[1]
    t = k * h
    a0 = _modulation(consts, t)
    ah = _modulation(consts, t + 0.5 * h)
    a1 = _modulation(consts, t + h)
    K = np.empty_like(out)
    w = np.empty_like(out)
    _laplacian(c, x, K)
    for i in range(x.shape[0]):
        K[i] += a0 * f[i]
        out[i] = x[i] + h / 6.0 * K[i]
        w[i] = x[i] + 0.5 * h * K[i]
    _laplacian(c, w, K)
    for i in range(x.shape[0]):
        K[i] += ah * f[i]
        out[i] += h / 3.0 * K[i]
        w[i] = x[i] + 0.5 * h * K[i]
    _laplacian(c, w, K)
    for i in range(x.shape[0]):
        K[i] += ah * f[i]
        out[i] += h / 3.0 * K[i]
        w[i] = x[i] + h * K[i]
    _laplacian(c, w, K)
    for i in range(x.shape[0]):
        K[i] += a1 * f[i]
        out[i] += h / 6.0 * K[i]


def heat_step(k, x, theta, p, consts, out):
    """One RK4 step ``out = x_{k+1}`` of ``u' = L u + a(t) Σ_j p_j φ_j``."""
    _rk4(x, _source(p, consts, x), consts, k, out)
    return 0


def heat_step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out):
    """Tangent of :func:`heat_step`: the same step applied to the tangents."""
    # The step is linear in (x, p), so its tangent is the step of the tangents.
    _rk4(x_tan, _source(p_tan, consts, x_tan), consts, k, out)
    return 0


def heat_step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    """Adjoint of :func:`heat_step`: the RK4 stages in reverse order."""
    # Stages in reverse: K̄_4, w̄_4 = L K̄_4 (L is symmetric), K̄_3, …
    n = x.shape[0]
    h = consts[0]
    c = consts[1]
    t = k * h
    a0 = _modulation(consts, t)
    ah = _modulation(consts, t + 0.5 * h)
    a1 = _modulation(consts, t + h)
    Kb = np.empty_like(lam)
    wb = np.empty_like(lam)
    fb = np.zeros_like(lam)
    for i in range(n):
        Kb[i] = h / 6.0 * lam[i]
        x_bar[i] += lam[i]
    _laplacian(c, Kb, wb)
    for i in range(n):
        fb[i] += a1 * Kb[i]
        x_bar[i] += wb[i]
        Kb[i] = h / 3.0 * lam[i] + h * wb[i]
    _laplacian(c, Kb, wb)
    for i in range(n):
        fb[i] += ah * Kb[i]
        x_bar[i] += wb[i]
        Kb[i] = h / 3.0 * lam[i] + 0.5 * h * wb[i]
    _laplacian(c, Kb, wb)
    for i in range(n):
        fb[i] += ah * Kb[i]
        x_bar[i] += wb[i]
        Kb[i] = h / 6.0 * lam[i] + 0.5 * h * wb[i]
    _laplacian(c, Kb, wb)
    for i in range(n):
        fb[i] += a0 * Kb[i]
        x_bar[i] += wb[i]
    M = int(consts[4])
    base = _HEAD + int(consts[5])
    for j in range(M):
        for i in range(n):
            p_bar[j] += consts[base + j * n + i] * fb[i]
    return 0


def sensor_misfit(k, x, theta, p, consts, data):
    """``g_k = ½ Σ_s ((x_{i_s} − d_{k,s}) / σ)²`` over sensors with data."""
    n_s = int(consts[5])
    inv_var = 1.0 / (consts[6] * consts[6])
    g = 0.0 * x[0]
    for s in range(n_s):
        if not np.isnan(data[s]):
            r = x[int(consts[_HEAD + s])] - data[s]
            g += 0.5 * inv_var * r * r
    return g


def sensor_misfit_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    """Vector-Jacobian product of :func:`sensor_misfit`."""
    n_s = int(consts[5])
    inv_var = 1.0 / (consts[6] * consts[6])
    for s in range(n_s):
        if not np.isnan(data[s]):
            i = int(consts[_HEAD + s])
            x_bar[i] += g_bar * inv_var * (x[i] - data[s])
    return 0


def ridge(x, p, consts, data):
    """The ridge prior ``Φ = ½ α |p|²`` (the terminal cost)."""
    total = 0.0 * p[0]
    for j in range(p.shape[0]):
        total += p[j] * p[j]
    return 0.5 * consts[7] * total


def ridge_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    """Vector-Jacobian product of :func:`ridge`."""
    for j in range(p.shape[0]):
        p_bar[j] += phi_bar * consts[7] * p[j]
    return 0


# ---- the problem ----


@dataclass
class HeatProblem:
    """The sequence, its objective and the synthetic data.

    Attributes
    ----------
    seq : Sequence
    objective : Objective
        Unknowns ``p``; carries the checkpointing choice.
    grid : ndarray, shape (n,)
        Interior points.
    sensors : ndarray of int, shape (n_s,)
        Grid indices of the sensors.
    dt : float
    n_steps : int
    data : ndarray, shape (N + 1, n_s)
        Sensor readings; NaN between samples.
    clean : ndarray, shape (N + 1, n_s)
        The noise-free readings (NaN between samples).
    """

    seq: Sequence
    objective: Objective
    grid: np.ndarray
    sensors: np.ndarray
    dt: float
    n_steps: int
    data: np.ndarray
    clean: np.ndarray
    p_true: np.ndarray
    noise: float
    settings: dict = field(default_factory=dict)

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.n_steps + 1) * self.dt


def stable_dt(n_points: int, kappa: float = KAPPA, cfl: float = CFL) -> float:
    """RK4 step at ``cfl`` times the stability limit of the second differences."""
    dx = 1.0 / (n_points + 1)
    return cfl * RK4_LIMIT * dx * dx / (4.0 * kappa)


def modal_responses(
    n_points,
    n_steps,
    n_modes=N_MODES,
    kappa=KAPPA,
    cfl=CFL,
    amplitude=AMPLITUDE,
    period=PERIOD,
):
    """Amplitude of each sine mode, per unit ``p_j``, at every step.

    Mode ``j`` of the grid is an eigenvector of the second differences with
    eigenvalue ``μ_j = -(4κ/Δx²) sin²(jπΔx/2)``, so RK4 on it is the scalar
    recursion ``c_{k+1} = R(hμ_j) c_k + h (β_0 a_k + β_½ a_{k+½} + β_1 a_{k+1})``
    (``R`` the RK4 stability polynomial), run here as a linear filter.

    Returns
    -------
    ndarray, shape (N + 1, M)
    """
    dt = stable_dt(n_points, kappa, cfl)
    dx = 1.0 / (n_points + 1)
    j = np.arange(1, n_modes + 1)
    z = dt * (-(4.0 * kappa / dx**2) * np.sin(j * np.pi * dx / 2.0) ** 2)
    R = 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24
    t = np.arange(n_steps) * dt

    def a(s):
        return 1.0 + amplitude * np.sin(2.0 * np.pi * s / period)

    a0, ah, a1 = a(t), a(t + dt / 2), a(t + dt)
    E = np.zeros((n_steps + 1, n_modes))
    for m in range(n_modes):
        zm = z[m]
        b = dt * (
            (1 + zm + zm**2 / 2 + zm**3 / 4) / 6 * a0
            + (4 + 2 * zm + zm**2 / 2) / 6 * ah
            + a1 / 6
        )
        E[1:, m] = lfilter([1.0], [1.0, -R[m]], b)
    return E


def build(
    data=None,
    *,
    n_points: int = N_POINTS,
    n_steps: int | None = None,
    duration: float = DURATION,
    noise: float = NOISE,
    seed: int = SEED,
    checkpoint: Checkpointing | None = None,
) -> HeatProblem:
    """The problem on ``n_points`` interior points over ``n_steps`` RK4 steps
    (default: enough to reach ``duration``), with synthetic sensor data."""
    if data is not None:
        raise ValueError(
            "The heat-inverse problem makes its own synthetic data; omit `--data`."
        )
    n = int(n_points)
    dt = stable_dt(n)
    N = int(n_steps) if n_steps is not None else int(math.ceil(duration / dt))
    grid = np.arange(1, n + 1) / (n + 1)
    sensors = np.array([int(round(s * (n + 1))) - 1 for s in SENSORS])
    phi = np.sin(np.pi * np.outer(np.arange(1, N_MODES + 1), grid))
    head = [
        dt,
        KAPPA * (n + 1) ** 2,
        AMPLITUDE,
        2 * np.pi / PERIOD,
        N_MODES,
        len(sensors),
        noise,
        RIDGE,
    ]
    consts = np.concatenate([head, sensors.astype(float), phi.ravel()])

    # Synthetic readings from the modal solution (exact for this grid).
    p_true = np.array(P_TRUE)
    E = modal_responses(n, N)
    clean = np.full((N + 1, len(sensors)), np.nan)
    rows = np.arange(SAMPLE_EVERY, N + 1, SAMPLE_EVERY)
    clean[rows] = (E[rows] * p_true) @ phi[:, sensors]
    rng = np.random.default_rng(seed)
    readings = clean.copy()
    readings[rows] += noise * rng.standard_normal((len(rows), len(sensors)))

    seq = Sequence(
        heat_step,
        heat_step_vjp,
        heat_step_jvp,
        n=n,
        N=N,
        n_p=N_MODES,
        consts=consts,
        data=readings,
        running_cost=sensor_misfit,
        running_cost_vjp=sensor_misfit_vjp,
        terminal_cost=ridge,
        terminal_cost_vjp=ridge_vjp,
    )
    objective = Objective(
        seq, x0=np.zeros(n), p=np.zeros(N_MODES), wrt="p", checkpoint=checkpoint
    )
    return HeatProblem(
        seq,
        objective,
        grid,
        sensors,
        dt,
        N,
        readings,
        clean,
        p_true,
        noise,
        {"rows": rows, "phi": phi},
    )


def initial_guess(problem: HeatProblem) -> np.ndarray:
    """No source."""
    return np.zeros(N_MODES)


def reference_solution(problem: HeatProblem) -> tuple[np.ndarray, np.ndarray]:
    """``(p*, covariance)``: the least-squares optimum from the modal responses,
    by the normal equations, independent of the sweeps."""
    rows = problem.settings["rows"]
    phi = problem.settings["phi"]
    E = modal_responses(len(problem.grid), problem.n_steps)
    G = np.concatenate([E[rows] * phi[:, s] for s in problem.sensors]) / problem.noise
    d = problem.data[rows].T.ravel() / problem.noise
    H = G.T @ G + RIDGE * np.eye(N_MODES)
    p = np.linalg.solve(H, G.T @ d)
    return p, np.linalg.inv(H)


def hessian(problem: HeatProblem, p) -> np.ndarray:
    """The (constant) Hessian of ``J`` from gradient differences: ``J`` is
    quadratic in ``p``, so one-sided differences are exact up to rounding."""
    obj = problem.objective
    p = np.asarray(p, dtype=float)
    _, g0 = obj.value_and_grad(p)
    H = np.empty((N_MODES, N_MODES))
    for j in range(N_MODES):
        e = np.zeros(N_MODES)
        e[j] = 1.0
        H[:, j] = obj.value_and_grad(p + e)[1] - g0
    return 0.5 * (H + H.T)


def solve(problem: HeatProblem, method: str | None = None, progress=None):
    """Fit ``p`` with adjoint gradients (L-BFGS-B by default).

    The result is SciPy's, with ``table`` (each ``p_j`` with its standard
    error from the Hessian), ``reference`` (the modal least-squares optimum),
    ``checkpoint_stats`` of the last gradient and ``to_json()``.
    """
    obj = problem.objective
    result = minimize(
        obj.value_and_grad,
        initial_guess(problem),
        jac=True,
        method=method or "L-BFGS-B",
        callback=progress,
        options={"maxiter": 500, "gtol": 1e-10, "ftol": 1e-15},
    )
    result.method = method or "L-BFGS-B"
    result.checkpoint_stats = obj.last_checkpoint_stats
    cov = np.linalg.inv(hessian(problem, result.x))
    stderr = np.sqrt(np.diag(cov))
    result.reference, _ = reference_solution(problem)
    result.table = [
        (f"p_{j + 1}", float(result.x[j]), float(stderr[j])) for j in range(N_MODES)
    ]

    def to_json():
        stats = result.checkpoint_stats
        return {
            "p_true": list(problem.p_true),
            "p_reference": [float(v) for v in result.reference],
            "n_steps": problem.n_steps,
            "n_points": len(problem.grid),
            "checkpoint": None if stats is None else str(stats),
        }

    result.to_json = to_json
    return result


def simulate(problem: HeatProblem, p) -> np.ndarray:
    """Sensor readings of the model with source ``p`` at the sampled steps."""
    rows = problem.settings["rows"]
    E = modal_responses(len(problem.grid), problem.n_steps)
    return (E[rows] * np.asarray(p)) @ problem.settings["phi"][:, problem.sensors]


def plot(problem: HeatProblem, result):
    """Source profile (truth and fit) and the sensor readings with the fit."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax_f, ax_d = fig.subplots(1, 2)
    phi = problem.settings["phi"]
    ax_f.plot(problem.grid, problem.p_true @ phi, color="k", label="true f(x)")
    ax_f.plot(
        problem.grid, result.x @ phi, color="C1", linestyle="--", label="recovered"
    )
    for s in problem.sensors:
        ax_f.axvline(problem.grid[s], color="0.7", linewidth=0.8)
    ax_f.set_xlabel("x")
    ax_f.set_ylabel("source profile f(x)")
    ax_f.legend(loc="best")
    rows = problem.settings["rows"]
    t = rows * problem.dt
    fit = simulate(problem, result.x)
    for i, s in enumerate(problem.sensors):
        ax_d.plot(t, problem.data[rows, i], ".", color=f"C{i}", markersize=1.5)
        ax_d.plot(
            t,
            fit[:, i],
            color=f"C{i}",
            linewidth=1.0,
            label=f"x = {problem.grid[s]:.2f}",
        )
    ax_d.set_xlabel("t")
    ax_d.set_ylabel("u at the sensors")
    ax_d.legend(loc="best", fontsize="small")
    fig.suptitle(
        f"Heat source from {len(problem.sensors)} sensors, "
        f"N = {problem.n_steps} RK4 steps"
    )
    return fig


def check(problem: HeatProblem):
    """Gradient checks on a short copy of the problem (the checks run the
    complex-step forward sweep in Python, too slow for the full length)."""
    small = build(n_points=min(40, len(problem.grid)), n_steps=400)
    rng = np.random.default_rng(1)
    return check_gradients(small.objective, rng.standard_normal(N_MODES))
