"""Swing a damped pendulum from hanging to upright with a bounded torque.

A pendulum (angle ``θ`` from hanging straight down, rate ``ω``) with viscous
damping, in units where ``g / l = 1`` and ``m l² = 1``:

    θ' = ω,
    ω' = u - b ω - sin θ,        b = DAMPING,
    |u| ≤ U_MAX,  θ(0) = ω(0) = 0,  θ(T) = π,  ω(T) = 0,

minimising the control energy ``J = ∫_0^T u² dt``.  With ``U_MAX = 0.5`` the
torque cannot lift the pendulum directly (gravity needs up to 1), so the
optimum pumps energy in over a few swings and rides the bound.

Transcription: ``u`` piecewise constant on ``N_STEPS`` steps of ``T / N``,
classical RK4, the running cost ``Σ_k dt u_k²`` (exact for
piecewise-constant ``u``), the upright state as two terminal equality
constraints, SLSQP with the box bounds.  The problem is not convex; from the
guess ``u = U_MAX cos t`` (and from ``U_MAX sin t``) SLSQP finds the same
local optimum, ``J = 1.754997`` at ``N = 100``.

Reference: there is no published optimum for this variant; the tests replay
the optimal controls with SciPy's ``solve_ivp`` (DOP853) and check that the
pendulum ends upright and at rest, and that the torque bound holds.  The
formulation follows the minimum-energy problems with terminal constraints of
Bryson & Ho [1]_.

Run ``python -m problems.pendulum_swingup [DIR]`` to write the figure and an
animation (GIF with Pillow, else MP4 with ffmpeg) to ``DIR``.

References
----------
.. [1] A. E. Bryson and Y.-C. Ho, *Applied Optimal Control*, Hemisphere,
   1975, chapter 2 (terminal constraints) and chapter 3 (bounded controls).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

import adjoint

from ._control_common import check_at_guess, energy_cost, no_data, plot_solution

DESCRIPTION = "Damped pendulum swing-up to upright with bounded torque (figure + GIF)."

DAMPING = 0.1  # b, per unit time
U_MAX = 0.5  # torque bound (gravity torque is at most 1)
HORIZON = 10.0  # T, about 1.6 natural periods
N_STEPS = 100
X0 = np.array([0.0, 0.0])  # hanging, at rest
X_FINAL = np.array([np.pi, 0.0])  # upright, at rest

REFERENCE = {
    "theta(T)": float(np.pi),
    "omega(T)": 0.0,
    "torque bound": U_MAX,
    "J (this transcription, N = 100)": 1.754997,
    "source": "no published optimum; upright end state checked by solve_ivp replay",
}


@functools.cache
def _system():
    import sympy as sp

    theta, omega, u = sp.symbols("theta omega u")
    f = [omega, u - DAMPING * omega - sp.sin(theta)]
    return adjoint.ODESystem.from_sympy(f, [theta, omega], [], [u], name="pendulum")


def build(
    data=None, *, N: int = N_STEPS, scheme: str = "rk4"
) -> adjoint.ControlProblem:
    """The problem on ``N`` steps of ``HORIZON / N`` (no data file)."""
    no_data("pendulum-swingup", data)
    N = adjoint._validate.positive_int("N", N)
    dt = HORIZON / N
    seq = adjoint.ODESequence(
        _system(), scheme=scheme, t0=0.0, dt=dt, N=N, consts=[dt], **energy_cost()
    )
    return adjoint.ControlProblem(
        seq,
        X0,
        u_lower=-U_MAX,
        u_upper=U_MAX,
        duration=HORIZON,
        constraints=[adjoint.final_state(X_FINAL, name="upright at rest")],
        state_names=["angle θ", "rate ω"],
        control_names=["torque u"],
    )


def initial_guess(problem) -> np.ndarray:
    """A resonant push, ``u = U_MAX cos t`` (the natural frequency is 1)."""
    t = problem.control_times()
    return problem.pack(U_MAX * np.cos(t))


def solve(problem, method: str | None = None, progress=None):
    """SLSQP with the torque bounds and the upright end state (default)."""
    result = adjoint.optimise(
        problem, initial_guess(problem), method=method or "SLSQP", progress=progress
    )
    x_end = problem.states(result.x)[-1]
    result.table = [
        ("J = ∫u² dt", result.fun, None),
        ("θ(T) - π", float(x_end[0] - np.pi), None),
        ("ω(T)", float(x_end[1]), None),
        ("max |u|", float(np.max(np.abs(problem.controls(result.x)))), None),
        ("steps N", problem.N, None),
    ]
    return result


def plot(problem, result):
    """Angle, rate and torque against time, upright level dashed."""
    T = problem.horizon()
    return plot_solution(
        problem,
        result,
        title=f"Pendulum swing-up, N = {problem.N}: J = {result.fun:.6f}",
        references={"upright (π)": ([0.0, T], [np.pi, np.pi], problem.state_names[0])},
    )


def animate(
    problem, result, path="pendulum_swingup.gif", *, fps: int = 15, max_frames: int = 60
) -> Path:
    """Save an animation of the swing-up (``.gif`` with Pillow, ``.mp4`` with ffmpeg).

    Raises ``RuntimeError`` with what to install when the writer is missing.
    """
    from adjoint.plotting import animate_pendulum

    xs = problem.states(result.x)
    u = np.append(problem.thetas(result.x)[:, 0], 0.0)
    return animate_pendulum(
        problem.times(result.x),
        xs[:, 0],
        path,
        torque=u,
        fps=fps,
        max_frames=max_frames,
    )


def check(problem):
    """Gradient and constraint-Jacobian checks at the initial guess."""
    return check_at_guess(problem, initial_guess(problem))


def main(out_dir: str = ".", *, max_frames: int = 60) -> int:
    """Solve, then write ``pendulum_swingup.png`` and the animation to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problem = build()
    result = solve(problem)
    for name, value, _ in result.table:
        print(f"{name:>12}: {value:.8g}")
    figure = plot(problem, result)
    figure.savefig(out / "pendulum_swingup.png", dpi=120)
    print(f"wrote {out / 'pendulum_swingup.png'}")
    for suffix in (".gif", ".mp4"):
        try:
            path = animate(
                problem,
                result,
                out / f"pendulum_swingup{suffix}",
                max_frames=max_frames,
            )
        except RuntimeError as err:
            print(f"no {suffix} animation: {err}")
            continue
        print(f"wrote {path}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
