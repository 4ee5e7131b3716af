"""Timing of the ODE integrators (issue 3): what an ODE gradient costs.

Run from the repository root::

    python benchmarks/bench_integrators.py [--quick] [--wall]

Prints three tables, all measured in this one run (medians of repeats, the
minimum in brackets):

1. Lorenz-96 (40 states, F = 8), RK4, 10^4 steps of dt = 0.01, terminal cost
   ½|x_N|²: forward time and value-and-gradient time of the engine for each
   way of defining the system, their ratio (the issue aims at 3 at most,
   DESIGN.md section 4 at 2.5), a hand-fused Numba forward and adjoint of the
   same scheme for scale, and the continuous adjoint (``solve_ivp``, RK45)
   beside them;
2. implicit steps on a banded method-of-lines system (Fisher–KPP), dense LU
   in the compiled sweeps against sparse LU in the Python loop, as the size
   grows;
3. a fresh process with empty Numba and kernel-source caches (cold) against
   the same process started again (warm): a second process must not compile.

The gradient of a chaotic system over 100 time units is astronomically large
(about e^170) and rounding differences grow as fast, so the routes' gradients
differ in every digit; the numbers here are timings only (the tests check that
the routes agree on short horizons).  The continuous adjoint's row gives wall
time of its forward solve and of forward plus backward.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numba import njit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (str(REPO), str(REPO / "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

import ode_systems as systems  # noqa: E402
from adjoint import Objective, ODESequence, continuous_adjoint_gradient  # noqa: E402

# CPU time of this process by default: on a shared machine other processes
# stretch wall-clock times at random, not the CPU time the code itself uses.
CLOCK = time.process_time

N_L96, DT_L96, F_L96 = 10_000, 0.01, 8.0


class Timing(float):
    """Median time in seconds (the float value), keeping every sample."""

    def __new__(cls, times):
        self = super().__new__(cls, statistics.median(times))
        self.times = list(times)
        self.min = min(times)
        return self


def interleaved(fns, repeat):
    """Time each of ``fns`` once per round, so background load hits all alike."""
    for fn in fns:
        fn()  # warm-up: the first call may load or compile
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, samples in zip(fns, times):
            t0 = CLOCK()
            fn()
            samples.append(CLOCK() - t0)
    return [Timing(samples) for samples in times]


def both(t):
    return f"{1e3 * t:.2f} ({1e3 * t.min:.2f})"


def ratio(a, b):
    paired = statistics.median(x / y for x, y in zip(a.times, b.times))
    return f"{paired:.2f} ({a.min / b.min:.2f})"


def table(title, header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(header, widths))
    print(f"\n{title}\n{line}\n{'-' * len(line)}")
    for row in rows:
        print("  ".join(f"{c:>{w}}" for c, w in zip(row, widths)))


# ---------------------------------------------------------------------------
# Hand-fused RK4 Lorenz-96: forward with stored stages, adjoint through them
# ---------------------------------------------------------------------------


@njit(cache=True)
def _l96(x, F, out):
    n = x.shape[0]
    out[0] = (x[1] - x[n - 2]) * x[n - 1] - x[0] + F
    out[1] = (x[2] - x[n - 1]) * x[0] - x[1] + F
    for j in range(2, n - 1):
        out[j] = (x[j + 1] - x[j - 2]) * x[j - 1] - x[j] + F
    out[n - 1] = (x[0] - x[n - 3]) * x[n - 2] - x[n - 1] + F


@njit(cache=True)
def _l96_vjp(x, f_bar, x_bar):
    n = x.shape[0]
    for j in range(n):
        jp1 = j + 1 if j + 1 < n else 0
        jm1 = j - 1 if j >= 1 else n - 1
        jm2 = j - 2 if j >= 2 else j - 2 + n
        fb = f_bar[j]
        x_bar[jp1] += fb * x[jm1]
        x_bar[jm2] -= fb * x[jm1]
        x_bar[jm1] += fb * (x[jp1] - x[jm2])
        x_bar[j] -= fb


@njit(cache=True)
def fused_forward(x0, F, dt, xs, stages):
    N, n = stages.shape[0], x0.shape[0]
    K = np.empty((4, n))
    xs[0] = x0
    for k in range(N):
        x, X = xs[k], stages[k]
        X[0] = x
        _l96(X[0], F, K[0])
        for j in range(n):
            X[1, j] = x[j] + 0.5 * dt * K[0, j]
        _l96(X[1], F, K[1])
        for j in range(n):
            X[2, j] = x[j] + 0.5 * dt * K[1, j]
        _l96(X[2], F, K[2])
        for j in range(n):
            X[3, j] = x[j] + dt * K[2, j]
        _l96(X[3], F, K[3])
        for j in range(n):
            xs[k + 1, j] = x[j] + dt / 6.0 * (
                K[0, j] + 2 * K[1, j] + 2 * K[2, j] + K[3, j]
            )
    return 0.5 * np.sum(xs[N] ** 2)


@njit(cache=True)
def fused_adjoint(xs, stages, dt):
    N, n = stages.shape[0], xs.shape[1]
    lam = xs[N].copy()
    K_bar = np.empty((4, n))
    X_bar = np.empty(n)
    grad_F = 0.0
    b = (1 / 6, 1 / 3, 1 / 3, 1 / 6)
    a = (0.0, 0.5, 0.5, 1.0)  # A[i, i-1], the only non-zero entry per row
    for k in range(N - 1, -1, -1):
        for i in range(4):
            for j in range(n):
                K_bar[i, j] = dt * b[i] * lam[j]
        for i in range(3, -1, -1):
            X_bar[:] = 0.0
            _l96_vjp(stages[k, i], K_bar[i], X_bar)
            grad_F += np.sum(K_bar[i])
            lam += X_bar
            if i > 0:
                for j in range(n):
                    K_bar[i - 1, j] += dt * a[i] * X_bar[j]
    return lam, grad_F


# ---------------------------------------------------------------------------
# 1. Lorenz-96 RK4
# ---------------------------------------------------------------------------


def half_squared_norm(x, p, consts, data):
    return 0.5 * np.sum(x * x)


def half_squared_norm_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    for j in range(x.shape[0]):
        x_bar[j] += phi_bar * x[j]
    return 0


def l96_x0(n=40):
    x0 = np.full(n, F_L96)
    x0[0] += 0.01
    return x0


def bench_lorenz96(repeat, quick):
    n = 40
    x0 = l96_x0(n)
    rows = []
    ways = ("kernels", "sympy") if quick else ("kernels", "sympy", "rhs")
    for way in ways:
        system = systems.lorenz96(n, way)
        seq = ODESequence(
            system,
            scheme="rk4",
            dt=DT_L96,
            N=N_L96,
            terminal_cost=half_squared_norm,
            terminal_cost_vjp=half_squared_norm_vjp,
        )
        obj = Objective(seq, x0=x0, p=[F_L96], wrt=("x0", "p"))
        calls = iter(range(1, 10**9))

        def value(obj=obj, calls=calls):
            obj.fun(obj.z0 * (1.0 + 1e-15 * next(calls)))

        def value_and_grad(obj=obj, calls=calls):
            obj.value_and_grad(obj.z0 * (1.0 + 1e-15 * next(calls)))

        t_f, t_g = interleaved([value, value_and_grad], repeat)
        rows.append([f"engine, {way}", both(t_f), both(t_g), ratio(t_g, t_f)])

    xs = np.empty((N_L96 + 1, n))
    stages = np.empty((N_L96, 4, n))

    def fused_value():
        fused_forward(x0, F_L96, DT_L96, xs, stages)

    def fused_value_and_grad():
        fused_forward(x0, F_L96, DT_L96, xs, stages)
        fused_adjoint(xs, stages, DT_L96)

    t_f, t_g = interleaved([fused_value, fused_value_and_grad], repeat)
    rows.append(["hand-fused Numba", both(t_f), both(t_g), ratio(t_g, t_f)])

    system = systems.lorenz96(n, "kernels")
    clock = time.perf_counter()
    res = continuous_adjoint_gradient(
        system,
        x0,
        [F_L96],
        t1=N_L96 * DT_L96,
        method="RK45",
        rtol=1e-6,
        atol=1e-8,
        terminal_cost=lambda x, p: (0.5 * x @ x, x.copy(), np.zeros(1)),
    )
    wall = time.perf_counter() - clock
    rows.append(
        [
            "continuous adjoint, RK45 rtol 1e-6",
            f"{1e3 * res.time_forward:.0f}",
            f"{1e3 * wall:.0f}",
            f"{wall / res.time_forward:.2f}",
        ]
    )
    table(
        f"1. Lorenz-96 (n = {n}, F = {F_L96:g}), RK4, N = {N_L96}, dt = {DT_L96}: "
        "milliseconds",
        ["route", "value", "value + gradient", "ratio"],
        rows,
    )


# ---------------------------------------------------------------------------
# 2. implicit steps, dense against sparse LU
# ---------------------------------------------------------------------------


# Largest system the dense-LU column is timed for: an n x n LU costs n³/3
# flops per Newton iteration, minutes per gradient beyond this.
DENSE_MAX_N = 800


def bench_sparse(repeat, sizes):
    rows = []
    for n in sizes:
        grid = (np.arange(n) + 0.5) / n
        x0 = 0.5 * np.exp(-20 * (grid - 0.3) ** 2)
        times = {}
        for label, bandwidth in (("sparse", (1, 1)), ("dense", None)):
            if label == "dense" and n > DENSE_MAX_N:
                continue
            system = systems.fisher(n, bandwidth=bandwidth)
            seq = ODESequence(
                system,
                scheme="backward_euler",
                dt=1e-3,
                N=50,
                terminal_cost=half_squared_norm,
                terminal_cost_vjp=half_squared_norm_vjp,
            )
            obj = Objective(seq, x0=x0, p=[0.05, 2.0], wrt=("x0", "p"))
            calls = iter(range(1, 10**9))

            def value_and_grad(obj=obj, calls=calls):
                obj.value_and_grad(obj.z0 * (1.0 + 1e-15 * next(calls)))

            times[label] = interleaved([value_and_grad], repeat)[0]
        dense = times.get("dense")
        rows.append(
            [
                str(n),
                "-" if dense is None else both(dense),
                both(times["sparse"]),
                "-" if dense is None else ratio(dense, times["sparse"]),
            ]
        )
    table(
        "2. Backward Euler, Fisher-KPP (tridiagonal), 50 steps, value + gradient: "
        "milliseconds",
        ["n", "dense LU (compiled)", "sparse LU (splu)", "dense / sparse"],
        rows,
    )


# ---------------------------------------------------------------------------
# 3. cold against warm process
# ---------------------------------------------------------------------------

COLD_SCRIPT = """
import time
t0 = time.perf_counter()
import numpy as np
import ode_systems as systems
from adjoint import ODESequence, Objective, observation_cost
t1 = time.perf_counter()
obs = observation_cost([50, 100], [np.ones(40), np.ones(40)], N=100)
for way in ("kernels", "sympy"):
    seq = ODESequence(systems.lorenz96(40, way), scheme="rk4", dt=0.01, N=100,
                      observations=obs)
    obj = Objective(seq, x0=np.full(40, 8.0), p=[8.0], wrt=("x0", "p"))
    obj.value_and_grad(obj.z0)
    seq = ODESequence(systems.van_der_pol(way), scheme="backward_euler", dt=0.1,
                      N=10)
    obj = Objective(seq, x0=[2.0, 0.0], thetas=np.zeros((10, 1)), p=[5.0])
    obj.value_and_grad(obj.z0)
print(t1 - t0, time.perf_counter() - t1)
"""


def bench_cold_warm():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    rows = []
    with (
        tempfile.TemporaryDirectory() as numba_dir,
        tempfile.TemporaryDirectory() as src,
    ):
        env["NUMBA_CACHE_DIR"] = numba_dir
        env["ADJOINT_CACHE_DIR"] = src
        for label in ("cold (empty caches)", "warm (same caches)", "warm again"):
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", COLD_SCRIPT],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            wall = time.perf_counter() - t0
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            t_import, t_first = (float(v) for v in proc.stdout.split())
            rows.append(
                [
                    label,
                    f"{wall:.2f}",
                    f"{cpu:.2f}",
                    f"{t_import:.2f}",
                    f"{t_first:.2f}",
                ]
            )
    table(
        "3. Fresh process: import, build Lorenz-96 (RK4) and Van der Pol (backward "
        "Euler) from kernels and from SymPy, first gradients; seconds",
        ["start", "process wall", "process CPU", "import", "build + first gradients"],
        rows,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and sizes (a smoke run)"
    )
    parser.add_argument(
        "--wall", action="store_true", help="time by wall clock instead of CPU time"
    )
    args = parser.parse_args(argv)
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    repeat = 3 if args.quick else 15
    import numba

    print(
        f"numba {numba.__version__}, numpy {np.__version__}, "
        f"python {sys.version.split()[0]}; medians (minima) of {repeat} repeats; "
        f"{'wall-clock' if args.wall else 'CPU'} time; float64, one thread"
    )
    bench_lorenz96(repeat, args.quick)
    bench_sparse(min(repeat, 5), [50, 200] if args.quick else [50, 200, 800, 3200])
    bench_cold_warm()


if __name__ == "__main__":
    main()
