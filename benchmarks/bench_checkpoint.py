"""Checkpointing at scale: the heat-source problem at 10^6 RK4 steps.

Runs one gradient of ``problems.heat_inverse`` (``n = 200`` grid points, RK4
at its stability limit) in a fresh process per configuration and reports:
wall time of the first and the best of two gradients and the best time per
step, the process's peak resident memory during the gradients (the peak is
reset after the problem is built, so the sensor data and the modal
reference are not counted; the interpreter, Numba and the data stay in it),
the peak bytes of stored states, and the recomputed steps beside the
binomial optimum.  The first gradient of a process also pays for touching
its fresh memory: store-all's sweeps allocate the states, the adjoint
vectors and a zero state cotangent, three arrays of ``(N + 1) n`` floats.

Configurations (defaults): binomial under a 100 MB snapshot budget at
``N = 10^6``; store-all at ``N = 10^5`` and at ``N = 10^6`` (1.6 GB of
states, which still fits on a 24 GB machine).

Usage::

    python benchmarks/bench_checkpoint.py               # the full run, ~1-2 min
    python benchmarks/bench_checkpoint.py --quick       # N = 10^4, seconds
    python benchmarks/bench_checkpoint.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux only)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(
    schedule: str, n_steps: int, n_points: int, budget: str, repeats: int = 2
) -> dict:
    """``repeats`` gradients in this process; returns the measurements."""
    import numpy as np

    from adjoint import Checkpointing, binomial_forward_steps
    from problems import heat_inverse

    checkpoint = None if schedule == "store_all" else Checkpointing(memory=budget)
    # Warm-up: load the compiled kernels on a short problem.
    small = heat_inverse.build(n_points=n_points, n_steps=50, checkpoint=checkpoint)
    small.objective.value_and_grad(np.ones(heat_inverse.N_MODES))

    problem = heat_inverse.build(
        n_points=n_points, n_steps=n_steps, checkpoint=checkpoint
    )
    p = np.array(heat_inverse.P_TRUE) * 0.9
    reset = _peak_rss_reset()
    before = _peak_rss_mb()
    times = []
    for i in range(repeats):
        # A new point each time, and no trajectory kept from the last one: the
        # objective would otherwise reuse (and hold) its cached forward sweep.
        problem.objective._last = None
        start = time.perf_counter()
        J, grad = problem.objective.value_and_grad(p * (1.0 + 0.01 * i))
        times.append(time.perf_counter() - start)
    seconds = min(times)
    stats = problem.objective.last_checkpoint_stats
    s = stats.n_snapshots
    optimum = (
        binomial_forward_steps(n_steps, s) + 1 - n_steps
        if stats.schedule == "binomial"
        else 0
    )
    return {
        "schedule": stats.schedule,
        "n_steps": n_steps,
        "n_points": n_points,
        "snapshots": stats.snapshots,
        "n_snapshots": s,
        "seconds": seconds,
        "first_seconds": times[0],
        "us_per_step": seconds / n_steps * 1e6,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_mb": before,
        "peak_reset": reset,
        "state_peak_mb": stats.peak_bytes / 1e6,
        "recomputed": stats.recomputed_steps,
        "optimum": optimum,
        "J": float(J),
        "grad_norm": float(np.linalg.norm(grad)),
    }


def _spawn(schedule, n_steps, n_points, budget) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        __file__,
        "--one",
        schedule,
        "--steps",
        str(n_steps),
        "--points",
        str(n_points),
        "--budget",
        budget,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument(
        "--store-all-steps", type=int, nargs="*", default=[100_000, 1_000_000]
    )
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--budget", default="100 MB")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N = 10^4 and a 200 kB budget: a smoke test",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:  # child process: one configuration
        print(json.dumps(run_one(args.one, args.steps, args.points, args.budget)))
        return 0

    if args.quick:
        args.steps, args.store_all_steps, args.budget = 10_000, [10_000], "200 kB"
    rows = [_spawn("binomial", args.steps, args.points, args.budget)]
    rows += [
        _spawn("store_all", n, args.points, args.budget) for n in args.store_all_steps
    ]

    header = (
        f"{'schedule':<10} {'N':>9} {'snapshots':>9} {'first s':>8} "
        f"{'best s':>8} {'us/step':>8} {'peak RSS MB':>11} {'states MB':>9} "
        f"{'recomputed':>10} {'optimum':>10}"
    )
    print(
        f"heat_inverse, n = {args.points} points, one process per row, two "
        f"gradients each (first, best); binomial under a {args.budget} budget"
    )
    print(header)
    for r in rows:
        print(
            f"{r['schedule']:<10} {r['n_steps']:>9} {r['snapshots']:>9} "
            f"{r['first_seconds']:>8.2f} {r['seconds']:>8.2f} "
            f"{r['us_per_step']:>8.2f} "
            f"{r['peak_rss_mb']:>11.0f} {r['state_peak_mb']:>9.1f} "
            f"{r['recomputed']:>10} {r['optimum']:>10}"
        )
    binomial = rows[0]
    for r in rows[1:]:
        print(
            f"binomial time per step / store-all (N = {r['n_steps']}): "
            f"{binomial['us_per_step'] / r['us_per_step']:.2f}"
        )
    if not all(r["peak_reset"] for r in rows):
        print("(peak RSS could not be reset: it includes building the problem)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
