"""SIR epidemic model fitted to the 1978 English boarding-school influenza outbreak.

Model (time in days, ``N = 763`` boys)::

    dS/dt = −β S I / N
    dI/dt =  β S I / N − γ I
    dR/dt =  γ I

Data: number of boys confined to bed on each of 14 days from 22 January 1978
(BMJ 1978, "Influenza in a boarding school"), the digitisation of the R
package *outbreaks* (column ``in_bed``); shipped as
``problems/data/influenza_england_1978_school.csv`` with its provenance
header.  The number in bed is taken as the number infectious ``I``.

Unknowns: the transmission rate β and the recovery rate γ (log scale), and
optionally the initial number infected ``I0`` (default: one index case on day
0, 21 January).  Misfit: least squares on the raw counts; RK4 with 20 steps a
day.  Reported: ``R0 = β/γ`` with its standard error (delta method on the log
scale).  When ``I0`` is fitted, ``S0`` stays at ``N − 1`` (the difference is
below 0.1 % of ``S``).

References
----------
Anonymous (1978), "Influenza in a boarding school", British Medical Journal
1(6112), 587.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from adjoint import ODESystem, ParameterEstimation
from adjoint._data import load_csv_table

from . import _fitting

DESCRIPTION = (
    "SIR model fitted to the 1978 boarding-school influenza outbreak (N = 763)"
)
DATA_FILE = "influenza_england_1978_school.csv"
COLUMNS = ["in_bed"]
TIME_COLUMN = "day"
POPULATION = 763.0
INITIAL_INFECTED = 1.0
PARAMETER_NAMES = ["beta", "gamma"]
STATE_NAMES = ["S", "I", "R"]
STEPS_PER_DAY = 20
INITIAL_RATES = (2.0, 0.5)  # per day
METHODS = _fitting.METHODS  # what `adjoint solve --method` accepts
REFERENCE = {"population": POPULATION}


def rhs(t, x, p, u, out):
    """SIR ``(−β S I / N, β S I / N − γ I, γ I)`` with ``p = (β, γ)``."""
    infection = p[0] * x[0] * x[1] / POPULATION
    out[0] = -infection
    out[1] = infection - p[1] * x[1]
    out[2] = p[1] * x[1]
    return 0


def system() -> ODESystem:
    """The SIR system, right-hand side only (products by complex step)."""
    return ODESystem.from_rhs(rhs, n=3, n_p=2)


def build(data=None, *, fit_initial_infected: bool = False) -> _fitting.FitProblem:
    """The fitting problem on the bundled data, or on the CSV file ``data``
    with the columns ``day`` and ``in_bed``."""
    if data is None:
        with resources.as_file(
            resources.files(__package__) / "data" / DATA_FILE
        ) as path:
            table = load_csv_table(path, COLUMNS, time_column=TIME_COLUMN)
    else:
        table = load_csv_table(data, COLUMNS, time_column=TIME_COLUMN)
    day = table[TIME_COLUMN]
    y = table["in_bed"][:, None]
    if np.any(y < 0):
        row = int(np.flatnonzero(y[:, 0] < 0)[0])
        from adjoint import DataError

        raise DataError(f"in_bed is negative ({y[row, 0]}) on day {day[row]:g}.")
    x0 = [POPULATION - INITIAL_INFECTED, INITIAL_INFECTED, 0.0]
    estimation = ParameterEstimation(
        system(),
        day,
        y,
        x0=x0,
        p=INITIAL_RATES,
        observed=[1],
        fit_p=True,
        fit_x0=[1] if fit_initial_infected else False,
        log_params=True,
        scale="raw",
        t0=day[0] - 1.0,
        steps_per_interval=STEPS_PER_DAY,
        p_names=PARAMETER_NAMES,
        x_names=STATE_NAMES,
    )
    return _fitting.FitProblem(
        "sir-influenza", estimation, day, y, COLUMNS, header=table.get("__header__", [])
    )


def initial_guess(problem) -> np.ndarray:
    """The fit's unknowns at the starting rates and initial state."""
    est = problem.estimation
    return est.z_from_values(est.x0, est.p)


def solve(problem, method=None, progress=None):
    """Fit β and γ (and I0), and add ``R0 = β/γ`` with its standard error."""
    result = _fitting.solve(problem, method, progress)
    names = result.names
    r0, r0_se = _fitting.delta_method_ratio(
        result, names.index("beta"), names.index("gamma")
    )
    result["derived"] = [("R0", r0, r0_se)]
    return result


check = _fitting.check
compare = _fitting.compare


def plot(problem, result):
    """Boys in bed against day, with the fitted infectious curve."""
    from adjoint.plotting import plot_fit

    ts, xs = _fitting.fitted_trajectory(problem, result)
    r0 = dict((n, v) for n, v, _ in result.table).get("R0", float("nan"))
    return plot_fit(
        ts,
        xs,
        problem.t_obs,
        problem.y_obs,
        ["in bed (I)"],
        observed=[1],
        xlabel="day (1 = 22 Jan 1978)",
        ylabel="boys",
        title=f"SIR fit, R0 = {r0:.2f}",
    )
