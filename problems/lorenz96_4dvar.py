"""Cycled strong-constraint 4D-Var on the Lorenz-96 model.

Model (Lorenz 1996), ``n = 40`` variables on a ring, forcing ``F = 8``::

    dx_i/dt = (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F,

integrated with RK4 at ``dt = 0.01`` (one time unit is about five "days" of
error growth; ``0.05`` is the customary "6 hours").

Data assimilation as operational centres run it, in miniature: a truth run
on the attractor; every ``OBS_EVERY`` steps, noisy observations
(``σ_o = OBS_ERROR``) of every other variable; assimilation windows of
``WINDOW`` steps.  In window ``j`` strong-constraint 4D-Var minimises over the
initial state ``x_0`` of the window

    J(x_0) = ½ (x_0 − x_b)ᵀ B⁻¹ (x_0 − x_b)
             + ½ Σ_{k obs} (H x_k − y_k)ᵀ R⁻¹ (H x_k − y_k),

``x_{k+1} = M(x_k)`` the RK4 step, ``B = σ_b² C`` a static background
covariance (``C = I`` by default; Gaussian correlations over
``BACKGROUND_LENGTH`` grid points if set) and
``R = σ_o² I``.  The analysis trajectory of window ``j`` ends where the
background ``x_b`` of window ``j + 1`` starts (non-overlapping windows);
``N_WINDOWS`` windows are cycled.  For long windows (about one time unit and
more) the cost has many minima; ``qsva=True`` (or a number of observation
times per stage) lengthens the window step by
step from the background (quasi-static variational assimilation, Pires,
Vautard & Talagrand 1996), each minimisation started from the previous one.

The gradient of each window's cost is the discrete adjoint of the RK4
trajectory (:class:`~adjoint.ODESequence`), optionally checkpointed.

Reference: over the cycled period (after ``BURN_IN`` windows), the mean
analysis error (RMS over the 40 variables, along the analysis trajectories)
must be well below the background error (the same along the background
trajectories) and below the observation error ``σ_o``.

References
----------
E. N. Lorenz, "Predictability: a problem partly solved", Proc. ECMWF
Seminar on Predictability, 1996.
F. Rabier and Z. Liu, "Variational data assimilation: theory and overview",
Proc. ECMWF Seminar, 2003.
C. Pires, R. Vautard and O. Talagrand, "On extending the limits of variational
assimilation in nonlinear chaotic systems", Tellus 48A (1996) 96-121.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from adjoint import (
    Checkpointing,
    Objective,
    ODESequence,
    ODESystem,
    check_gradients,
)
from adjoint.kernels import Kernel

DESCRIPTION = "Cycled strong-constraint 4D-Var on Lorenz-96 (40 variables, RK4)"
N_VARS = 40
FORCING = 8.0
DT = 0.01  # RK4 step, model time units
WINDOW = 40  # steps per assimilation window (0.4 time units)
OBS_EVERY = 5  # steps between observation times (0.05, "6 hours")
OBSERVED = tuple(range(0, N_VARS, 2))  # every other variable
OBS_ERROR = 1.0  # σ_o
BACKGROUND_ERROR = 0.8  # σ_b of the static B
BACKGROUND_LENGTH = 0.0  # correlation length of B in grid points (0: diagonal)
N_WINDOWS = 300
BURN_IN = 30  # windows left out of the error statistics
SPIN_UP = 10.0  # time units run before the truth starts, to reach the attractor
FIRST_BACKGROUND_ERROR = 1.0  # error of the first window's background
SEED = 96
MAX_ITER = 100  # iterations per minimisation
GTOL = 1e-5  # on the gradient in the control variable, where J_b = ½|v|²
# Dense BFGS: 40 unknowns; SciPy's L-BFGS-B was 13x slower here with a
# multi-threaded OpenBLAS (thread wake-ups in every iteration).
METHOD = "BFGS"
REFERENCE = {"analysis_rmse_below": OBS_ERROR}


# ---- model and cost kernels ----


def l96_rhs(t, x, p, u, out):
    """Lorenz-96 ``f_i = (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F`` (cyclic)."""
    n = x.shape[0]
    for i in range(n):
        out[i] = (x[(i + 1) % n] - x[i - 2]) * x[i - 1] - x[i] + p[0]
    return 0


def l96_rhs_vjp(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    """Vector-Jacobian product of :func:`l96_rhs`."""
    n = x.shape[0]
    for i in range(n):
        fb = f_bar[i]
        x_bar[(i + 1) % n] += fb * x[i - 1]
        x_bar[i - 2] -= fb * x[i - 1]
        x_bar[i - 1] += fb * (x[(i + 1) % n] - x[i - 2])
        x_bar[i] -= fb
        p_bar[0] += fb
    return 0


def l96_rhs_jvp(t, x, p, u, x_tan, p_tan, u_tan, out):
    """Jacobian-vector product of :func:`l96_rhs`."""
    n = x.shape[0]
    for i in range(n):
        out[i] = (
            (x_tan[(i + 1) % n] - x_tan[i - 2]) * x[i - 1]
            + (x[(i + 1) % n] - x[i - 2]) * x_tan[i - 1]
            - x_tan[i]
            + p_tan[0]
        )
    return 0


# consts: σ_o⁻² | B⁻¹ (n × n, row-major).  data row 0: the background x_b;
# rows k ≥ 1: observations, NaN where a variable is not observed.


def var_cost(k, x, theta, p, consts, data):
    """Background term at ``k = 0``, observation misfit at ``k ≥ 1``."""
    n = x.shape[0]
    total = 0.0 * x[0]
    if k == 0:
        for i in range(n):
            di = x[i] - data[i]
            for j in range(n):
                total += 0.5 * di * consts[1 + i * n + j] * (x[j] - data[j])
        return total
    for i in range(n):
        if not np.isnan(data[i]):
            total += 0.5 * consts[0] * (x[i] - data[i]) ** 2
    return total


def var_cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    """Vector-Jacobian product of :func:`var_cost`."""
    n = x.shape[0]
    if k == 0:
        for i in range(n):
            acc = 0.0 * x[0]
            for j in range(n):
                acc += consts[1 + i * n + j] * (x[j] - data[j])
            x_bar[i] += g_bar * acc
        return 0
    for i in range(n):
        if not np.isnan(data[i]):
            x_bar[i] += g_bar * consts[0] * (x[i] - data[i])
    return 0


def obs_cost(x, p, consts, data):
    """Observation misfit ``½ σ_o⁻² Σ_i (x_i − y_i)²`` at the final state."""
    total = 0.0 * x[0]
    for i in range(x.shape[0]):
        if not np.isnan(data[i]):
            total += 0.5 * consts[0] * (x[i] - data[i]) ** 2
    return total


def obs_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    """Vector-Jacobian product of :func:`obs_cost`."""
    for i in range(x.shape[0]):
        if not np.isnan(data[i]):
            x_bar[i] += phi_bar * consts[0] * (x[i] - data[i])
    return 0


@functools.cache
def system() -> ODESystem:
    """Lorenz-96 with hand-written Jacobian products (``p = (F,)``)."""
    return ODESystem.from_kernels(
        l96_rhs, l96_rhs_vjp, l96_rhs_jvp, n=N_VARS, n_p=1, name="lorenz96"
    )


@functools.cache
def _cost_kernels():
    return (
        Kernel(var_cost, "running_cost"),
        Kernel(var_cost_vjp, "running_cost_vjp"),
        Kernel(obs_cost, "terminal_cost"),
        Kernel(obs_cost_vjp, "terminal_cost_vjp"),
    )


# ---- the problem ----


@dataclass
class FourDVarProblem:
    """Truth, observations and the assimilation settings.

    Attributes
    ----------
    truth : ndarray, shape (n_windows * window + 1, n)
        The true states at every model step.
    obs : ndarray, shape (n_windows * window + 1, n)
        Observations, NaN where (and when) nothing is observed.
    first_background : ndarray, shape (n,)
    B_inv : ndarray, shape (n, n)
    """

    truth: np.ndarray
    obs: np.ndarray
    first_background: np.ndarray
    B_inv: np.ndarray
    B_sqrt: np.ndarray
    window: int
    n_windows: int
    obs_every: int
    obs_error: float
    background_error: float
    dt: float = DT
    checkpoint: Checkpointing | None = None
    settings: dict = field(default_factory=dict)

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.truth.shape[0]) * self.dt


def background_covariance(n=N_VARS, sigma=BACKGROUND_ERROR, length=BACKGROUND_LENGTH):
    """``(B⁻¹, B^{1/2})`` for ``B = σ_b² C``, ``C_ij = exp(−d_ij² / 2L²)`` with
    ``d_ij`` the distance on the ring (``length = 0``: ``C = I``)."""
    i = np.arange(n)
    d = np.abs(i[:, None] - i[None, :])
    d = np.minimum(d, n - d)
    C = np.exp(-0.5 * (d / length) ** 2) if length > 0 else np.eye(n)
    w, V = np.linalg.eigh(sigma**2 * C)
    w = np.maximum(w, 1e-12 * w.max())
    return (V / w) @ V.T, (V * np.sqrt(w)) @ V.T


def integrate(x0, n_steps, dt=DT, forcing=FORCING):
    """RK4 trajectory of Lorenz-96, shape (n_steps + 1, n) (the same steps as
    the sequences use)."""
    seq = ODESequence(system(), scheme="rk4", dt=dt, N=max(int(n_steps), 1))
    xs = seq._forward_impl(
        np.asarray(x0, float), np.zeros((seq.N, 0)), np.array([forcing])
    ).xs
    return xs[: int(n_steps) + 1]


def build(
    data=None,
    *,
    n_windows: int = N_WINDOWS,
    window: int = WINDOW,
    obs_every: int = OBS_EVERY,
    obs_error: float = OBS_ERROR,
    background_error: float = BACKGROUND_ERROR,
    background_length: float = BACKGROUND_LENGTH,
    seed: int = SEED,
    checkpoint: Checkpointing | None = None,
) -> FourDVarProblem:
    """A twin experiment: truth, observations and the first background."""
    if data is not None:
        raise ValueError(
            "The lorenz96-4dvar problem makes its own twin-experiment data; omit "
            "`--data`."
        )
    if window % obs_every:
        raise ValueError(
            f"`window` = {window} must be a multiple of `obs_every` = {obs_every}, "
            "so that every window ends on an observation time."
        )
    rng = np.random.default_rng(seed)
    x = FORCING + rng.standard_normal(N_VARS)
    x = integrate(x, int(SPIN_UP / DT))[-1]
    n_total = n_windows * window
    truth = integrate(x, n_total)
    obs = np.full_like(truth, np.nan)
    steps = np.arange(obs_every, n_total + 1, obs_every)
    cols = np.array(OBSERVED)
    obs[np.ix_(steps, cols)] = truth[
        np.ix_(steps, cols)
    ] + obs_error * rng.standard_normal((len(steps), len(cols)))
    first = truth[0] + FIRST_BACKGROUND_ERROR * rng.standard_normal(N_VARS)
    B_inv, B_sqrt = background_covariance(
        sigma=background_error, length=background_length
    )
    return FourDVarProblem(
        truth,
        obs,
        first,
        B_inv,
        B_sqrt,
        window,
        n_windows,
        obs_every,
        obs_error,
        background_error,
        checkpoint=checkpoint,
    )


def window_objective(
    problem: FourDVarProblem, background, j, *, length=None, checkpoint=None
) -> Objective:
    """The 4D-Var cost of window ``j`` (its first ``length`` steps) around
    ``background``, as an :class:`~adjoint.Objective` in ``x_0``."""
    L = problem.window if length is None else int(length)
    k0 = j * problem.window
    data = problem.obs[k0 : k0 + L + 1].copy()
    data[0] = background
    consts = np.concatenate([[problem.obs_error**-2], problem.B_inv.ravel()])
    g, g_vjp, phi, phi_vjp = _cost_kernels()
    seq = ODESequence(
        system(),
        scheme="rk4",
        dt=problem.dt,
        N=L,
        t0=k0 * problem.dt,
        consts=consts,
        data=data,
        running_cost=g,
        running_cost_vjp=g_vjp,
        terminal_cost=phi,
        terminal_cost_vjp=phi_vjp,
    )
    checkpoint = problem.checkpoint if checkpoint is None else checkpoint
    return Objective(seq, x0=background, p=[FORCING], wrt="x0", checkpoint=checkpoint)


def initial_guess(problem: FourDVarProblem) -> np.ndarray:
    """The first window's background."""
    return problem.first_background.copy()


def analyse(
    problem: FourDVarProblem,
    background,
    j,
    *,
    qsva=False,
    method=METHOD,
    checkpoint=None,
):
    """Minimise window ``j``'s cost from ``background``: ``(x_a, OptimizeResult)``.

    The minimisation runs in the control variable ``v``, ``x_0 = x_b + U v``
    with ``U = B^{1/2}``, where the background term is ``½|v|²`` and the
    Hessian ``I + Uᵀ (∂²J_o) U`` is well conditioned (the operational
    preconditioning); ``dJ/dv = Uᵀ dJ/dx_0`` from the adjoint.  With ``qsva``
    the window grows ``qsva`` observation times at a time (one for
    ``True``), each minimisation starting from the last.
    """
    W, every = problem.window, problem.obs_every
    if qsva:
        grow = every * int(qsva)
        lengths = list(range(grow, W, grow)) + [W]
    else:
        lengths = [W]
    xb = np.asarray(background, float).copy()
    U = problem.B_sqrt
    v = np.zeros_like(xb)
    nit = nfev = 0
    for L in lengths:
        obj = window_objective(problem, xb, j, length=L, checkpoint=checkpoint)

        def fun(v, obj=obj):
            J, g = obj.value_and_grad(xb + U @ v)
            return J, U.T @ g

        res = minimize(
            fun, v, jac=True, method=method, options={"maxiter": MAX_ITER, "gtol": GTOL}
        )
        v = res.x
        nit += res.nit
        nfev += res.nfev
    res.nit, res.nfev, res.njev = nit, nfev, nfev
    res.checkpoint_stats = obj.last_checkpoint_stats
    return xb + U @ v, res


@dataclass
class CycleResult:
    """What the cycled assimilation produced.

    Attributes
    ----------
    analysis, background : ndarray, shape (n_windows * window + 1, n)
        The analysis and background trajectories, window after window (the
        last state of a window is the first of the next: the background
        starts there, the analysis replaces it).
    analysis_rmse, background_rmse : ndarray, shape (n_windows * window + 1,)
        RMS error over the variables at every step.
    x : ndarray
        The last analysis (state at the start of the last window).
    """

    analysis: np.ndarray
    background: np.ndarray
    analysis_rmse: np.ndarray
    background_rmse: np.ndarray
    x: np.ndarray
    fun: float
    nit: int
    nfev: int
    njev: int
    seconds: float
    burn_in_steps: int
    obs_error: float
    method: str = METHOD
    success: bool = True
    message: str = ""
    checkpoint_stats: object = None
    table: list = field(default_factory=list)

    @property
    def mean_analysis_rmse(self) -> float:
        return float(np.mean(self.analysis_rmse[self.burn_in_steps :]))

    @property
    def mean_background_rmse(self) -> float:
        return float(np.mean(self.background_rmse[self.burn_in_steps :]))

    def to_json(self) -> dict:
        return {
            "mean_analysis_rmse": self.mean_analysis_rmse,
            "mean_background_rmse": self.mean_background_rmse,
            "obs_error": self.obs_error,
            "seconds": self.seconds,
            "checkpoint": None
            if self.checkpoint_stats is None
            else str(self.checkpoint_stats),
        }


def cycle(
    problem: FourDVarProblem,
    *,
    n_windows: int | None = None,
    qsva=False,
    method: str = METHOD,
    checkpoint=None,
    progress=None,
) -> CycleResult:
    """Run the assimilation cycle: analyse a window, forecast its end as the
    next background, repeat."""
    W = problem.window
    n_windows = problem.n_windows if n_windows is None else int(n_windows)
    n_total = n_windows * W
    analysis = np.empty((n_total + 1, N_VARS))
    background = np.empty((n_total + 1, N_VARS))
    xb = problem.first_background.copy()
    nit = nfev = 0
    fun = 0.0
    start = time.perf_counter()
    stats = None
    for j in range(n_windows):
        k0 = j * W
        background[k0 : k0 + W + 1] = integrate(xb, W)
        xa, res = analyse(
            problem, xb, j, qsva=qsva, method=method, checkpoint=checkpoint
        )
        analysis[k0 : k0 + W + 1] = integrate(xa, W)
        nit += res.nit
        nfev += res.nfev
        fun += res.fun
        stats = res.checkpoint_stats
        xb = analysis[k0 + W].copy()
        if progress is not None:
            progress(res)
    seconds = time.perf_counter() - start
    truth = problem.truth[: n_total + 1]
    a_rmse = np.sqrt(np.mean((analysis - truth) ** 2, axis=1))
    b_rmse = np.sqrt(np.mean((background - truth) ** 2, axis=1))
    burn = min(BURN_IN, n_windows // 2) * W
    result = CycleResult(
        analysis,
        background,
        a_rmse,
        b_rmse,
        analysis[n_total - W],
        fun,
        nit,
        nfev,
        nfev,
        seconds,
        burn,
        problem.obs_error,
        method,
        checkpoint_stats=stats,
    )
    result.table = [
        ("mean analysis RMSE", result.mean_analysis_rmse, None),
        ("mean background RMSE", result.mean_background_rmse, None),
        ("observation error σ_o", problem.obs_error, None),
        ("windows", n_windows, None),
    ]
    return result


def solve(problem: FourDVarProblem, method: str | None = None, progress=None):
    """Cycle 4D-Var over all windows (see :func:`cycle`)."""
    return cycle(problem, method=method or METHOD, progress=progress)


def plot(
    problem: FourDVarProblem,
    result: CycleResult,
    *,
    variables=(0, 1, 2),
    span: float = 5.0,
):
    """Truth, background and analysis of a few variables over the last ``span``
    time units; analysis and background error against time."""
    from matplotlib.figure import Figure

    t = problem.times[: result.analysis.shape[0]]
    fig = Figure(figsize=(9.0, 2.0 * (len(variables) + 1.5)), layout="constrained")
    axes = fig.subplots(
        len(variables) + 1, 1, sharex=False, height_ratios=[1] * len(variables) + [1.5]
    )
    shown = t >= t[-1] - span
    for ax, i in zip(axes, variables):
        ax.plot(
            t[shown],
            problem.truth[: len(t)][shown, i],
            color="k",
            lw=1.2,
            label="truth",
        )
        ax.plot(
            t[shown],
            result.background[shown, i],
            color="C0",
            lw=0.9,
            label="background",
        )
        ax.plot(
            t[shown],
            result.analysis[shown, i],
            color="C3",
            lw=0.9,
            ls="--",
            label="analysis",
        )
        obs = problem.obs[: len(t)][shown, i]
        if np.isfinite(obs).any():
            ax.plot(t[shown], obs, ".", color="0.4", ms=3, label="observations")
        ax.set_ylabel(f"x_{i}" + ("" if i in OBSERVED else " (unobserved)"))
    axes[0].legend(loc="upper right", ncol=4, fontsize="small")
    ax = axes[-1]
    W = problem.window
    n_w = (len(t) - 1) // W
    t_w = t[: n_w * W + 1 : W]
    for rmse, color, label in (
        (result.background_rmse, "C0", "background error"),
        (result.analysis_rmse, "C3", "analysis error"),
    ):
        per_window = rmse[: n_w * W].reshape(n_w, W).mean(axis=1)
        ax.plot(
            t_w,
            np.append(per_window, per_window[-1]),
            color=color,
            lw=0.9,
            drawstyle="steps-post",
            label=f"{label} (window mean)",
        )
    ax.axhline(problem.obs_error, color="0.4", ls=":", label="observation error σ_o")
    ax.set_yscale("log")
    ax.set_xlabel("time (model units)")
    ax.set_ylabel("RMS error")
    ax.legend(loc="upper right", ncol=3, fontsize="small")
    fig.suptitle(
        f"Cycled 4D-Var on Lorenz-96: {result.analysis.shape[0] // problem.window} "
        f"windows of {problem.window * problem.dt:g}; mean analysis error "
        f"{result.mean_analysis_rmse:.3f}, background {result.mean_background_rmse:.3f}"
    )
    return fig


def check(problem: FourDVarProblem):
    """Gradient checks of the first window's cost at its background, on the
    window's first two observation times (the checks' complex-step sweep is
    a Python loop)."""
    obj = window_objective(
        problem,
        problem.first_background,
        0,
        length=min(2 * problem.obs_every, problem.window),
    )
    return check_gradients(obj, obj.z0)
