"""Timing of the core engine (issue 2): what a gradient costs.

Run from the repository root::

    python benchmarks/bench_core.py [--quick]

Prints four tables, all measured in this one run (medians of repeats):

1. value-and-gradient time over value time for a 10^5-step Lotka–Volterra and
   a 40-state, 10^4-step Lorenz-96 sequence (DESIGN.md section 4 asks for at
   most 2.5);
2. the general engine against a hand-fused Numba forward and adjoint loop of
   the same Lorenz-96 Euler step (DESIGN.md asks for at most 20% overhead);
3. forward- against reverse-mode full Jacobians as the number of inputs, then
   of outputs, grows, with the mode ``jacobian(mode='auto')`` picked;
4. a fresh process with an empty ``NUMBA_CACHE_DIR`` (cold) against the same
   process started again (warm).
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (str(REPO), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import _bench_systems as bs  # noqa: E402

from adjoint import Objective  # noqa: E402
from adjoint import _sweeps_kernels as sk  # noqa: E402

# CPU time of this process (user + system, so page faults count) by default:
# on a shared machine other processes stretch wall-clock times at random, but
# not the CPU time the code itself uses.  `--wall` switches to wall clock.
CLOCK = time.process_time


class Timing(float):
    """A median time in seconds (the float value) that keeps every sample.

    Other processes on a shared machine inflate the median; the minimum shows
    what the code costs when it is not interrupted.
    """

    def __new__(cls, times):
        self = super().__new__(cls, statistics.median(times))
        self.times = list(times)
        self.min = min(times)
        return self


def interleaved(fns, repeat):
    """Time each of ``fns`` once per round for ``repeat`` rounds.

    Calls that are compared run side by side, so background load hits them
    alike and the per-round ratios (:func:`ratio`) stay meaningful.
    """
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
    """``median (min)`` in milliseconds."""
    return f"{1e3 * t:.3f} ({1e3 * t.min:.3f})"


def _paired(a, b):
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def ratio(a, b):
    """Median of the per-round ratios ``a / b`` (ratio of the minima)."""
    return f"{_paired(a, b):.2f} ({a.min / b.min:.2f})"


def overhead(a, b):
    """Extra time of ``a`` over ``b`` in percent, as :func:`ratio`."""
    return f"{100 * (_paired(a, b) - 1):+.0f}% ({100 * (a.min / b.min - 1):+.0f}%)"


_CALLS = itertools.count(1)


def alternating(obj, method):
    """``method`` called at a new point each time (``z0`` scaled by a factor
    within 1e-6 of 1), so every call runs its own forward sweep: the
    objective reuses the sweep of a repeated ``z``."""
    fn = getattr(obj, method)
    return lambda: fn(obj.z0 * (1.0 + 1e-12 * next(_CALLS)))


def ms(seconds):
    return f"{1e3 * seconds:9.3f}"


def table(title, header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(header, widths))
    print(f"\n{title}\n{line}\n{'-' * len(line)}")
    for row in rows:
        print("  ".join(f"{c:>{w}}" for c, w in zip(row, widths)))


# ---------------------------------------------------------------------------
# 1 and 2: gradient over value, engine against hand-fused
# ---------------------------------------------------------------------------


def bench_ratios(repeat):
    rows = []
    N_LV, DT_LV = 100_000, 5e-4
    lv = bs.lv_sequence(N_LV, DT_LV)
    obj = Objective(lv, bs.LV_X0, p=bs.LV_P, wrt=("x0", "p"))
    t_f, t_g = interleaved(
        [alternating(obj, "fun"), alternating(obj, "value_and_grad")], repeat
    )
    rows.append(
        ["Lotka-Volterra Euler", 2, N_LV, both(t_f), both(t_g), ratio(t_g, t_f)]
    )

    n, N, dt = 40, 10_000, 1e-3
    data = bs.l96_data(n, N, dt)
    l96 = bs.l96_sequence(n, N, dt, data)
    obj = Objective(l96, bs.l96_x0(n), p=[bs.L96_F], wrt=("x0", "p"))
    e_f, e_g = interleaved(
        [alternating(obj, "fun"), alternating(obj, "value_and_grad")], repeat
    )
    rows.append(["Lorenz-96 Euler", n, N, both(e_f), both(e_g), ratio(e_g, e_f)])
    table(
        "1. Value and gradient over value (Objective.fun, .value_and_grad at a "
        "new z); ms, median (min); ratio: median of per-round ratios (of minima)",
        ["sequence", "n", "N", "value", "value+grad", "ratio"],
        rows,
    )

    # Hand-fused yardstick: same arithmetic, one compiled function.
    x0 = bs.l96_x0(n)
    xs = np.empty((N + 1, n))
    lam, lam_next = np.empty(n), np.empty(n)
    J_f, gF_f = bs.fused_l96_value_and_grad(x0, bs.L96_F, dt, data, xs, lam, lam_next)
    J_e, g_e = obj.value_and_grad(obj.z0)
    agree = max(
        abs(J_e - J_f) / abs(J_f),
        np.max(np.abs(g_e[:n] - lam)) / np.max(np.abs(lam)),
        abs(g_e[n] - gF_f) / abs(gF_f),
    )
    # Three layers of the engine: its compiled sweeps on arrays allocated
    # once (what the general kernels cost), the Sequence hooks that allocate
    # new (N + 1, n) arrays per call, and the public Objective.
    traj = obj.trajectory(obj.z0)
    args = (traj.x0, traj.thetas, traj.p)
    K = (l96.step.cfunc, l96.running_cost.cfunc, l96.terminal_cost.cfunc)
    V = (l96.step_vjp.cfunc, l96.running_cost_vjp.cfunc, l96.terminal_cost_vjp.cfunc)
    consts, xs_e, info = l96.consts, np.empty((N + 1, n)), np.zeros(2, np.intp)
    xs_bar, lams = np.empty((0, n)), np.empty((1, n))  # as Sequence passes them
    g_th, g_p = np.empty((N, 0)), np.empty(1)

    def kernels_value():
        return sk.forward_sweep(*K, *args, consts, data, 0, xs_e, info)

    def kernels_value_and_grad():
        J = sk.forward_sweep(*K, *args, consts, data, 0, xs_e, info)
        sk.adjoint_sweep(
            *V, xs_e, *args[1:], consts, data, xs_bar, 1.0, lams, g_th, g_p, info
        )
        return J

    f_f, k_f, s_f, e_f, f_g, k_g, s_g, e_g = interleaved(
        [
            lambda: bs.fused_l96_forward(x0, bs.L96_F, dt, data, xs),
            kernels_value,
            lambda: l96._forward_impl(*args),
            alternating(obj, "fun"),
            lambda: bs.fused_l96_value_and_grad(
                x0, bs.L96_F, dt, data, xs, lam, lam_next
            ),
            kernels_value_and_grad,
            lambda: l96._adjoint_impl(l96._forward_impl(*args), None, 1.0),
            alternating(obj, "value_and_grad"),
        ],
        repeat,
    )
    rows = [
        ["hand-fused @njit loop", both(f_f), both(f_g), "", ""],
        [
            "engine sweeps, arrays reused",
            both(k_f),
            both(k_g),
            overhead(k_f, f_f),
            overhead(k_g, f_g),
        ],
        [
            "Sequence hooks, new arrays",
            both(s_f),
            both(s_g),
            overhead(s_f, f_f),
            overhead(s_g, f_g),
        ],
        [
            "Objective.fun/.value_and_grad",
            both(e_f),
            both(e_g),
            overhead(e_f, f_f),
            overhead(e_g, f_g),
        ],
    ]
    table(
        f"2. Lorenz-96 Euler, n = {n}, N = {N}: the engine against a hand-fused "
        f"loop (results agree to {agree:.1e}); ms, median (min)",
        ["", "value", "value+grad", "value vs fused", "value+grad vs fused"],
        rows,
    )
    print(
        f"   value+grad / value: hand-fused {ratio(f_g, f_f)}, engine sweeps "
        f"{ratio(k_g, k_f)}, Objective {ratio(e_g, e_f)}"
    )


# ---------------------------------------------------------------------------
# 3: forward against reverse mode
# ---------------------------------------------------------------------------


def _jacobian_times(obj, steps, repeat):
    z = obj.z0
    t_fwd, t_rev = interleaved(
        [
            lambda: obj.jacobian(z, steps, mode="forward"),
            lambda: obj.jacobian(z, steps, mode="reverse"),
        ],
        repeat,
    )
    before = dict(obj.counts)
    jac = obj.jacobian(z, steps, mode="auto")
    picked = "forward" if obj.counts["tangent"] > before["tangent"] else "reverse"
    return jac.shape, t_fwd, t_rev, picked


def bench_jacobians(repeat, n_ps, n_outs):
    n, N, dt = 4, 1000, 0.01
    rows = []
    for n_p in n_ps:
        seq = bs.ring_sequence(n, n_p, N, dt)
        obj = Objective(seq, np.linspace(0.1, 0.4, n), p=np.ones(n_p), wrt="p")
        (m_out, m_in), t_fwd, t_rev, picked = _jacobian_times(obj, None, repeat)
        faster = "forward" if t_fwd < t_rev else "reverse"
        rows.append([m_in, m_out, ms(t_fwd), ms(t_rev), faster, picked])
    table(
        f"3a. Full Jacobian of x_N (n = {n} outputs) w.r.t. p of growing size, N = {N}",
        ["inputs", "outputs", "forward ms", "reverse ms", "faster", "auto picks"],
        rows,
    )
    rows = []
    n_p = 8
    seq = bs.ring_sequence(n, n_p, N, dt)
    obj = Objective(seq, np.linspace(0.1, 0.4, n), p=np.ones(n_p), wrt="p")
    for n_states in n_outs:
        steps = list(range(N + 1 - n_states, N + 1))
        (m_out, m_in), t_fwd, t_rev, picked = _jacobian_times(obj, steps, repeat)
        faster = "forward" if t_fwd < t_rev else "reverse"
        rows.append([m_in, m_out, ms(t_fwd), ms(t_rev), faster, picked])
    table(
        f"3b. Jacobian of the last states w.r.t. p (n_p = {n_p}) as outputs grow",
        ["inputs", "outputs", "forward ms", "reverse ms", "faster", "auto picks"],
        rows,
    )


# ---------------------------------------------------------------------------
# 4: cold against warm start
# ---------------------------------------------------------------------------

COLD_SCRIPT = """
import time
clock = time.{clock}
t0 = clock()
import numpy as np
import _bench_systems as bs
from adjoint import Objective
t1 = clock()
seq = bs.lv_sequence(1000, 1e-2)
obj = Objective(seq, bs.LV_X0, p=bs.LV_P, wrt="p")
obj.value_and_grad(obj.z0)
obj.jvp(obj.z0, np.ones(4))
t2 = clock()
print(f"{{t1 - t0}} {{t2 - t1}}")
"""


def bench_cold_warm():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    script = COLD_SCRIPT.format(clock=CLOCK.__name__)
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
        for label in ("cold (empty cache)", "warm (same cache)", "warm again"):
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", script],
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
                    f"{t_first:.3f}",
                ]
            )
    table(
        "4. Fresh process: import, build a Lotka-Volterra sequence, first "
        "value_and_grad and jvp; seconds",
        ["start", "process wall", "process CPU", "import", "build+first sweeps"],
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
        f"python {sys.version.split()[0]}; medians of {repeat} repeats; "
        f"{'wall-clock' if args.wall else 'CPU'} time; float64, one thread"
    )
    bench_ratios(repeat)
    if args.quick:
        bench_jacobians(repeat, n_ps=[1, 4, 16], n_outs=[1, 4])
    else:
        bench_jacobians(repeat, n_ps=[1, 2, 4, 8, 16, 32, 64], n_outs=[1, 2, 4, 8, 16])
    bench_cold_warm()


if __name__ == "__main__":
    main()
