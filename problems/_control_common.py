"""Pieces shared by the optimal-control problems (double integrator, Goddard,
catalyst mixing, pendulum swing-up): a control-energy cost kernel, the
result table and the states-and-controls figure."""

from __future__ import annotations

import functools

import numpy as np

import adjoint
from adjoint.kernels import Kernel

# ---- running cost ∫ |u|² dt for piecewise-constant controls ----
# With u constant on each step, ∫_{t_k}^{t_k + dt} |u|² dt = dt |u_k|², exact.
# consts[0] = dt (the step of the physical time).  Complex-safe.


def _energy(k, x, theta, p, consts, data):
    s = theta[0] * 0.0
    for j in range(theta.shape[0]):
        s += theta[j] * theta[j]
    return consts[0] * s


def _energy_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    for j in range(theta.shape[0]):
        theta_bar[j] += g_bar * 2.0 * consts[0] * theta[j]
    return 0


@functools.cache
def energy_cost():
    """Running-cost kernels of ``Σ_k dt |u_k|²`` (``consts = [dt]``)."""
    return {
        "running_cost": Kernel(_energy, "running_cost"),
        "running_cost_vjp": Kernel(_energy_vjp, "running_cost_vjp"),
    }


def no_data(name: str, data) -> None:
    """Refuse a data file for a problem that has none."""
    if data is not None:
        raise ValueError(f"The {name} problem takes no data file; omit `--data`.")


def plot_solution(problem, result, *, title: str, references=None):
    """States and controls of ``result.x`` against time."""
    from adjoint.plotting import plot_states_controls

    w = result.x
    return plot_states_controls(
        problem.times(w),
        problem.states(w),
        problem.control_times(w),
        problem.controls(w),
        control_kind=problem.parameterisation.kind,
        t_end=problem.times(w)[-1],
        state_names=problem.state_names,
        control_names=problem.control_names,
        u_lower=problem.u_lower,
        u_upper=problem.u_upper,
        references=references,
        title=title,
    )


def check_at_guess(problem, w):
    """Gradient checks of cost and constraints at ``w`` (a report with ``str``)."""
    return adjoint.check_control_problem(problem, np.asarray(w, dtype=np.float64))


def compare(problem, name: str, x0, methods=None, *, out="results", **options):
    """Solve a control problem without constraints beyond its box bounds under
    several optimisers and gradient sources (:func:`adjoint.compare`).

    The box bounds go to the methods that take them; methods that do not
    (BFGS, CG, Newton-CG, ...) run unbounded, which the table shows as a
    different final cost where a bound is active.  With ``out`` a directory,
    writes ``NAME-compare.md``, ``.csv`` and ``.png`` there.
    """
    from pathlib import Path

    options.setdefault("tol", 1e-10)
    options.setdefault("name", name)
    if problem.has_bounds:
        options.setdefault("bounds", problem.bounds())
    comparison = adjoint.compare(
        problem, np.asarray(x0, dtype=np.float64), methods=methods, **options
    )
    if out is not None:
        comparison.write(Path(out) / f"{name}-compare")
    return comparison
