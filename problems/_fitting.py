"""What the data-fitting problems share: solve, check and the gradient report.

A fitting problem module builds a :class:`FitProblem` (its estimation set-up
plus the data it came from); the functions here solve and check it the same
way for every model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adjoint import ParameterEstimation, check_gradients
from adjoint._estimation import METHODS  # noqa: F401  (the --method choices)


@dataclass
class FitProblem:
    """An estimation set-up and the data table it fits."""

    name: str
    estimation: ParameterEstimation
    t_obs: np.ndarray
    y_obs: np.ndarray
    column_names: list
    header: list = field(default_factory=list)
    source: str = ""


def solve(problem: FitProblem, method: str | None = None, progress=None):
    """Fit the problem with adjoint gradients; returns a ``FitResult``."""
    return problem.estimation.fit(method=method or "L-BFGS-B", progress=progress)


def check(problem: FitProblem):
    """Gradient checks of the misfit at the starting guess (complex step,
    central differences, Taylor orders, dot-product test, Jacobians)."""
    obj = problem.estimation.objective
    return check_gradients(obj, obj.z0)


def fitted_trajectory(problem: FitProblem, result):
    """Times and states of the fitted model on the integration grid."""
    return problem.estimation.simulate(result.z)


def delta_method_ratio(result, i, j):
    """Value and standard error of ``x_i / x_j`` for two log-scale unknowns.

    With ``z = log x``, ``log(x_i / x_j) = z_i − z_j``, whose variance is
    ``C_ii + C_jj − 2 C_ij``; the ratio's standard error is the ratio times
    its square root.
    """
    C = result.cov_z
    ratio = float(result.x[i] / result.x[j])
    var = C[i, i] + C[j, j] - 2.0 * C[i, j]
    return ratio, ratio * float(np.sqrt(max(var, 0.0)))


def compare(problem: FitProblem, methods=None, *, out="results", **options):
    """Fit the problem under several optimisers and gradient sources.

    Runs :func:`adjoint.compare` on the misfit in the optimiser's variables
    (log values) from the problem's starting guess, with a tight tolerance
    (``tol=1e-10``) so every method tries to reach the optimum.  With ``out``
    a directory (default ``results``), writes ``NAME-compare.md``, ``.csv``
    and ``.png`` there; ``out=None`` writes nothing.  ``options`` go to
    :func:`adjoint.compare`.  Returns the :class:`adjoint.Comparison`, whose
    ``str`` is the table.
    """
    from pathlib import Path

    from adjoint import compare as run_comparison

    est = problem.estimation
    options.setdefault("tol", 1e-10)
    options.setdefault("name", problem.name)
    comparison = run_comparison(
        est, est.z_from_values(est.x0, est.p), methods=methods, **options
    )
    if out is not None:
        comparison.write(Path(out) / f"{problem.name}-compare")
    return comparison
