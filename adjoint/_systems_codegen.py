"""Generate kernel source from SymPy expressions and cache it on disk.

The generated module is plain Python written for Numba: one function per
kernel kind, the expressions and their symbolic derivatives printed with
NumPy calls (which Numba compiles for float64 and complex128 alike) after
common-subexpression elimination.  The file is named after a hash of the
canonical expressions, written once into the cache directory
(``$ADJOINT_CACHE_DIR``, default ``~/.cache/adjoint-toolkit/systems``) and
imported from there, so Numba can cache the compiled kernels next to it and
a second process neither differentiates nor compiles again.

Only this module imports SymPy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import sympy as sp
from sympy.printing.numpy import NumPyPrinter

logger = logging.getLogger(__name__)

# Bump when the generated code changes, so stale cached files are not reused.
GENERATOR_VERSION = "4"
# Numba's compile time grows faster than linearly with the number of
# statements: a dense 40 x 40 Jacobian (1600 assignments) took 150 s.  Above
# this many structurally non-zero entries no `rhs_jac_x` is generated and the
# integrators build ∂f/∂x from n VJPs instead.
JAC_MAX_ENTRIES = 400
CACHE_ENV = "ADJOINT_CACHE_DIR"


def cache_dir() -> Path:
    """Directory of generated kernel modules: ``$ADJOINT_CACHE_DIR`` or
    ``~/.cache/adjoint-toolkit/systems``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "adjoint-toolkit" / "systems"


class _Printer(NumPyPrinter):
    """NumPy printer that writes small integer powers as products."""

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.as_base_exp()
        if exp.is_Integer and 1 <= abs(int(exp)) <= 3:
            b = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Mul"])
            # Parenthesised, since the caller may divide by it: x/K**2 must
            # print as x/(K*K), not x/K*K.
            prod = "(" + "*".join([b] * abs(int(exp))) + ")"
            return prod if exp > 0 else f"(1/{prod})"
        return super()._print_Pow(expr, rational=rational)

    def _print_Piecewise(self, expr):
        # numpy.select does not compile for scalars; nest conditionals.
        text = "numpy.nan"
        for value, condition in reversed(expr.args):
            if condition == sp.true:
                text = self._print(value)
            else:
                text = (
                    f"(({self._print(value)}) if ({self._print(condition)}) "
                    f"else ({text}))"
                )
        return text

    def _print_Max(self, expr):
        return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Min(self, expr):
        return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_DiracDelta(self, expr):
        # The derivative of a step: zero wherever the derivative exists.
        return "0.0"


def _printer():
    return _Printer({"fully_qualified_modules": True, "allow_unknown_functions": False})


def _as_symbols(name, values):
    values = list(values) if values is not None else []
    for v in values:
        if not isinstance(v, sp.Symbol):
            raise TypeError(f"`{name}` must hold SymPy symbols; got {v!r}.")
    return values


def canonicalise(exprs, groups):
    """Replace the user's symbols by canonical ones and check nothing is left.

    ``groups`` maps a prefix (``'x'``, ``'p'``, ...) to a list of SymPy
    symbols (or a single symbol for ``'t'``).  Returns the canonical
    expressions and, per prefix, the canonical symbols in order.
    """
    mapping, canon = {}, {}
    for prefix, symbols in groups.items():
        # Real, so that derivatives of Abs and sign stay real (sign(x)), as
        # the states, parameters, controls and time are.
        new = [sp.Symbol(f"_{prefix}{j}", real=True) for j in range(len(symbols))]
        canon[prefix] = new
        for old, sym in zip(symbols, new):
            if old in mapping:
                raise ValueError(f"Symbol {old} appears twice among the arguments.")
            mapping[old] = sym
    out = []
    for i, e in enumerate(exprs):
        e = sp.sympify(e)
        e = e.xreplace(mapping)
        unknown = e.free_symbols - set(mapping.values())
        if unknown:
            names = ", ".join(sorted(str(s) for s in unknown))
            raise ValueError(
                f"Expression {i} uses symbol(s) {names}, which are not among the "
                "declared states, parameters, controls or time; declare them or "
                "substitute numbers for them."
            )
        out.append(e)
    return out, canon


def digest(kind: str, exprs, sizes) -> str:
    text = "|".join(
        [GENERATOR_VERSION, kind, repr(sizes), *(sp.srepr(e) for e in exprs)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _function(name, args, unpack, outputs, value=None, prologue=()):
    """Source of one kernel: unpack symbols, CSE temporaries, write outputs.

    ``outputs`` is a list of ``(target, expr, op)`` with ``op`` ``'='`` or
    ``'+='``; ``'+='`` outputs that are zero are skipped.  The function
    returns ``value`` (a SymPy expression) if given, else status 0.
    """
    printer = _printer()
    outputs = [(tgt, e, op) for tgt, e, op in outputs if not (op == "+=" and e == 0)]
    exprs = [e for _, e, _ in outputs]
    ret_expr = None if value is None else sp.sympify(value)
    if ret_expr is not None:
        exprs.append(ret_expr)
    temps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("_c"), order="none")
    used = set()
    for _, e in temps:
        used |= e.free_symbols
    for e in reduced:
        used |= e.free_symbols
    lines = [f"def {name}({', '.join(args)}):", *(f"    {line}" for line in prologue)]
    for sym, source in unpack:
        if sym in used:
            lines.append(f"    {sym} = {source}")
    for sym, e in temps:
        lines.append(f"    {sym} = {printer.doprint(e)}")
    for (tgt, _, op), e in zip(outputs, reduced):
        lines.append(f"    {tgt} {op} {printer.doprint(e)}")
    if ret_expr is not None:
        lines.append(f"    return {printer.doprint(reduced[-1])}")
    else:
        lines.append("    return 0")
    return "\n".join(lines)


def _unpack(canon, arrays):
    pairs = []
    for prefix, array in arrays.items():
        for j, sym in enumerate(canon.get(prefix, [])):
            pairs.append((sym, f"{array}[{j}]"))
    return pairs


def rhs_source(f_exprs, canon, t_sym) -> str:
    """Source of ``rhs``, ``rhs_vjp``, ``rhs_jvp`` and (if ``∂f/∂x`` has at
    most :data:`JAC_MAX_ENTRIES` non-zero entries) ``rhs_jac_x``."""
    xs, ps, us = canon["x"], canon["p"], canon.get("u", [])
    n = len(xs)
    base = _unpack(canon, {"x": "x", "p": "p", "u": "u"})
    if t_sym is not None:
        base = [(t_sym, "t"), *base]
    f_bar = [sp.Symbol(f"_fb{i}") for i in range(n)]
    tans = {
        "x": [sp.Symbol(f"_xt{j}") for j in range(n)],
        "p": [sp.Symbol(f"_pt{j}") for j in range(len(ps))],
        "u": [sp.Symbol(f"_ut{j}") for j in range(len(us))],
    }
    jac = {
        "x": sp.Matrix(f_exprs).jacobian(xs) if n else sp.zeros(n, 0),
        "p": sp.Matrix(f_exprs).jacobian(ps) if ps else sp.zeros(n, 0),
        "u": sp.Matrix(f_exprs).jacobian(us) if us else sp.zeros(n, 0),
    }

    parts = []
    parts.append(
        _function(
            "rhs",
            ["t", "x", "p", "u", "out"],
            base,
            [(f"out[{i}]", f_exprs[i], "=") for i in range(n)],
        )
    )
    vjp_out = []
    for block, array in (("x", "x_bar"), ("p", "p_bar"), ("u", "u_bar")):
        J = jac[block]
        for j in range(J.shape[1]):
            e = sum((J[i, j] * f_bar[i] for i in range(n) if J[i, j] != 0), sp.S.Zero)
            vjp_out.append((f"{array}[{j}]", e, "+="))
    parts.append(
        _function(
            "rhs_vjp",
            ["t", "x", "p", "u", "f_bar", "x_bar", "p_bar", "u_bar"],
            base + [(f_bar[i], f"f_bar[{i}]") for i in range(n)],
            vjp_out,
        )
    )
    jvp_unpack = list(base)
    for block, array in (("x", "x_tan"), ("p", "p_tan"), ("u", "u_tan")):
        jvp_unpack += [(s, f"{array}[{j}]") for j, s in enumerate(tans[block])]
    jvp_out = []
    for i in range(n):
        e = sp.S.Zero
        for block in ("x", "p", "u"):
            J = jac[block]
            for j in range(J.shape[1]):
                if J[i, j] != 0:
                    e += J[i, j] * tans[block][j]
        jvp_out.append((f"out[{i}]", e, "="))
    parts.append(
        _function(
            "rhs_jvp",
            ["t", "x", "p", "u", "x_tan", "p_tan", "u_tan", "out"],
            jvp_unpack,
            jvp_out,
        )
    )
    entries = [
        (f"jac_out[{i}, {j}]", jac["x"][i, j], "=")
        for i in range(n)
        for j in range(n)
        if jac["x"][i, j] != 0
    ]
    if len(entries) <= JAC_MAX_ENTRIES:
        zero = [
            "for _i in range(jac_out.shape[0]):",
            "    for _j in range(jac_out.shape[1]):",
            "        jac_out[_i, _j] = 0.0",
        ]
        parts.append(
            _function(
                "rhs_jac_x",
                ["t", "x", "p", "u", "jac_out"],
                base,
                entries,
                prologue=zero,
            )
        )
    return "\n\n\n".join(parts)


def cost_source(running, terminal, canon) -> str:
    """Source of the cost kernels ``running(x, u, p, d)`` and ``terminal(x, p, d)``
    with ``d`` the entries of the data row."""
    xs, ps, us = canon["x"], canon["p"], canon.get("u", [])
    parts = []
    if running is not None:
        base = _unpack(canon, {"x": "x", "u": "theta", "p": "p", "d": "data"})
        parts.append(
            _function(
                "running_cost",
                ["k", "x", "theta", "p", "consts", "data"],
                base,
                [],
                value=running,
            )
        )
        g_bar = sp.Symbol("_gbar")
        outs = []
        for syms, array in ((xs, "x_bar"), (us, "theta_bar"), (ps, "p_bar")):
            for j, s in enumerate(syms):
                outs.append((f"{array}[{j}]", g_bar * sp.diff(running, s), "+="))
        parts.append(
            _function(
                "running_cost_vjp",
                [
                    "k",
                    "x",
                    "theta",
                    "p",
                    "consts",
                    "data",
                    "g_bar",
                    "x_bar",
                    "theta_bar",
                    "p_bar",
                ],
                [*base, (g_bar, "g_bar")],
                outs,
            )
        )
    if terminal is not None:
        base = _unpack(canon, {"x": "x", "p": "p", "d": "data"})
        parts.append(
            _function(
                "terminal_cost", ["x", "p", "consts", "data"], base, [], value=terminal
            )
        )
        phi_bar = sp.Symbol("_phibar")
        outs = []
        for syms, array in ((xs, "x_bar"), (ps, "p_bar")):
            for j, s in enumerate(syms):
                outs.append((f"{array}[{j}]", phi_bar * sp.diff(terminal, s), "+="))
        parts.append(
            _function(
                "terminal_cost_vjp",
                ["x", "p", "consts", "data", "phi_bar", "x_bar", "p_bar"],
                [*base, (phi_bar, "phi_bar")],
                outs,
            )
        )
    return "\n\n\n".join(parts)


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def load(prefix: str, key: str, make_body, directory: Path | None = None):
    """Write ``make_body()`` (once) to ``<directory>/<prefix>_<key>.py`` and
    import it; when the file exists, ``make_body`` is not called."""
    directory = cache_dir() if directory is None else Path(directory)
    module_name = f"adjoint_generated_{prefix}_{key}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = directory / f"{prefix}_{key}.py"
    if not path.exists() and not _writable(directory):
        fallback = Path(tempfile.gettempdir()) / "adjoint-toolkit-systems"
        warnings.warn(
            f"The kernel cache directory '{directory}' is not writable; generated "
            f"kernels go to '{fallback}' instead (set ${CACHE_ENV} to choose).",
            RuntimeWarning,
            stacklevel=3,
        )
        directory = fallback
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{prefix}_{key}.py"
    if not path.exists():
        body = make_body()
        header = (
            "# Generated by adjoint-toolkit from SymPy expressions; do not edit.\n"
            f"# generator version {GENERATOR_VERSION}, key {key}\n"
            "import numpy\n\n\n"
        )
        # Write to a temporary name and rename, so a second process never
        # imports a half-written file.
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w") as stream:
            stream.write(header + body + "\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; others may share the cache
        os.replace(tmp, path)
        logger.info("generated kernels written to %s", path)
    else:
        logger.info("generated kernels loaded from %s", path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
