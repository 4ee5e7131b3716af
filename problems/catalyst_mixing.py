"""Catalyst mixing in a tubular plug-flow reactor (COPS problem 14; mintOC).

Two catalysts are mixed along a reactor of unit length, ``u(t)`` being the
fraction of the first at position ``t``; the reactions ``S1 ⇌ S2 → S3`` give

    x1' = u (10 x2 - x1),
    x2' = u (x1 - 10 x2) - (1 - u) x2,      x(0) = (1, 0),  t ∈ [0, 1],
    0 ≤ u ≤ 1,

and the yield of ``S3``, ``1 - x1(1) - x2(1)``, is maximised; here we
minimise ``J = -(1 - x1(1) - x2(1)) = x1(1) + x2(1) - 1``.  The optimal
control is bang–singular–bang.

Transcription: single shooting, ``u`` piecewise constant on ``N_STEPS`` equal
steps, classical RK4 on the same grid, L-BFGS-B with the box bounds and the
exact discrete gradient (one adjoint sweep).

Reference value: ``J* ≈ -0.048055`` (COPS 3.0 [1]_ reports the yield
4.8055e-2 for problem 14; the same value is listed in mintOC [2]_ for the
relaxed control).  At ``N = 100`` steps this transcription gives
``J = -0.0480556``, within 1e-6 of it.

References
----------
.. [1] E. D. Dolan, J. J. Moré and T. S. Munson, "Benchmarking optimization
   software with COPS 3.0", Argonne National Laboratory, Technical Memorandum
   ANL/MCS-TM-273, 2004 (COPS 2.0 was ANL/MCS-TM-246), problem 14 "catalyst
   mixing"; originally Gunn and Thomas, Chem. Eng. Sci. 20 (1965) 89-100.
.. [2] S. Sager et al., mintOC, "Catalyst mixing problem",
   https://mintoc.de/index.php/Catalyst_mixing_problem
"""

from __future__ import annotations

import functools

import numpy as np

import adjoint

from ._control_common import check_at_guess, no_data, plot_solution

DESCRIPTION = "Catalyst mixing in a plug-flow reactor (COPS 14), control in [0, 1]."

N_STEPS = 100  # control intervals = RK4 steps on t ∈ [0, 1]
X0 = np.array([1.0, 0.0])  # initial fractions of S1 and S2
U_LOWER, U_UPPER = 0.0, 1.0

REFERENCE = {
    "J": -0.048055,
    "tolerance": 2e-3,
    "source": "Dolan, Moré & Munson 2004 (COPS 3.0), problem 14; mintOC",
    "grid": f"{N_STEPS} RK4 steps, piecewise-constant control",
}


@functools.cache
def _system():
    import sympy as sp

    x1, x2, u = sp.symbols("x1 x2 u")
    f = [u * (10 * x2 - x1), u * (x1 - 10 * x2) - (1 - u) * x2]
    system = adjoint.ODESystem.from_sympy(f, [x1, x2], [], [u], name="catalyst_mixing")
    costs = adjoint.costs_from_sympy([x1, x2], [], [u], terminal=x1 + x2 - 1)
    return system, costs


def build(
    data=None, *, N: int = N_STEPS, scheme: str = "rk4"
) -> adjoint.ControlProblem:
    """The problem on ``N`` steps of ``1/N`` (no data file)."""
    no_data("catalyst-mixing", data)
    N = adjoint._validate.positive_int("N", N)
    system, costs = _system()
    seq = adjoint.ODESequence(system, scheme=scheme, t0=0.0, dt=1.0 / N, N=N, **costs)
    return adjoint.ControlProblem(
        seq,
        X0,
        u_lower=U_LOWER,
        u_upper=U_UPPER,
        duration=1.0,
        state_names=["x1", "x2"],
        control_names=["u (mixing)"],
    )


def initial_guess(problem) -> np.ndarray:
    """Half of each catalyst everywhere."""
    return problem.pack(0.5)


def solve(problem, method: str | None = None, progress=None):
    """Minimise ``x1(1) + x2(1) - 1`` with box bounds (default L-BFGS-B)."""
    result = adjoint.optimise(
        problem, initial_guess(problem), method=method or "L-BFGS-B", progress=progress
    )
    ref = REFERENCE["J"]
    result.table = [
        ("J = x1(1) + x2(1) - 1", result.fun, None),
        ("J (COPS / mintOC)", ref, None),
        ("|J - J_ref|", abs(result.fun - ref), None),
        ("steps N", problem.N, None),
    ]
    return result


def plot(problem, result):
    """Concentrations and mixing control against position."""
    return plot_solution(
        problem, result, title=f"Catalyst mixing, N = {problem.N}: J = {result.fun:.7f}"
    )


def check(problem):
    """Gradient checks at a varied control inside the bounds."""
    t = problem.control_times()
    return check_at_guess(problem, problem.pack(0.5 + 0.3 * np.cos(5 * t)))


def compare(problem, methods=None, *, out="results", **options):
    """Optimisers and gradient sources on catalyst mixing from the initial
    guess, with the control bounds [0, 1] where a method takes bounds (see
    :func:`adjoint.compare`); writes ``catalyst-mixing-compare.*`` to ``out``."""
    from ._control_common import compare as compare_control

    return compare_control(
        problem, "catalyst-mixing", initial_guess(problem), methods, out=out, **options
    )
