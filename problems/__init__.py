"""The included problems, each a small module with the same surface.

Every problem module offers (DESIGN.md section 10):

- ``DESCRIPTION``: one line, shown by ``adjoint list``;
- ``build(data=None)``: the problem object, from the bundled data or from the
  file `data`;
- ``initial_guess(problem)``;
- ``solve(problem, method=..., progress=None)``: a SciPy-style result with
  ``x``, ``fun``, ``nit``, ``nfev``, ``njev``, ``table`` (rows of
  ``(name, value, stderr)``) and ``to_json()``;
- ``plot(problem, result)``: a matplotlib Figure;
- ``check(problem)``: a report whose ``str`` is printed;
- ``REFERENCE``: the values the tests compare against;
- optionally ``compare(problem, methods=None)``.

Modules are imported only when asked for, so ``adjoint list`` and a typo in a
name stay cheap. The `adjoint` package never imports this one; only its
command line does.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["UnknownProblemError", "get", "registry", "resolve"]

# Command-line name -> module path. Add a line here for each new problem.
_REGISTRY: dict[str, str] = {
    "lotka-volterra": "problems.lotka_volterra",
    "sir-influenza": "problems.sir_influenza",
    "lqr": "problems.lqr",
    "digits": "problems.digits",
    "deep-gradients": "problems.deep_gradients",
    "double-integrator": "problems.double_integrator",
    "goddard": "problems.goddard",
    "catalyst-mixing": "problems.catalyst_mixing",
    "pendulum-swingup": "problems.pendulum_swingup",
    "heat-inverse": "problems.heat_inverse",
    "lorenz96-4dvar": "problems.lorenz96_4dvar",
}


class UnknownProblemError(KeyError):
    """No problem is registered under the given name."""

    def __str__(self) -> str:
        # KeyError would show the message in quotes, as it does a key.
        return str(self.args[0]) if self.args else ""


def registry() -> dict[str, str]:
    """Return a copy of the mapping from command-line name to module path."""
    return dict(_REGISTRY)


def resolve(name: str) -> str:
    """Return the registered name that `name` refers to.

    Underscores and upper case are accepted (``Lotka_Volterra`` resolves to
    ``lotka-volterra``).

    Raises
    ------
    UnknownProblemError
        If no problem has that name; the message lists the available names.
    """
    available = registry()
    key = name.strip().lower().replace("_", "-")
    if key not in available:
        names = ", ".join(sorted(available)) or "(none)"
        raise UnknownProblemError(
            f"No problem is called '{name}'; the available problems are: {names}."
        )
    return key


def get(name: str) -> ModuleType:
    """Import and return the module of the problem called `name`.

    Raises
    ------
    UnknownProblemError
        If no problem has that name (see `resolve`).
    """
    return importlib.import_module(registry()[resolve(name)])
