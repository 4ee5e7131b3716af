"""The ``adjoint`` command: list, solve, check and compare the included problems.

::

    adjoint list
    adjoint solve NAME [--method M] [--out DIR] [--data FILE]
    adjoint check NAME
    adjoint compare NAME [--methods M [M ...]]

Problems are found through `problems.registry` and imported only when named.
A bad data file, a bad value given to a problem's ``build`` or an unknown
problem name ends the command with one line ``adjoint: error: <message>`` on
standard error and exit status 2, without a traceback; anything else is a bug
and keeps its traceback.

This is the only module of `adjoint` that imports `problems` and the only one
that prints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

import problems

__all__ = ["TqdmProgress", "main"]

# Resolution of the figure `adjoint solve` writes.
FIGURE_DPI = 120


class _CommandError(Exception):
    """A failure to report as one line and exit status 2."""


class TqdmProgress:
    """A tqdm progress bar that a problem's ``solve`` advances.

    The object is callable with SciPy's callback signature
    ``progress(intermediate_result)``, so a problem can pass it straight to
    ``scipy.optimize.minimize(..., callback=progress)``; each call counts one
    iteration and shows the cost ``intermediate_result.fun`` when there is
    one. A hand-written loop (SGD, Adam) calls ``progress.update(fun=J)``
    instead.
    """

    def __init__(self, desc: str, *, file=None) -> None:
        # disable=None: no bar when the stream is not a terminal (logs, CI).
        self._bar = tqdm(
            desc=desc, unit="it", file=file or sys.stderr, leave=True, disable=None
        )

    def __call__(self, intermediate_result: Any = None) -> None:
        self.update(1, fun=getattr(intermediate_result, "fun", None))

    def update(self, n: int = 1, *, fun: Any = None) -> None:
        """Count `n` iterations; show the cost `fun` if it is given."""
        if fun is not None:
            try:
                self._bar.set_postfix_str(f"J={float(fun):.6g}", refresh=False)
            except (TypeError, ValueError):
                pass
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is not None:
            self._bar.leave = False  # clear the bar so the error line stands alone
        self.close()


# ---- subcommands ----


def _cmd_list(args: argparse.Namespace) -> int:
    names = sorted(problems.registry())
    width = max(map(len, names), default=0)
    status = 0
    for name in names:
        try:
            description = str(getattr(problems.get(name), "DESCRIPTION", "")).strip()
        except Exception as err:  # one broken module must not hide the others
            description = f"(cannot be imported: {type(err).__name__}: {err})"
            status = 1
        print(f"{name:<{width}}  {description}")
    return status


def _cmd_solve(args: argparse.Namespace) -> int:
    name, module = _problem(args.name)
    methods = getattr(module, "METHODS", None)
    if args.method is not None and methods is not None and args.method not in methods:
        raise _CommandError(
            f"Problem '{name}' has no method '{args.method}'; choose one of "
            f"{', '.join(methods)}."
        )
    out = _output_directory(args.out)
    problem = _build(module, args.data)

    # Solve, timing the solve alone (not the build or the plot)
    options = {} if args.method is None else {"method": args.method}
    with TqdmProgress(f"solve {name}") as progress:
        start = time.perf_counter()
        result = module.solve(problem, progress=progress, **options)
        wall_time = time.perf_counter() - start

    # Report on standard output
    rows = [(str(row[0]), row[1], row[2]) for row in getattr(result, "table", [])]
    method = getattr(result, "method", None) or args.method
    print(f"{name}" + (f" ({method})" if method else ""))
    if rows:
        print(_format_table(rows))
    print(f"final cost J = {_number(getattr(result, 'fun', None), '.10g')}")
    print(
        f"iterations {_number(getattr(result, 'nit', None))}, "
        f"cost evaluations {_number(getattr(result, 'nfev', None))}, "
        f"gradient evaluations {_number(getattr(result, 'njev', None))}, "
        f"wall time {wall_time:.3g} s"
    )

    if getattr(result, "success", True) is False:
        print(
            f"warning: the solver did not report convergence: "
            f"{getattr(result, 'message', '')}",
            file=sys.stderr,
        )

    # Write the figure and the numbers
    png_path = out / f"{name}.png"
    figure = module.plot(problem, result)
    figure.savefig(png_path, dpi=FIGURE_DPI)
    _close_figure(figure)

    payload: dict[str, Any] = {
        "problem": name,
        "method": method,
        "values": {row_name: value for row_name, value, _ in rows},
        "errors": {row_name: stderr for row_name, _, stderr in rows},
        "cost": getattr(result, "fun", None),
        "iterations": getattr(result, "nit", None),
        "function_evaluations": getattr(result, "nfev", None),
        "gradient_evaluations": getattr(result, "njev", None),
        "wall_time_s": wall_time,
        "success": getattr(result, "success", None),
        "message": getattr(result, "message", None),
        "data": None if args.data is None else str(args.data),
    }
    to_json = getattr(result, "to_json", None)
    for key, value in (to_json() if callable(to_json) else {}).items():
        payload.setdefault(key, value)
    json_path = out / f"{name}.json"
    json_path.write_text(
        json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n",
        encoding="utf-8",
    )

    print(f"wrote {png_path}")
    print(f"wrote {json_path}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    _, module = _problem(args.name)
    problem = _build(module, None)
    report = module.check(problem)
    print(report)
    # A report may say whether every check passed; fail the command if not.
    return 1 if getattr(report, "passed", None) is False else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    name, module = _problem(args.name)
    compare = getattr(module, "compare", None)
    if not callable(compare):
        raise _CommandError(
            f"Problem '{name}' does not support comparison; "
            f"try `adjoint solve {name}` instead."
        )
    problem = _build(module, None)
    if args.methods:
        methods = [m for item in args.methods for m in item.split(",") if m]
        report = compare(problem, methods=methods)
    else:
        report = compare(problem)
    print(report)
    return 0


# ---- helpers ----


def _problem(name: str) -> tuple[str, ModuleType]:
    """Return the registered name and the module; unknown names exit with 2."""
    try:
        key = problems.resolve(name)
    except problems.UnknownProblemError as err:
        raise _CommandError(str(err)) from err
    return key, problems.get(key)


def _output_directory(out: str) -> Path:
    """Create ``--out`` before any work, so a bad path fails in a second."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _CommandError(
            f"The `--out` directory '{out}' cannot be created: {err.strerror}."
        ) from err
    if not os.access(path, os.W_OK):
        raise _CommandError(f"The `--out` directory '{out}' is not writable.")
    return path


def _build(module: ModuleType, data: str | None) -> Any:
    """Call ``module.build``; a `ValueError` there becomes a one-line error."""
    if data is not None and Path(data).is_dir():
        raise _CommandError(f"The `--data` path '{data}' is a directory, not a file.")
    if data is not None and not Path(data).is_file():
        raise _CommandError(f"The `--data` file '{data}' does not exist.")
    try:
        return module.build() if data is None else module.build(data=Path(data))
    except ValueError as err:
        raise _CommandError(str(err)) from err


def _format_table(rows: Sequence[tuple[str, Any, Any]]) -> str:
    """Align ``(name, value, stderr)`` rows as ``name  value ± stderr``."""
    width = max(len("parameter"), *(len(name) for name, _, _ in rows))
    lines = [f"  {'parameter':<{width}}  {'value':>14}    std. error"]
    for name, value, stderr in rows:
        error = _number(stderr, ".3g")
        lines.append(f"  {name:<{width}}  {_number(value, '.8g'):>14}  ± {error}")
    return "\n".join(lines)


def _number(value: Any, spec: str = "") -> str:
    """Format a number, or ``n/a`` when there is none."""
    if value is None:
        return "n/a"
    try:
        if isinstance(value, float) or spec:
            value = float(value)
            return "n/a" if math.isnan(value) else format(value, spec)
        return str(value)
    except (TypeError, ValueError):
        return str(value)


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars and arrays, paths and NaN into strict JSON values."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _close_figure(figure: Any) -> None:
    # Only pyplot keeps figures alive; if the problem never imported it, there
    # is nothing to close and no reason to import matplotlib here.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)


def _is_data_error(err: BaseException) -> bool:
    # Any class named DataError counts, so a problem may define its own.
    return any(cls.__name__ == "DataError" for cls in type(err).__mro__)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("adjoint-toolkit")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adjoint",
        description="Solve the included adjoint-toolkit problems.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    list_parser = commands.add_parser("list", help="list the included problems")
    list_parser.set_defaults(handler=_cmd_list)

    solve = commands.add_parser(
        "solve", help="solve a problem, print the fit, write its figure and JSON"
    )
    solve.add_argument("name", metavar="NAME", help="problem name (see `list`)")
    solve.add_argument(
        "--method",
        metavar="M",
        help="optimiser (default: the problem's own; a wrong name lists the choices)",
    )
    solve.add_argument(
        "--out",
        metavar="DIR",
        default="results",
        help="directory for NAME.png and NAME.json (default: results)",
    )
    solve.add_argument(
        "--data", metavar="FILE", help="CSV file to fit instead of the bundled data"
    )
    solve.set_defaults(handler=_cmd_solve)

    check = commands.add_parser(
        "check", help="run the problem's gradient and reference checks"
    )
    check.add_argument("name", metavar="NAME", help="problem name (see `list`)")
    check.set_defaults(handler=_cmd_check)

    compare = commands.add_parser(
        "compare", help="compare optimisers and gradient sources on a problem"
    )
    compare.add_argument("name", metavar="NAME", help="problem name (see `list`)")
    compare.add_argument(
        "--methods",
        metavar="M",
        nargs="+",
        help="methods to compare, separated by spaces or commas "
        "(default: the problem's own list)",
    )
    compare.set_defaults(handler=_cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``adjoint`` command with `argv` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when a check or listing found a
        problem, 2 for a usage or data error, 130 when interrupted.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version or a usage error
        return exit_.code if isinstance(exit_.code, int) else 2

    try:
        return args.handler(args)
    except _CommandError as err:
        print(f"adjoint: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adjoint: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not _is_data_error(err):
            raise
        print(f"adjoint: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
