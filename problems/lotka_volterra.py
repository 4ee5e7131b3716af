"""Lotka–Volterra predator–prey model fitted to the Hudson's Bay Company pelts.

Model (hare ``H`` = prey, lynx ``L`` = predator, time in years)::

    dH/dt = α H − β H L
    dL/dt = δ H L − γ L

Data: yearly hare and lynx pelts (thousands) collected by the Hudson's Bay
Company, 1900–1920 (Hewitt 1921), in the transcription of the Stan case
study (Carpenter 2018); shipped as ``problems/data/hudson_bay_lynx_hare_1900_1920.csv``
with its provenance header.

Unknowns: the four rates and the two initial populations (at 1900), all on
the log scale, fitted by least squares on the log scale (a log-normal
observation model, as in the case study).  The model is integrated with RK4 at
20 steps per year; observations fall on the grid.

Reference: the Stan case study's posterior means α ≈ 0.55, β ≈ 0.028,
γ ≈ 0.80, δ ≈ 0.024 (a Bayesian fit with priors, so close to, not equal to,
the least-squares values).

References
----------
C. G. Hewitt (1921), *The Conservation of the Wild Life of Canada*, Scribner.
B. Carpenter (2018), "Predator-Prey Population Dynamics: the Lotka-Volterra
model in Stan", Stan case studies.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from adjoint import ODESystem, ParameterEstimation
from adjoint._data import load_csv_table

from . import _fitting

DESCRIPTION = (
    "Lotka–Volterra rates fitted to Hudson's Bay lynx–hare pelts, "
    "1900–1920"
)  # fmt: skip
DATA_FILE = "hudson_bay_lynx_hare_1900_1920.csv"
COLUMNS = ["hare", "lynx"]
TIME_COLUMN = "year"
PARAMETER_NAMES = ["alpha", "beta", "gamma", "delta"]
STATE_NAMES = ["hare", "lynx"]
STEPS_PER_YEAR = 20
# Starting rates for the fit (per year), of the size the ecology suggests.
INITIAL_RATES = (0.5, 0.025, 0.8, 0.025)
METHODS = _fitting.METHODS  # what `adjoint solve --method` accepts
REFERENCE = {
    "stan_case_study": {"alpha": 0.55, "beta": 0.028, "gamma": 0.80, "delta": 0.024},
}


# ---- right-hand side and its products (hand-written kernels) ----


def rhs(t, x, p, u, out):
    """``(α H − β H L, δ H L − γ L)``
    with ``x = (H, L)``, ``p = (α, β, γ, δ)``."""
    out[0] = p[0] * x[0] - p[1] * x[0] * x[1]
    out[1] = p[3] * x[0] * x[1] - p[2] * x[1]
    return 0


def rhs_vjp(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    """Vector-Jacobian product of :func:`rhs`."""
    x_bar[0] += f_bar[0] * (p[0] - p[1] * x[1]) + f_bar[1] * p[3] * x[1]
    x_bar[1] += -f_bar[0] * p[1] * x[0] + f_bar[1] * (p[3] * x[0] - p[2])
    p_bar[0] += f_bar[0] * x[0]
    p_bar[1] -= f_bar[0] * x[0] * x[1]
    p_bar[2] -= f_bar[1] * x[1]
    p_bar[3] += f_bar[1] * x[0] * x[1]
    return 0


def rhs_jvp(t, x, p, u, x_tan, p_tan, u_tan, out):
    """Jacobian-vector product of :func:`rhs`."""
    out[0] = (
        (p[0] - p[1] * x[1]) * x_tan[0]
        - p[1] * x[0] * x_tan[1]
        + p_tan[0] * x[0]
        - p_tan[1] * x[0] * x[1]
    )
    out[1] = (
        p[3] * x[1] * x_tan[0]
        + (p[3] * x[0] - p[2]) * x_tan[1]
        + p_tan[3] * x[0] * x[1]
        - p_tan[2] * x[1]
    )
    return 0


def rhs_jac_x(t, x, p, u, jac_out):
    """Jacobian of :func:`rhs` with respect to the state."""
    jac_out[0, 0] = p[0] - p[1] * x[1]
    jac_out[0, 1] = -p[1] * x[0]
    jac_out[1, 0] = p[3] * x[1]
    jac_out[1, 1] = p[3] * x[0] - p[2]
    return 0


def system() -> ODESystem:
    """The Lotka–Volterra system with hand-written derivative kernels."""
    return ODESystem.from_kernels(rhs, rhs_vjp, rhs_jvp, rhs_jac_x, n=2, n_p=4)


# ---- the problem surface (DESIGN.md section 10) ----


def build(data=None) -> _fitting.FitProblem:
    """The fitting problem on the bundled data, or on the CSV file ``data``
    with the same columns (year, hare, lynx)."""
    if data is None:
        with resources.as_file(
            resources.files(__package__) / "data" / DATA_FILE
        ) as path:
            table = load_csv_table(
                path, COLUMNS, time_column=TIME_COLUMN, positive_columns=COLUMNS
            )
    else:
        table = load_csv_table(
            data, COLUMNS, time_column=TIME_COLUMN, positive_columns=COLUMNS
        )
    years = table[TIME_COLUMN]
    y = np.column_stack([table[c] for c in COLUMNS])
    t = years - years[0]
    estimation = ParameterEstimation(
        system(),
        t,
        y,
        x0=y[0],
        p=INITIAL_RATES,
        fit_p=True,
        fit_x0=True,
        log_params=True,
        scale="log",
        steps_per_interval=STEPS_PER_YEAR,
        p_names=PARAMETER_NAMES,
        x_names=STATE_NAMES,
    )
    return _fitting.FitProblem(
        "lotka-volterra",
        estimation,
        years,
        y,
        COLUMNS,
        header=table.get("__header__", []),
        source="" if data is None else str(data),
    )


def initial_guess(problem) -> np.ndarray:
    """Log values of the starting guess: first observations and INITIAL_RATES."""
    return problem.estimation.z_from_values(problem.estimation.x0, problem.estimation.p)


solve = _fitting.solve
check = _fitting.check
compare = _fitting.compare


def plot(problem, result):
    """Data and fitted populations against time, with a phase-plane panel."""
    from adjoint.plotting import plot_fit

    ts, xs = _fitting.fitted_trajectory(problem, result)
    year0 = problem.t_obs[0]
    return plot_fit(
        ts + year0,
        xs,
        problem.t_obs,
        problem.y_obs,
        ["hare", "lynx"],
        phase=True,
        xlabel="year",
        ylabel="population" if problem.source else "pelts (thousands)",
        title=(
            f"Lotka–Volterra fit to {Path(problem.source).name}"
            if problem.source
            else "Lotka–Volterra fit to Hudson's Bay Company pelts"
        ),
    )
