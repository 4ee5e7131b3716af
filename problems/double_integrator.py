"""Minimum control energy for the double integrator (rest to rest in unit time).

Move a unit mass along a line, ``x'' = u``, from rest at 0 to rest at 1 in
time 1 with the least control energy:

    minimise  J = ∫_0^1 u(t)² dt
    subject to  x' = v,  v' = u,  x(0) = v(0) = 0,  x(1) = 1,  v(1) = 0.

The continuous optimum is ``u(t) = 6 - 12 t`` with ``J = 12`` (Bryson & Ho
[1]_, minimum-energy problems of section 5.3: the costate is linear in time, so
the control is too).

Transcription: ``u`` piecewise constant on ``N`` equal steps, classical RK4
(exact here: within a step the state is a quadratic in ``t``), the running
cost ``Σ_k dt u_k²`` (exact for piecewise-constant ``u``), the terminal
conditions as equality constraints ``x_N = (1, 0)`` solved by SLSQP with
constraint Jacobians from one adjoint sweep per row.  The discrete optimum
lies above 12 by ``O(dt²)``: the best piecewise-constant control is the
step-average of ``6 - 12 t`` corrected so the terminal conditions still hold
(at ``N = 200``, ``J ≈ 12.0003``, relative error 2.5e-5).

References
----------
.. [1] A. E. Bryson and Y.-C. Ho, *Applied Optimal Control*, Hemisphere,
   1975, chapter 5 (linear systems, quadratic criteria; terminal
   constraints).
"""

from __future__ import annotations

import functools

import numpy as np

import adjoint

from ._control_common import check_at_guess, energy_cost, no_data, plot_solution

DESCRIPTION = "Minimum-energy rest-to-rest move of x'' = u in unit time (J = 12)."

N_STEPS = 200
HORIZON = 1.0
X0 = np.array([0.0, 0.0])  # position, velocity
X_FINAL = np.array([1.0, 0.0])

REFERENCE = {
    "J": 12.0,
    "u(t)": "6 - 12 t",
    "tolerance": 1e-3,
    "source": "Bryson & Ho 1975, ch. 5 (analytic minimum-energy control)",
    "grid": f"{N_STEPS} RK4 steps, piecewise-constant control",
}


def optimal_control(t):
    """The continuous optimum ``u(t) = 6 - 12 t``."""
    return 6.0 - 12.0 * np.asarray(t, dtype=np.float64)


@functools.cache
def _system():
    import sympy as sp

    x, v, u = sp.symbols("x v u")
    return adjoint.ODESystem.from_sympy(
        [v, u], [x, v], [], [u], name="double_integrator"
    )


def build(
    data=None, *, N: int = N_STEPS, scheme: str = "rk4"
) -> adjoint.ControlProblem:
    """The problem on ``N`` steps of ``1/N``, with ``x_N = (1, 0)`` as constraints."""
    no_data("double-integrator", data)
    N = adjoint._validate.positive_int("N", N)
    dt = HORIZON / N
    seq = adjoint.ODESequence(
        _system(), scheme=scheme, t0=0.0, dt=dt, N=N, consts=[dt], **energy_cost()
    )
    return adjoint.ControlProblem(
        seq,
        X0,
        duration=HORIZON,
        constraints=[adjoint.final_state(X_FINAL)],
        state_names=["position x", "velocity v"],
        control_names=["force u"],
    )


def initial_guess(problem) -> np.ndarray:
    """No force: cost zero, terminal conditions violated."""
    return np.zeros(problem.size)


def solve(problem, method: str | None = None, progress=None):
    """SLSQP with the terminal equalities (default)."""
    result = adjoint.optimise(
        problem, initial_guess(problem), method=method or "SLSQP", progress=progress
    )
    ref = REFERENCE["J"]
    result.table = [
        ("J = ∫u² dt", result.fun, None),
        ("J continuous optimum", ref, None),
        ("relative error", abs(result.fun - ref) / ref, None),
        ("terminal violation", result.max_violation, None),
        ("steps N", problem.N, None),
    ]
    return result


def plot(problem, result):
    """Position, velocity and force, with ``u = 6 - 12 t`` dashed."""
    t = np.linspace(0.0, HORIZON, 201)
    return plot_solution(
        problem,
        result,
        title=f"Double integrator, N = {problem.N}: J = {result.fun:.6f}",
        references={
            "6 - 12 t": (t, optimal_control(t), problem.control_names[0]),
            "t²(3 - 2t)": (t, t**2 * (3 - 2 * t), problem.state_names[0]),
        },
    )


def check(problem):
    """Gradient and constraint-Jacobian checks at a varied control."""
    t = problem.control_times()
    return check_at_guess(problem, problem.pack(np.sin(7 * t) + t))
