"""A comparison harness: one problem, many optimisers and gradient sources.

:func:`compare` runs ``scipy.optimize.minimize`` from the same start under
several methods, each with one source of derivatives:

- ``'adjoint'``: cost and gradient from one forward and one adjoint sweep
  (``jac=True``);
- ``'hvp'``: the same, plus Hessian-vector products by the second-order
  adjoint (:func:`adjoint.hessian_vector_product`);
- ``'2-point'`` and ``'3-point'``: SciPy's own finite-difference gradients
  of the cost (``n + 1`` or ``2n + 1`` forward sweeps per gradient);
- ``'none'``: derivative-free methods.

Every cost evaluation is recorded (wall time, forward sweeps so far, cost),
so the table reports *measured* sweep counts (the target's ``counts``), and
the cost at which each run first came within a tolerance of the best cost
any run found.  A run that fails, raises or exceeds its budget stays in the
table with its reason; the harness never stops at the first failure.  A
cost evaluation whose sweep fails (the model blows up at a trial point)
returns ``J = inf``, as :meth:`ParameterEstimation.fit` does, so line
searches can step back; the run's message counts them.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from . import _validate
from ._errors import SweepError
from ._hessian import _adapt, hessian_vector_product

__all__ = ["Comparison", "ComparisonRun", "compare", "DEFAULT_METHODS"]

GRADIENT_METHODS = ("L-BFGS-B", "BFGS", "CG", "SLSQP", "trust-constr")
HVP_METHODS = ("Newton-CG", "trust-krylov", "trust-ncg")
FREE_METHODS = ("Nelder-Mead", "Powell", "COBYLA")
# Methods that take box bounds in scipy.optimize.minimize.
BOUNDED_METHODS = (
    "L-BFGS-B",
    "SLSQP",
    "trust-constr",
    "Nelder-Mead",
    "Powell",
    "COBYLA",
    "TNC",
    "COBYQA",
)
SOURCES = ("adjoint", "hvp", "2-point", "3-point", "none")
DEFAULT_METHODS = (
    [f"{m}:adjoint" for m in GRADIENT_METHODS]
    + [f"{m}:hvp" for m in HVP_METHODS]
    + [f"{m}:2-point" for m in GRADIENT_METHODS]
    + [f"{m}:3-point" for m in GRADIENT_METHODS]
    + [f"{m}:none" for m in FREE_METHODS]
)
# A run has reached the optimum once its cost is within
# TARGET_RTOL · max(1, |J*|) of the best cost J* found by any run.
TARGET_RTOL = 1e-6
# Default budget of one run: cost evaluations (finite-difference ones
# included), wall time in seconds, iterations.
MAX_EVALUATIONS = 20_000
MAX_TIME = 60.0
MAX_ITERATIONS = 10_000

_CANONICAL = {
    m.lower(): m
    for m in (
        *GRADIENT_METHODS,
        *HVP_METHODS,
        *FREE_METHODS,
        "TNC",
        "COBYQA",
        "dogleg",
        "trust-exact",
    )
}


class _Stop(Exception):
    """A run exceeded its budget."""


@dataclass
class ComparisonRun:
    """One method with one gradient source, as run by :func:`compare`.

    :func:`compare` builds these; a user reads them through
    ``Comparison.runs`` or :meth:`Comparison.run`.

    Parameters
    ----------
    method, source : str
        The SciPy method (``'L-BFGS-B'``) and the source of derivatives
        (``'adjoint'``, ``'hvp'``, ``'2-point'``, ``'3-point'``, ``'none'``).
    status : str
        ``'converged'`` (SciPy reports success), ``'failed'`` (SciPy reports
        failure), ``'limit'`` (the harness stopped it: budget) or ``'error'``
        (it raised).
    message : str
        SciPy's message, or the reason the run stopped.
    x : ndarray
        The result (for a stopped run: the best point it evaluated).
    fun : float
    nit, nfev, njev, nhev : int
        Iterations, cost evaluations (all of them, finite-difference ones
        included), gradients (adjoint, or SciPy's finite-difference count),
        Hessian-vector products.
    sweeps : dict
        Sweeps the run caused, from the target's counters: ``forward``,
        ``adjoint``, ``tangent``, ``hvp`` (complex forward-and-adjoint pairs).
    wall_time : float
        Seconds, excluding compilation (each route is warmed up first).
    history : ndarray, shape (n_evaluations, 4)
        Per cost evaluation: seconds since the start, forward sweeps so far
        (``hvp`` pairs included), cost, iterations completed.
    distance : float
        ``|x − x*|``, the distance from the comparison's best point.
    reached : dict or None
        When the run first came within the tolerance of the best cost:
        ``time``, ``forward``, ``nit`` and ``evaluations`` at that
        evaluation; None if it never did.

    Examples
    --------
    >>> from adjoint import ComparisonRun
    >>> run = ComparisonRun("L-BFGS-B", "adjoint", status="converged",
    ...                     sweeps={"forward": 6, "adjoint": 6, "hvp": 0})
    >>> run.label, run.success, run.forward_sweeps
    ('L-BFGS-B (adjoint)', True, 6)
    """

    method: str
    source: str
    status: str = "error"
    message: str = ""
    x: np.ndarray | None = None
    fun: float = math.nan
    nit: int = 0
    nfev: int = 0
    njev: int = 0
    nhev: int = 0
    sweeps: dict = field(default_factory=dict)
    wall_time: float = 0.0
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    distance: float = math.nan
    reached: dict | None = None

    @property
    def success(self) -> bool:
        """True when SciPy reported success (``status == 'converged'``).

        Returns
        -------
        bool
        """
        return self.status == "converged"

    @property
    def label(self) -> str:
        """The run's name in tables and legends, ``'METHOD (SOURCE)'``.

        Returns
        -------
        str
        """
        return f"{self.method} ({self.source})"

    @property
    def forward_sweeps(self) -> int | None:
        """Forward sweeps in all: real ones plus the complex ones of the
        Hessian-vector products.

        Returns
        -------
        int or None
            None for a target without counters.
        """
        if not self.sweeps:
            return None
        return int(self.sweeps.get("forward", 0) + self.sweeps.get("hvp", 0))


@dataclass
class Comparison:
    """Runs of :func:`compare` and what they are measured against.

    ``str(comparison)`` is an aligned table; :meth:`to_markdown`,
    :meth:`to_csv` and :meth:`plot` give the other forms, :meth:`write` all of
    them to files.

    Parameters
    ----------
    runs : list of ComparisonRun
        In the order they ran.
    x_best : ndarray, shape (size,)
        The point distances are measured from (the best run's result, or the
        ``x_best`` given to :func:`compare`).
    fun_best : float
        The best cost ``J*`` any run found (NaN if none finished).
    target_rtol : float
        A run reached ``J*`` once within ``target_rtol · max(1, |J*|)``.
    name : str, optional
        Title of tables and figures.
    files : list of str, optional
        Files written by :meth:`write` (listed under the table).

    Examples
    --------
    >>> from adjoint import Chain, Dense, Objective, Tanh, compare, init_params
    >>> net = Chain([Dense(2, 3), Tanh(), Dense(3, 1)], loss="mse",
    ...             targets=[[1.0], [0.0]])
    >>> obj = Objective(net, x0=[[1.0, 2.0], [0.5, -1.0]],
    ...                 thetas=init_params(net), wrt="theta")
    >>> comparison = compare(obj, methods=["L-BFGS-B", "L-BFGS-B:2-point"])
    >>> [(run.label, run.status) for run in comparison.runs]
    [('L-BFGS-B (adjoint)', 'converged'), ('L-BFGS-B (2-point)', 'converged')]
    >>> adjoint = comparison.run("L-BFGS-B", "adjoint").forward_sweeps
    >>> adjoint < comparison.run("L-BFGS-B", "2-point").forward_sweeps
    True
    >>> comparison.to_csv().splitlines()[0]  # doctest: +ELLIPSIS
    'method,gradient,success,status,cost,|x-x*|,nit,nfev,...,message'
    """

    runs: list
    x_best: np.ndarray
    fun_best: float
    target_rtol: float
    name: str = ""
    files: list = field(default_factory=list)

    def run(self, method: str, source: str | None = None) -> ComparisonRun:
        """The run of ``method`` with ``source``.

        Parameters
        ----------
        method : str
            A method name, or ``'METHOD:SOURCE'``.
        source : str, optional
            The source of derivatives; default the method's default source
            (as in :func:`compare`).

        Returns
        -------
        ComparisonRun

        Raises
        ------
        KeyError
            If no such run is in the comparison.
        ValueError
            For an unknown method or source.
        """
        method, source = _parse(f"{method}:{source}" if source else method)
        for run in self.runs:
            if run.method == method and run.source == source:
                return run
        raise KeyError(f"No run of {method} with source {source!r}.")

    # ---- tables ----

    COLUMNS = (
        "method",
        "gradient",
        "success",
        "status",
        "cost",
        "|x-x*|",
        "nit",
        "nfev",
        "njev",
        "nhev",
        "forward",
        "adjoint",
        "hvp",
        "time [s]",
        "fwd to J*",
        "time to J*",
        "nit to J*",
        "message",
    )

    def rows(self) -> list[list]:
        """The table's values, one list per run, in the order of ``COLUMNS``.

        Returns
        -------
        list of list
            Raw values (numbers, strings, None where nothing applies).
        """
        out = []
        for r in self.runs:
            reach = r.reached or {}
            out.append(
                [
                    r.method,
                    r.source,
                    r.success,
                    r.status,
                    r.fun,
                    r.distance,
                    r.nit,
                    r.nfev,
                    r.njev,
                    r.nhev,
                    r.forward_sweeps,
                    r.sweeps.get("adjoint") if r.sweeps else None,
                    r.sweeps.get("hvp", 0) if r.sweeps else None,
                    r.wall_time,
                    reach.get("forward"),
                    reach.get("time"),
                    reach.get("nit"),
                    " ".join(str(r.message).split()),
                ]
            )
        return out

    def _formatted(self, message_width=None):
        rows = []
        for row in self.rows():
            cells = []
            for name, value in zip(self.COLUMNS, row):
                cells.append(_format(name, value))
            if message_width is not None and len(cells[-1]) > message_width:
                cells[-1] = cells[-1][: message_width - 1] + "…"
            rows.append(cells)
        return rows

    def __str__(self) -> str:
        rows = self._formatted(message_width=40)
        widths = [
            max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
            for i, c in enumerate(self.COLUMNS)
        ]
        left = {0, 1, 3, len(self.COLUMNS) - 1}
        lines = []
        title = (
            f"Comparison{' on ' + self.name if self.name else ''}: best cost "
            f"J* = {self.fun_best:.10g}; 'to J*' = first within "
            f"{self.target_rtol:.0e}·max(1, |J*|)"
        )
        lines.append(title)

        def line(cells):
            return "  ".join(
                c.ljust(w) if i in left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        lines.append(line(list(self.COLUMNS)))
        lines.append(line(["-" * w for w in widths]))
        lines.extend(line(r) for r in rows)
        lines.extend(f"wrote {path}" for path in self.files)
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The table in GitHub Markdown, with a note on ``J*``.

        Returns
        -------
        str
        """
        rows = self._formatted()
        head = "| " + " | ".join(c.replace("|", "\\|") for c in self.COLUMNS) + " |"
        rule = (
            "|"
            + "|".join(
                "---" if i in (0, 1, 3, len(self.COLUMNS) - 1) else "---:"
                for i in range(len(self.COLUMNS))
            )
            + "|"
        )
        body = [
            "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows
        ]
        note = (
            f"\nBest cost J* = {self.fun_best:.12g}. 'to J*': forward sweeps, "
            f"seconds and iterations until the cost first came within "
            f"{self.target_rtol:.0e}·max(1, |J*|); '–' where it never did.\n"
        )
        return "\n".join([head, rule, *body]) + "\n" + note

    def to_csv(self) -> str:
        """The table as CSV: raw numbers, empty cells where nothing was reached.

        Returns
        -------
        str
            A header row of ``COLUMNS`` and one row per run.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.COLUMNS)
        for row in self.rows():
            writer.writerow(["" if v is None else v for v in row])
        return buffer.getvalue()

    def plot(self, **kwargs):
        """Cost against wall time and against forward sweeps, one line per run.

        Parameters
        ----------
        **kwargs
            Passed to :func:`adjoint.plotting.plot_comparison` (``title``
            defaults to the comparison's name).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from .plotting import plot_comparison

        return plot_comparison(
            [r.label for r in self.runs],
            [r.history for r in self.runs],
            fun_best=self.fun_best,
            title=kwargs.pop("title", self.name or None),
            **kwargs,
        )

    def write(self, stem) -> list:
        """Write ``STEM.md``, ``STEM.csv`` and ``STEM.png``.

        The directory is created if needed; the paths are then listed under
        ``str(comparison)``.

        Parameters
        ----------
        stem : str or path-like
            The files' path without suffix.

        Returns
        -------
        list of pathlib.Path
            The three files written.

        Raises
        ------
        OSError
            If a file cannot be written.
        """
        from pathlib import Path

        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = [
            stem.with_suffix(".md"),
            stem.with_suffix(".csv"),
            stem.with_suffix(".png"),
        ]
        title = f"# Optimiser comparison{': ' + self.name if self.name else ''}\n\n"
        paths[0].write_text(title + self.to_markdown(), encoding="utf-8")
        paths[1].write_text(self.to_csv(), encoding="utf-8")
        self.plot().savefig(paths[2], dpi=120)
        self.files = [str(p) for p in paths]
        return paths


def _format(name, value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "nan"
    if name == "cost":
        return f"{value:.10g}"
    if name in ("time [s]", "time to J*"):
        return f"{value:.3g}"
    return f"{value:.2e}"


# ---- the harness ----


def compare(
    target,
    x0=None,
    *,
    methods=None,
    bounds=None,
    tol=None,
    options=None,
    hessp_method: str = "auto",
    max_evaluations: int = MAX_EVALUATIONS,
    max_time: float = MAX_TIME,
    max_iterations: int = MAX_ITERATIONS,
    target_rtol: float = TARGET_RTOL,
    x_best=None,
    name: str = "",
    warm_up: bool = True,
    repeat: int = 1,
) -> Comparison:
    """Run one problem under several optimisers and gradient sources.

    Parameters
    ----------
    target : Objective, ControlProblem, ParameterEstimation or object
        The cost: anything :func:`adjoint.hessian_vector_product` accepts (an
        object needs ``value_and_grad(x)``, ``size`` and, for the sweep
        columns, ``counts``; ``fun(x)`` is used for the cost alone when
        present).
    x0 : array_like, optional
        The start of every run (default: the target's own, e.g.
        ``Objective.z0``).
    methods : sequence of str, optional
        Runs as ``'METHOD'`` or ``'METHOD:SOURCE'``, SOURCE one of
        ``'adjoint'``, ``'hvp'``, ``'2-point'``, ``'3-point'``, ``'none'``;
        the default source is ``'none'`` for Nelder–Mead, Powell and COBYLA,
        ``'hvp'`` for Newton-CG, trust-krylov and trust-ncg, else
        ``'adjoint'``.  Default :data:`DEFAULT_METHODS`: five gradient methods
        with adjoint gradients, three with Hessian-vector products, the five
        with SciPy's ``'2-point'`` and ``'3-point'`` gradients, three
        derivative-free methods.
    bounds : scipy.optimize.Bounds or sequence of (low, high), optional
        Passed to the methods that take bounds (L-BFGS-B, SLSQP, trust-constr,
        Nelder–Mead, Powell, COBYLA); a run of another method says so in its
        message.  Default: the target's ``bounds()`` where it has bounds.
    tol, options : optional
        ``tol`` for every run; ``options`` a dict of options for every run,
        or a dict from method name to options.
    hessp_method : {'auto', 'complex', 'fd'}
        How ``'hvp'`` runs form products (see
        :func:`~adjoint.hessian_vector_product`).
    max_evaluations, max_time, max_iterations : optional
        Budget of one run: cost evaluations (finite-difference ones counted),
        seconds, iterations (SciPy's ``maxiter``).

    Other Parameters
    ----------------
    target_rtol : float
        A run reaches the optimum when its cost is within
        ``target_rtol · max(1, |J*|)`` of the best cost found.
    x_best : array_like, optional
        A known minimiser to measure distances from (default: the best run's
        result).
    name : str
        A title for tables and figures.
    warm_up : bool
        Evaluate each route once before timing, so compilation is not
        charged to the first run (default True).
    repeat : int
        Run each method this many times and keep the fastest (the runs are
        deterministic, so only the wall time differs); more than 1 steadies
        timings on a busy machine.

    Returns
    -------
    Comparison
        The runs, in order, with the best cost and point; ``str()`` of it is
        the table.

    Raises
    ------
    ValueError
        If ``x0`` is missing and the target has no starting point, ``x0`` does
        not fit the target, or a method, source, ``hessp_method`` or
        ``repeat`` is invalid.
    TypeError
        If ``target`` is of an unsupported kind (see
        :func:`~adjoint.hessian_vector_product`).

    Notes
    -----
    A run that fails, raises or exceeds its budget does not raise: it stays
    in the table with its status and message.

    Runs are sequential, in the order given, each from ``x0``.  The sweep
    columns are differences of the target's counters around the run; wall
    time includes everything the optimiser does.  A Hessian-vector product
    runs one forward and one adjoint sweep in complex arithmetic (dearer per
    operation than a real pair, see :mod:`adjoint._hessian`); it is counted
    as one forward sweep in the ``forward`` column and separately as
    ``hvp``.

    Examples
    --------
    >>> from adjoint import Chain, Dense, Objective, Tanh, compare, init_params
    >>> net = Chain([Dense(2, 3), Tanh(), Dense(3, 1)], loss="mse",
    ...             targets=[[1.0], [0.0]])
    >>> obj = Objective(net, x0=[[1.0, 2.0], [0.5, -1.0]],
    ...                 thetas=init_params(net), wrt="theta")
    >>> comparison = compare(obj, methods=["L-BFGS-B", "L-BFGS-B:2-point"])
    >>> print(comparison)  # doctest: +ELLIPSIS
    Comparison: best cost J* = ...
    method    gradient  success  status ...
    --------  --------  -------  --------- ...
    L-BFGS-B  adjoint       yes  converged ...
    L-BFGS-B  2-point       yes  converged ...
    """
    problem = _Problem(target)
    specs = [_parse(m) for m in (DEFAULT_METHODS if methods is None else methods)]
    x0 = problem.x0 if x0 is None else x0
    if x0 is None:
        raise ValueError("`x0` is required: the target has no starting point.")
    x0 = _validate.real_array(
        "x0", x0, (problem.size,), what=f"the target has {problem.size} unknowns"
    )
    if bounds is None:
        bounds = problem.bounds
    _validate.choice("hessp_method", hessp_method, ("auto", "complex", "fd"))

    # Warm up every route so that compilation is not timed
    if warm_up:
        problem.fun(x0)
        problem.value_and_grad(x0)
        if any(source == "hvp" for _, source in specs):
            try:
                problem.hessp(x0, np.ones(problem.size), hessp_method)
            except Exception:  # the run itself will report it
                pass

    runs = []
    repeat = _validate.positive_int("repeat", repeat)
    for method, source in specs:
        opts = _options_for(options, method)
        opts.setdefault("maxiter", int(max_iterations))
        tries = [
            _run(
                problem,
                method,
                source,
                x0,
                bounds,
                tol,
                opts,
                hessp_method,
                max_evaluations,
                max_time,
            )
            for _ in range(repeat)
        ]
        runs.append(min(tries, key=lambda r: r.wall_time))

    # Distances from the best result, and when each run first reached it
    finite = [r for r in runs if np.isfinite(r.fun) and r.x is not None]
    if not finite:
        best = None
        fun_best = math.nan
    else:
        best = min(finite, key=lambda r: r.fun)
        fun_best = best.fun
    if x_best is None:
        x_best = best.x if best is not None else x0
    x_best = np.asarray(x_best, dtype=np.float64)
    threshold = fun_best + target_rtol * max(1.0, abs(fun_best))
    for r in runs:
        if r.x is not None:
            r.distance = float(np.linalg.norm(r.x - x_best))
        r.reached = _reached(r.history, threshold)
    return Comparison(runs, x_best, fun_best, target_rtol, name=name)


def _parse(spec):
    text = str(spec).strip()
    method, _, source = text.partition(":")
    key = method.strip().lower().replace("_", "-")
    if key not in _CANONICAL:
        raise ValueError(
            f"Unknown method {method!r} in {spec!r}; use one of "
            f"{', '.join(sorted(_CANONICAL.values()))}, optionally followed by "
            f"':SOURCE' with SOURCE in {', '.join(SOURCES)}."
        )
    method = _CANONICAL[key]
    if not source:
        source = (
            "none"
            if method in (*FREE_METHODS, "COBYQA")
            else "hvp"
            if method in HVP_METHODS
            else "adjoint"
        )
    source = source.strip().lower()
    _validate.choice("source", source, SOURCES)
    return method, source


def _options_for(options, method):
    if not options:
        return {}
    if all(isinstance(v, dict) for v in options.values()):
        return dict(options.get(method, {}))
    return dict(options)


def _reached(history, threshold):
    if not history.size or not np.isfinite(threshold):
        return None
    hit = np.flatnonzero(history[:, 2] <= threshold)
    if not hit.size:
        return None
    i = int(hit[0])
    return {
        "time": float(history[i, 0]),
        "forward": int(history[i, 1]),
        "nit": int(history[i, 3]),
        "evaluations": i + 1,
    }


class _Problem:
    """The target seen through the routes the harness times and counts."""

    def __init__(self, target):
        from ._control import ControlProblem
        from ._estimation import ParameterEstimation

        adapter = _adapt(target)
        self.target = target
        self.size = adapter.size
        self.x0 = adapter.z0
        self.value_and_grad = adapter.value_and_grad
        if isinstance(target, ParameterEstimation):
            self.fun = lambda z: _estimation_cost(target, z)
            self._counts = target.objective.counts
        else:
            fun = getattr(target, "fun", None)
            self.fun = fun if callable(fun) else (lambda z: self.value_and_grad(z)[0])
            self._counts = getattr(target, "counts", None)
        self.bounds = None
        if isinstance(target, ControlProblem):
            has = target.has_bounds
            if has() if callable(has) else has:
                self.bounds = target.bounds()

    def forget(self):
        """Drop the target's stored trajectory, so every run starts cold."""
        obj = (
            self.target
            if hasattr(self.target, "_last")
            else getattr(self.target, "objective", None)
        )
        if obj is not None and hasattr(obj, "_last"):
            obj._last = None

    def hessp(self, z, v, method):
        return hessian_vector_product(self.target, z, v, method=method)

    def counts(self) -> dict:
        if self._counts is None:
            return {}
        return {k: int(v) for k, v in dict(self._counts).items()}


def _estimation_cost(est, z):
    """The misfit of a ParameterEstimation alone: one forward sweep, no adjoint."""
    z = np.asarray(z, dtype=np.float64)
    if not est.fit_noise:
        return float(est.objective.trajectory(est._model_z(z)).J)
    # Profiled noise scale: J = Σ_c ½ n_c (log(S_c / n_c) + 1).
    S = np.nansum(est.residuals(z) ** 2, axis=0)
    return float(np.sum(0.5 * est.n_counts * (np.log(S / est.n_counts) + 1.0)))


class _Recorder:
    """Counts, times and records every evaluation of one run; enforces its budget."""

    def __init__(self, problem, max_evaluations, max_time):
        self.problem = problem
        self.max_evaluations = max_evaluations
        self.max_time = max_time
        self.before = problem.counts()
        self.start = time.perf_counter()
        self.nfev = self.njev = self.nhev = self.nit = self.failed = 0
        self.history = []
        self.best = (math.inf, None)

    def sweeps(self) -> dict:
        now = self.problem.counts()
        return {k: now.get(k, 0) - self.before.get(k, 0) for k in now}

    def _check(self):
        if self.nfev >= self.max_evaluations:
            raise _Stop(f"stopped by the harness after {self.nfev} cost evaluations")
        if time.perf_counter() - self.start > self.max_time:
            raise _Stop(f"stopped by the harness after {self.max_time:g} s")

    def _record(self, z, J):
        sweeps = self.sweeps()
        if sweeps:
            forward = sweeps.get("forward", 0) + sweeps.get("hvp", 0)
        else:  # a target without counters: one forward sweep per evaluation
            forward = self.nfev
        J = float(J)
        self.history.append((time.perf_counter() - self.start, forward, J, self.nit))
        if J < self.best[0]:
            self.best = (J, np.array(z, dtype=np.float64))

    def fun(self, z):
        self._check()
        try:
            J = self.problem.fun(z)
        except SweepError:
            J = self._failed()
        self.nfev += 1
        self._record(z, J)
        return J

    def value_and_grad(self, z):
        self._check()
        try:
            J, g = self.problem.value_and_grad(z)
        except SweepError:
            J, g = self._failed(), np.zeros(self.problem.size)
        self.nfev += 1
        self.njev += 1
        self._record(z, J)
        return J, np.array(g, dtype=np.float64)

    def _failed(self):
        # A trial point where the model blows up (non-finite states): an
        # infinite cost sends a line search back, as ParameterEstimation.fit does.
        self.failed += 1
        return math.inf

    def callback(self, *args, **kwargs):
        self.nit += 1


def _run(
    problem,
    method,
    source,
    x0,
    bounds,
    tol,
    options,
    hessp_method,
    max_evaluations,
    max_time,
) -> ComparisonRun:
    run = ComparisonRun(method, source)
    problem.forget()
    rec = _Recorder(problem, max_evaluations, max_time)
    notes = []
    kwargs = {
        "method": method,
        "tol": tol,
        "options": options,
        "callback": rec.callback,
    }
    if source in ("adjoint", "hvp"):
        fun, kwargs["jac"] = rec.value_and_grad, True
    elif source in ("2-point", "3-point"):
        fun, kwargs["jac"] = rec.fun, source
    else:
        fun = rec.fun
    if source == "hvp":

        def hessp(z, v, *args):
            rec._check()
            if not np.all(np.isfinite(v)):
                # A breakdown inside SciPy's subproblem solver: hand NaN back
                # and let the method report it, as a plain function would.
                return np.full(problem.size, np.nan)
            rec.nhev += 1
            return problem.hessp(z, v, hessp_method)

        kwargs["hessp"] = hessp
    if bounds is not None:
        if method in BOUNDED_METHODS:
            kwargs["bounds"] = bounds
        else:
            notes.append("bounds not supported by this method, ignored")

    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported through status/message
            res = minimize(fun, np.array(x0, dtype=np.float64), **kwargs)
        run.status = "converged" if res.success else "failed"
        run.message = str(res.message)
        run.x = np.array(res.x, dtype=np.float64)
        run.fun = float(res.fun)
        run.nit = int(res.get("nit", rec.nit) or rec.nit)
        if source in ("2-point", "3-point"):
            run.njev = int(res.get("njev", 0) or 0)
    except _Stop as stop:
        run.status, run.message = "limit", str(stop)
    except Exception as err:  # any failure stays in the table
        run.status = "error"
        run.message = f"{type(err).__name__}: {err}"
    run.wall_time = time.perf_counter() - start
    if run.x is None or not np.isfinite(run.fun):
        best_fun, best_x = rec.best
        if best_x is not None:
            run.fun, run.x = best_fun, best_x
        run.nit = run.nit or rec.nit
    run.nfev = rec.nfev
    if source in ("adjoint", "hvp"):
        run.njev = rec.njev
    run.nhev = rec.nhev
    run.sweeps = rec.sweeps()
    run.history = (
        np.array(rec.history, dtype=np.float64) if rec.history else np.zeros((0, 4))
    )
    if rec.failed:
        notes.append(
            f"{rec.failed} evaluations failed (non-finite model), returned as J = inf"
        )
    if notes:
        run.message = "; ".join([run.message, *notes]) if run.message else notes[0]
    return run
