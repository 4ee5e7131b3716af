"""Gradient by the adjoint against SciPy's finite differences as unknowns grow.

Run from the repository root::

    python benchmarks/bench_adjoint_vs_fd.py [--quick] [--steps N]

The problem is the coupled-carts LQR of ``problems/lqr.py`` over a fixed
horizon of ``N`` integration steps (default 1000), with the force held
piecewise constant on ``M = 10, 100, 1000`` control intervals: ``M`` unknowns,
while one forward sweep costs the same for every ``M``.  For each ``M`` the
script measures

- the adjoint gradient, ``ControlProblem.value_and_grad`` (one forward and
  one adjoint sweep),
- SciPy's forward-difference gradient, ``scipy.optimize.approx_fprime`` on
  ``ControlProblem.fun`` (``M + 1`` forward sweeps),

and prints both times (best of several repeats, wall clock), their ratio, the
forward sweeps each used (from the problem's counters, not estimated) and how
far the finite-difference gradient is from the adjoint one.  The adjoint's
cost stays flat in ``M``; finite differences grow linearly.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import approx_fprime

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import adjoint  # noqa: E402
from problems import lqr  # noqa: E402

HORIZON = lqr.N_STEPS * lqr.DT  # seconds of simulated time, as the lqr problem
INTERVALS = (10, 100, 1000)


def best_time(fn, repeat: int, min_time: float = 0.05) -> float:
    """Best over ``repeat`` rounds of the mean time of ``fn()`` (each round runs
    it often enough to last about ``min_time`` seconds)."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(min_time / once))
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def build(n_steps: int, n_intervals: int) -> adjoint.ControlProblem:
    A, B = lqr.carts_model(HORIZON / n_steps)
    seq = lqr.linear_quadratic_sequence(A, B, lqr.Q, lqr.R, lqr.QF, n_steps)
    return adjoint.ControlProblem(
        seq,
        lqr.X0,
        control=adjoint.PiecewiseConstant(n_intervals),
        duration=HORIZON,
    )


def measure(n_steps: int, n_intervals: int, repeat: int) -> dict:
    problem = build(n_steps, n_intervals)
    w = np.random.default_rng(0).standard_normal(problem.size)
    objective = problem.objective

    # Forward sweep alone, for scale (a fresh trajectory every call)
    def forward():
        objective._last = None
        problem.fun(w)

    def adjoint_gradient():
        objective._last = None
        return problem.value_and_grad(w)[1]

    def fd_gradient():
        objective._last = None
        return approx_fprime(w, problem.fun)

    # Sweeps of one gradient each way, from the counters
    before = dict(problem.counts)
    g_adj = adjoint_gradient()
    mid = dict(problem.counts)
    g_fd = fd_gradient()
    after = dict(problem.counts)

    t_forward = best_time(forward, repeat)
    t_adj = best_time(adjoint_gradient, repeat)
    t_fd = best_time(fd_gradient, repeat, min_time=0.2)
    return {
        "M": n_intervals,
        "forward": t_forward,
        "adjoint": t_adj,
        "fd": t_fd,
        "sweeps_adj": (
            mid["forward"] - before["forward"],
            mid["adjoint"] - before["adjoint"],
        ),
        "sweeps_fd": after["forward"] - mid["forward"],
        "fd_error": adjoint.relative_error(g_fd, g_adj),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats, for a smoke test"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="integration steps of the horizon (default 1000)",
    )
    args = parser.parse_args(argv)
    repeat = 2 if args.quick else 5
    n_steps = args.steps
    intervals = [m for m in INTERVALS if m <= n_steps]

    build(n_steps, intervals[0]).value_and_grad(np.zeros(intervals[0]))  # compile

    print(
        f"Coupled-carts LQR, N = {n_steps} steps over {HORIZON:g} s; the force is "
        "piecewise constant on M intervals (M unknowns)."
    )
    print(
        "Times: best of repeats, wall clock. 'sweeps' = forward (+ adjoint) "
        "sweeps per gradient, measured from the problem's counters."
    )
    print()
    header = (
        f"{'M':>6}  {'forward [ms]':>12}  {'adjoint [ms]':>12}  "
        f"{'adj/fwd':>7}  {'FD [ms]':>10}  {'FD/fwd':>8}  "
        f"{'FD/adjoint':>10}  {'sweeps adj':>10}  {'sweeps FD':>9}  "
        f"{'|g_FD-g|/|g|':>12}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for m in intervals:
        r = measure(n_steps, m, repeat)
        rows.append(r)
        fwd, adj = r["sweeps_adj"]
        print(
            f"{r['M']:>6}  {1e3 * r['forward']:>12.3f}  {1e3 * r['adjoint']:>12.3f}  "
            f"{r['adjoint'] / r['forward']:>7.2f}  {1e3 * r['fd']:>10.2f}  "
            f"{r['fd'] / r['forward']:>8.1f}  {r['fd'] / r['adjoint']:>10.1f}  "
            f"{f'{fwd}+{adj}':>10}  {r['sweeps_fd']:>9}  {r['fd_error']:>12.1e}"
        )
    print()
    first, last = rows[0], rows[-1]
    growth = last["M"] / first["M"]
    print(
        f"From M = {first['M']} to M = {last['M']} ({growth:g}× the unknowns): "
        f"adjoint time × {last['adjoint'] / first['adjoint']:.2f}, "
        f"finite differences × {last['fd'] / first['fd']:.1f}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
