"""Draw the documentation's figures with the toolkit; the PNGs are committed.

Run from the repository root (not part of the docs build, which only reads
the PNGs)::

    python docs/make_figures.py                 # everything
    python docs/make_figures.py --only modes    # one theory figure
    python docs/make_figures.py --gallery-only  # the problem gallery only

Theory figures go to ``docs/images/theory/``.  The gallery runs
``adjoint solve NAME`` for every problem in ``problems.registry()`` (in a
child process, so each starts as a user's would) and keeps its figure in
``docs/images/gallery/NAME.png``; what the command printed, its solve time
and the machine go to ``docs/images/gallery/index.json``, which the gallery
pages show.  A problem whose solve takes longer than ``GALLERY_MAX_SOLVE``
seconds (or whose command does not finish within ``GALLERY_TIMEOUT``
seconds, compilation included) is skipped, and its page says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
THEORY = DOCS / "images" / "theory"
GALLERY = DOCS / "images" / "gallery"
for path in (str(ROOT), str(ROOT / "benchmarks")):
    if path not in sys.path:
        sys.path.insert(0, path)

import adjoint  # noqa: E402

DPI = 110
# A gallery problem is drawn only if its solve takes at most this long (s).
GALLERY_MAX_SOLVE = 60.0
# Whole `adjoint solve` command, first compilation included (s).
GALLERY_TIMEOUT = 240.0
# A first solve slower than this (s) is run again to time it without compiling.
WARM_RERUN = 5.0


def machine() -> str:
    """One line describing where the numbers were measured."""
    import numba

    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, NumPy {np.__version__}, "
        f"Numba {numba.__version__}"
    )


def save(fig: Figure, name: str) -> Path:
    THEORY.mkdir(parents=True, exist_ok=True)
    path = THEORY / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def best_time(fn, repeat: int = 15) -> float:
    """Smallest CPU time of ``repeat`` calls, after one warm-up call.

    CPU time of this process (as ``benchmarks/bench_core.py`` measures), so
    other jobs on a shared machine stretch it less than wall-clock time.
    """
    fn()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


# ---------------------------------------------------------------------------
# Theory figures
# ---------------------------------------------------------------------------


def fig_modes() -> dict:
    """Forward- against reverse-mode Jacobians as inputs, then outputs, grow."""
    import _bench_systems as bs

    n, N, dt = 4, 1000, 0.01
    inputs = [1, 2, 4, 8, 16, 32, 64]
    rows_in = []
    for n_p in inputs:
        seq = bs.ring_sequence(n, n_p, N, dt)
        obj = adjoint.Objective(seq, np.linspace(0.1, 0.4, n), p=np.ones(n_p), wrt="p")
        t_f = best_time(lambda: obj.jacobian(obj.z0, mode="forward"))
        t_r = best_time(lambda: obj.jacobian(obj.z0, mode="reverse"))
        rows_in.append((n_p, t_f, t_r))

    n_p = 8
    seq = bs.ring_sequence(n, n_p, N, dt)
    obj = adjoint.Objective(seq, np.linspace(0.1, 0.4, n), p=np.ones(n_p), wrt="p")
    outputs = [1, 2, 4, 8, 16]
    rows_out = []
    for n_states in outputs:
        steps = list(range(N + 1 - n_states, N + 1))
        t_f = best_time(lambda: obj.jacobian(obj.z0, steps, mode="forward"))
        t_r = best_time(lambda: obj.jacobian(obj.z0, steps, mode="reverse"))
        rows_out.append((n * n_states, t_f, t_r))

    fig = Figure(layout="constrained", figsize=(9, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    for ax, rows, xlabel, title in (
        (ax1, rows_in, "inputs (size of p)", f"{n} outputs (x_N), N = {N}"),
        (
            ax2,
            rows_out,
            "outputs (entries of the last states)",
            f"{n_p} inputs, N = {N}",
        ),
    ):
        x = [r[0] for r in rows]
        ax.loglog(x, [1e3 * r[1] for r in rows], "o-", label="forward (JVP sweeps)")
        ax.loglog(x, [1e3 * r[2] for r in rows], "s-", label="reverse (VJP sweeps)")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CPU time for the full Jacobian (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Objective.jacobian(mode='forward' / 'reverse'), ring system")
    save(fig, "modes")
    return {"inputs": rows_in, "outputs": rows_out}


def _logistic_sequence(N: int, T: float = 4.0):
    from adjoint import ODESequence, observation_cost

    system = _logistic_system()
    obs = observation_cost([N // 2, N], [0.6, 0.9], N=N)
    return ODESequence(system, scheme=_SCHEME, dt=T / N, N=N, observations=obs)


_SCHEME = "rk4"
_SYSTEMS = {}


def _logistic_system():
    if "logistic" not in _SYSTEMS:
        import sympy as sp

        x, r, K = sp.symbols("x r K")
        _SYSTEMS["logistic"] = adjoint.ODESystem.from_sympy(
            [r * x * (1 - x / K)], [x], [r, K], name="docs_logistic"
        )
    return _SYSTEMS["logistic"]


def fig_discrete_continuous() -> dict:
    """Discrete gradients against the continuous adjoint as dt shrinks."""
    global _SCHEME
    x0, p = [0.1], [1.5, 1.0]
    Ns = [16, 32, 64, 128, 256, 512]
    results = {}
    fig = Figure(layout="constrained", figsize=(5.5, 4))
    ax = fig.subplots()
    for scheme, marker in (("euler", "o"), ("heun", "s"), ("rk4", "^")):
        _SCHEME = scheme
        res = adjoint.gradient_convergence(
            _logistic_sequence, x0, p, Ns, wrt=("x0", "p")
        )
        results[scheme] = (float(res.order), res.errors.tolist())
        ax.loglog(
            res.dts,
            res.errors,
            marker + "-",
            label=f"{scheme}: observed order {res.order:.2f}",
        )
    _SCHEME = "rk4"
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("step size dt")
    ax.set_ylabel("relative difference of gradients")
    ax.set_title("discrete adjoint against continuous adjoint (solve_ivp)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save(fig, "discrete_continuous")
    return results


def fig_kinks() -> None:
    """Forward values and the VJP of ones for the kinked layers."""
    from adjoint import Abs, LeakyReLU, ReLU

    x = np.linspace(-1.0, 1.0, 401)[None, :]
    x[0, 200] = 0.0  # exactly the kink
    layers = [
        ("ReLU()", ReLU()),
        ("LeakyReLU(slope=0.1)", LeakyReLU(slope=0.1)),
        ("Abs()", Abs()),
    ]
    fig = Figure(layout="constrained", figsize=(10, 3.2))
    axes = fig.subplots(1, 3)
    theta = np.zeros(0)
    for ax, (label, layer) in zip(axes, layers):
        y, cache = layer.forward(x, theta)
        x_bar, _ = layer.vjp(x, theta, y, cache, np.ones_like(x))
        ax.plot(x[0], y[0], label="F(x)")
        left, right = x[0] < 0, x[0] > 0
        ax.plot(x[0][left], x_bar[0][left], "C1", label="VJP of 1 = F'(x)")
        ax.plot(x[0][right], x_bar[0][right], "C1")
        ax.plot(
            [0.0],
            [x_bar[0, 200]],
            "o",
            color="C3",
            label=f"used at 0: {x_bar[0, 200]:g}",
        )
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_title(label)
        ax.set_xlabel("x")
        ax.legend(fontsize=8, loc="lower right" if label == "ReLU()" else "best")
    fig.suptitle("Subgradients the layers use at their kinks (default settings)")
    save(fig, "kinks")


def fig_vanishing() -> dict:
    """Per-layer gradient norms of plain and residual tanh networks."""
    from problems import deep_gradients as dg

    problem = dg.build(depths=(10, 50))
    norms = dg.gradient_norms(problem)
    fig = Figure(layout="constrained", figsize=(6, 4))
    ax = fig.subplots()
    ratios = {}
    for (kind, depth), values in sorted(norms.items()):
        style = "-" if kind == "plain" else "--"
        ax.semilogy(
            np.arange(1, len(values) + 1),
            values,
            style,
            marker=".",
            label=f"{kind}, depth {depth}",
        )
        ratios[f"{kind}-{depth}"] = float(values[0] / values[-1])
    ax.set_xlabel("layer k (input layer first)")
    ax.set_ylabel("‖dJ/dθ_k‖ at the initial weights")
    ax.set_title("Vanishing gradients: plain against residual tanh networks")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save(fig, "vanishing")
    return ratios


def fig_checkpointing() -> dict:
    """Recomputed steps against snapshots: Revolve's optimum, periodic, measured."""
    import _bench_systems as bs

    from adjoint import Checkpointing, checkpointed_gradient

    N = 1000
    snapshots = [2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 64, 100, 150, 200, 300]
    optimum = [adjoint.binomial_forward_steps(N, s) + 1 - N for s in snapshots]
    seq = bs.lv_sequence(N, 1e-2)
    measured, periodic, stats_rows = [], [], []
    for s in snapshots:
        res = checkpointed_gradient(
            seq,
            bs.LV_X0,
            p=bs.LV_P,
            checkpoint=Checkpointing("binomial", n_snapshots=s),
        )
        measured.append(res.stats.recomputed_steps)
        try:  # periodic needs about sqrt(N) snapshots or more
            per = checkpointed_gradient(
                seq,
                bs.LV_X0,
                p=bs.LV_P,
                checkpoint=Checkpointing("periodic", n_snapshots=s),
            )
            periodic.append(per.stats.recomputed_steps)
        except ValueError:
            periodic.append(np.nan)
        stats_rows.append((s, res.stats.recomputed_steps, res.stats.peak_bytes))
    fig = Figure(layout="constrained", figsize=(6, 4))
    ax = fig.subplots()
    ax.loglog(
        snapshots, np.array(optimum) / N, "k-", label="optimum t(N, s) (closed form)"
    )
    ax.loglog(
        snapshots, np.array(measured) / N, "o", label="binomial schedule, measured"
    )
    ax.loglog(
        snapshots, np.array(periodic) / N, "s--", label="periodic schedule, measured"
    )
    ax.set_xlabel("snapshots s")
    ax.set_ylabel("recomputed steps / N")
    ax.set_title(f"Checkpointing N = {N} steps")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save(fig, "checkpointing")
    return {
        "N": N,
        "snapshots": snapshots,
        "optimum": optimum,
        "measured": measured,
        "periodic": [None if np.isnan(v) else int(v) for v in periodic],
    }


def fig_taylor() -> dict:
    """Taylor remainders of the gradient and of the Hessian-vector product."""
    from problems import lotka_volterra as lv

    problem = lv.build()
    est = problem.estimation
    obj = est.objective
    z = obj.z0
    rng = np.random.default_rng(0)
    v = rng.standard_normal(obj.size)
    taylor = adjoint.taylor_test(obj, z, v, eps0=1e-3, n_halvings=8)
    zero_order = np.array([abs(obj.fun(z + e * v) - obj.fun(z)) for e in taylor.eps])
    # Integrator sequences have no complex gradient sweep: H v by central
    # differences of adjoint gradients (method='fd'), accurate to about 1e-7.
    hess = adjoint.hessian_taylor_test(
        obj, z, n_halvings=8, eps0=1e-3, method="fd", rng=np.random.default_rng(1)
    )
    fig = Figure(layout="constrained", figsize=(6, 4))
    ax = fig.subplots()
    ax.loglog(taylor.eps, zero_order, "o-", label="|J(z+εv) − J(z)|  (order 1)")
    ax.loglog(
        taylor.eps,
        taylor.remainders,
        "s-",
        label=f"… − ε g·v  (order {np.median(taylor.orders):.2f})",
    )
    ax.loglog(
        hess.eps,
        hess.remainders,
        "^-",
        label=(
            "|∇J(z+εw)·u − ∇J(z)·u − ε uᵀHw|  "
            f"(order {np.median(hess.orders):.2f})"
        ),
    )  # fmt: skip
    ax.set_xlabel("ε")
    ax.set_ylabel("remainder")
    ax.set_title("Taylor tests, Lotka–Volterra fit at its starting point")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "taylor")
    return {
        "gradient_orders": taylor.orders.tolist(),
        "hessian_orders": hess.orders.tolist(),
    }


def fig_compare() -> dict:
    """Optimisers compared on the Lotka–Volterra fit (``adjoint.compare``)."""
    from problems import lotka_volterra as lv

    problem = lv.build()
    est = problem.estimation
    comparison = adjoint.compare(
        est,
        est.z_from_values(est.x0, est.p),
        tol=1e-10,
        name="lotka-volterra",
        methods=[
            "L-BFGS-B",
            "BFGS",
            "BFGS:2-point",
            "Newton-CG:hvp",
            "trust-krylov:hvp",
            "Nelder-Mead",
            "Powell",
        ],
    )
    fig = comparison.plot()
    save(fig, "compare")
    return {
        run.label: [run.status, run.nfev, run.forward_sweeps, run.wall_time]
        for run in comparison.runs
    }


THEORY_FIGURES = {
    "modes": fig_modes,
    "discrete_continuous": fig_discrete_continuous,
    "kinks": fig_kinks,
    "vanishing": fig_vanishing,
    "checkpointing": fig_checkpointing,
    "taylor": fig_taylor,
    "compare": fig_compare,
}


# ---------------------------------------------------------------------------
# Problem gallery
# ---------------------------------------------------------------------------


def gallery(names=None) -> dict:
    """Run ``adjoint solve NAME`` for each registered problem; keep figures."""
    import problems

    GALLERY.mkdir(parents=True, exist_ok=True)
    index_path = GALLERY / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    registered = sorted(problems.registry())
    for name in list(index):
        if name not in registered:
            del index[name]
            (GALLERY / f"{name}.png").unlink(missing_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg")
    for name in registered:
        if names and name not in names:
            continue
        print(f"gallery: adjoint solve {name} ...", flush=True)
        record = {"machine": machine(), "command": f"adjoint solve {name}"}
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "adjoint.cli", "solve", name, "--out", out],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=GALLERY_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                record.update(
                    status="skipped",
                    reason=(
                        f"`adjoint solve {name}` did not finish within "
                        f"{GALLERY_TIMEOUT:.0f} s on the machine that builds the docs "
                        f"({machine()})"
                    ),
                )
                (GALLERY / f"{name}.png").unlink(missing_ok=True)
                index[name] = record
                print(f"  skipped: {record['reason']}")
                continue
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(
                    f"`adjoint solve {name}` failed with status {proc.returncode}:\n"
                    f"{proc.stderr}"
                )
            match = re.search(r"wall time ([0-9.eE+-]+) s", proc.stdout)
            solve_time = float(match.group(1)) if match else elapsed
            if WARM_RERUN < solve_time <= GALLERY_TIMEOUT / 2:
                # A slow first run may have been compiling (Numba's cache is
                # invalidated by edits to the sources): time a second run.
                proc = subprocess.run(
                    [sys.executable, "-m", "adjoint.cli", "solve", name, "--out", out],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=GALLERY_TIMEOUT,
                    check=True,
                )
                match = re.search(r"wall time ([0-9.eE+-]+) s", proc.stdout)
                solve_time = float(match.group(1)) if match else solve_time
            stdout = "\n".join(
                line.replace(out, "results") for line in proc.stdout.splitlines()
            )
            record.update(solve_seconds=solve_time, stdout=stdout)
            if solve_time > GALLERY_MAX_SOLVE:
                record.update(
                    status="skipped",
                    reason=(
                        f"its solve takes {solve_time:.0f} s, more than the "
                        f"{GALLERY_MAX_SOLVE:.0f} s the docs allow for a figure"
                    ),
                )
                (GALLERY / f"{name}.png").unlink(missing_ok=True)
            else:
                shutil.copyfile(Path(out) / f"{name}.png", GALLERY / f"{name}.png")
                record["status"] = "drawn"
        index[name] = record
        print(f"  {record['status']}: solve {record.get('solve_seconds', 0):.1f} s")
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help=f"theory figures to draw: {', '.join(THEORY_FIGURES)}",
    )
    parser.add_argument(
        "--gallery-only", action="store_true", help="draw the problem gallery only"
    )
    parser.add_argument(
        "--problems",
        nargs="+",
        metavar="NAME",
        help="gallery problems to run (default: all registered)",
    )
    parser.add_argument(
        "--no-gallery", action="store_true", help="skip the problem gallery"
    )
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    measured = {}
    if not args.gallery_only:
        for name, make in THEORY_FIGURES.items():
            if args.only and name not in args.only:
                continue
            start = time.perf_counter()
            measured[name] = make()
            print(f"  {name}: {time.perf_counter() - start:.1f} s")
        if measured:
            log = THEORY / "measured.json"
            old = json.loads(log.read_text()) if log.exists() else {}
            old.update({k: v for k, v in measured.items() if v is not None})
            old["machine"] = machine()
            log.write_text(json.dumps(old, indent=1) + "\n")
    if not args.no_gallery and not args.only:
        gallery(args.problems)
    return 0


if __name__ == "__main__":
    sys.exit(main())
