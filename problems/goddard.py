"""Goddard rocket, maximum ascent (COPS problem 10), normalised, free final time.

A rocket climbs vertically; with altitude ``h``, velocity ``v``, mass ``m``
and thrust ``u`` (normalised so that ``h(0) = m(0) = g0 = 1``):

    h' = v,
    v' = (u - D(h, v)) / m - 1 / h²,
    m' = -u / c,
    D(h, v) = D_c v² exp(-h_c (h - 1)),

with ``c = 0.5``, ``D_c = 0.5 · 620``, ``h_c = 500``, ``0 ≤ u ≤ 3.5``,
``h(0) = 1``, ``v(0) = 0``, ``m(0) = 1`` and the final mass ``m(T) = 0.6``; the
final time ``T`` is free.  Maximise ``h(T)``: here minimise ``J = -h(T)``.
The optimal thrust is bang (full thrust), then singular (thrust balancing
drag), then off.

Transcription: time is scaled, ``t = T s`` with ``s ∈ [0, 1]``, so the
integrated system is ``dx/ds = T f(x, u)`` and ``T`` is a free parameter
(:func:`adjoint.time_scaled`); ``u`` is piecewise constant on ``N_STEPS``
equal steps, classical RK4 on the same grid; ``m(T) = 0.6`` is a terminal
equality constraint; SLSQP with the adjoint gradient and the constraint
Jacobian by one adjoint sweep.  The right-hand side is given as a function
only (:meth:`adjoint.ODESystem.from_rhs`), so its Jacobian products are
complex-step (exact to rounding).

Reference value: ``h(T) ≈ 1.0128`` (COPS 3.0 [1]_ reports 1.01283 for
problem 10, for which ``T ≈ 0.1989``).  At ``N = 100`` steps this
transcription reaches ``h(T) = 1.012837`` with ``T = 0.19882``.

References
----------
.. [1] E. D. Dolan, J. J. Moré and T. S. Munson, "Benchmarking optimization
   software with COPS 3.0", Argonne National Laboratory, Technical Memorandum
   ANL/MCS-TM-273, 2004 (COPS 2.0 was ANL/MCS-TM-246), problem 10 "Goddard
   rocket"; after R. H. Goddard, "A method of reaching extreme altitudes",
   Smithsonian Misc. Collections 71 (1919).
"""

from __future__ import annotations

import functools

import numpy as np

import adjoint
from adjoint.kernels import Kernel

from ._control_common import check_at_guess, no_data, plot_solution

DESCRIPTION = "Goddard rocket maximum ascent (COPS 10): thrust in [0, 3.5], free T."

# ---- model constants (normalised units: h0 = m0 = g0 = 1) ----
C_EXHAUST = 0.5  # c = 0.5 sqrt(g0 h0)
DRAG = 0.5 * 620.0  # D_c = 0.5 v_c m0 / g0
H_SCALE = 500.0  # h_c
THRUST_MAX = 3.5  # 3.5 g0 m0
FINAL_MASS = 0.6  # m_c m0
X0 = np.array([1.0, 0.0, 1.0])  # h, v, m

# ---- transcription ----
N_STEPS = 100
T_GUESS = 0.2  # initial guess of the final time
T_LOWER, T_UPPER = 0.1, 1.0  # bounds on the final time (as in COPS)

REFERENCE = {
    "h(T)": 1.0128,
    "h(T) COPS 3.0 table": 1.01283,
    "tolerance": 2e-3,
    "source": "Dolan, Moré & Munson 2004 (COPS 3.0, ANL/MCS-TM-273), problem 10",
    "grid": f"{N_STEPS} RK4 steps, piecewise-constant thrust, free T",
}


# ---- kernels (complex-safe: arithmetic and exp only) ----
# These constants are inlined by hand: Numba freezes module globals at compile
# time, and a cached kernel would not see a changed global.


def _goddard_rhs(t, x, p, u, out):
    T = p[0]
    drag = 310.0 * x[1] * x[1] * np.exp(-500.0 * (x[0] - 1.0))
    out[0] = T * x[1]
    out[1] = T * ((u[0] - drag) / x[2] - 1.0 / (x[0] * x[0]))
    out[2] = -T * u[0] / 0.5
    return 0


def _altitude_cost(x, p, consts, data):
    return -x[0]


def _altitude_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    x_bar[0] -= phi_bar
    return 0


@functools.cache
def _kernels():
    system = adjoint.ODESystem.from_rhs(_goddard_rhs, n=3, n_p=1, n_u=1, name="goddard")
    return system, {
        "terminal_cost": Kernel(_altitude_cost, "terminal_cost"),
        "terminal_cost_vjp": Kernel(_altitude_cost_vjp, "terminal_cost_vjp"),
    }


def build(
    data=None, *, N: int = N_STEPS, scheme: str = "rk4"
) -> adjoint.ControlProblem:
    """The problem on ``N`` steps of the scaled time (no data file)."""
    no_data("goddard", data)
    N = adjoint._validate.positive_int("N", N)
    system, costs = _kernels()
    seq = adjoint.ODESequence(system, scheme=scheme, t0=0.0, dt=1.0 / N, N=N, **costs)
    return adjoint.ControlProblem(
        seq,
        X0,
        p=[T_GUESS],
        free_p=[0],
        final_time=0,
        u_lower=0.0,
        u_upper=THRUST_MAX,
        p_lower=[T_LOWER],
        p_upper=[T_UPPER],
        constraints=[adjoint.final_state([FINAL_MASS], [2], name="final mass")],
        state_names=["altitude h", "velocity v", "mass m"],
        control_names=["thrust u"],
    )


def initial_guess(problem) -> np.ndarray:
    """Full thrust until the fuel is spent, then coast, with ``T = 0.2``.

    Meets the final-mass constraint exactly; its altitude, 1.0122, is already
    close to the optimum, and it keeps the rocket away from ``h < 1`` where
    the drag ``exp(-500 (h - 1))`` overflows.
    """
    N = problem.N
    if problem.parameterisation.kind != "constant" or problem.n_nodes != N:
        raise NotImplementedError(
            "initial_guess assumes one constant thrust value per step; build the "
            "problem with the default control parameterisation."
        )
    fuel_steps = (1.0 - FINAL_MASS) * C_EXHAUST * N / (T_GUESS * THRUST_MAX)
    full = min(int(fuel_steps), N - 1)
    u = np.zeros(N)
    u[:full] = THRUST_MAX
    u[full] = THRUST_MAX * (fuel_steps - full)
    return problem.pack(u, [T_GUESS])


def solve(problem, method: str | None = None, progress=None):
    """SLSQP with the final-mass equality (default)."""
    result = adjoint.optimise(
        problem, initial_guess(problem), method=method or "SLSQP", progress=progress
    )
    ref = REFERENCE["h(T)"]
    altitude = -result.fun
    result.table = [
        ("final altitude h(T)", altitude, None),
        ("h(T) COPS 3.0", REFERENCE["h(T) COPS 3.0 table"], None),
        ("|h(T) - 1.0128|", abs(altitude - ref), None),
        ("final time T", problem.horizon(result.x), None),
        ("final mass m(T)", float(problem.states(result.x)[-1, 2]), None),
        ("steps N", problem.N, None),
    ]
    return result


def plot(problem, result):
    """Altitude, velocity, mass and thrust against time."""
    return plot_solution(
        problem,
        result,
        title=(
            f"Goddard rocket, N = {problem.N}: h(T) = {-result.fun:.6f}, "
            f"T = {problem.horizon(result.x):.4f}"
        ),
    )


def check(problem):
    """Gradient and constraint-Jacobian checks at the initial guess, perturbed."""
    w = initial_guess(problem)
    n_u = problem.n_nodes * problem.m
    w[:n_u] = np.clip(w[:n_u] + 0.3 * np.cos(np.arange(n_u)), 0.0, THRUST_MAX)
    return check_at_guess(problem, w)
