"""Public surface for people who write their own kernels.

Decorate plain Python functions (Numba-compatible, written with the argument
conventions of :mod:`adjoint._kernel_types`) to turn them into kernels::

    from adjoint import kernels

    @kernels.step
    def euler_logistic(k, x, theta, p, consts, out):
        dt = consts[0]
        out[0] = x[0] + dt * p[0] * x[0] * (1.0 - x[0])
        return 0

Each decorated function becomes a :class:`Kernel`: a float64 ``cfunc`` for the
compiled sweeps (cached on disk next to the source file) and a generic
``njit`` version, reached by calling the kernel, that also runs on
``complex128`` for complex-step checks.
"""

from __future__ import annotations

import logging

from numba import cfunc, njit

from ._kernel_types import (
    ARGUMENTS,
    ARRAY_TYPES,
    COMPLEX_SIGNATURES,
    SIGNATURES,
    STATUS_NONFINITE,
    STATUS_OK,
)

__all__ = [
    "Kernel",
    "step",
    "step_vjp",
    "step_jvp",
    "running_cost",
    "running_cost_vjp",
    "terminal_cost",
    "terminal_cost_vjp",
    "rhs",
    "rhs_vjp",
    "rhs_jvp",
    "rhs_jac_x",
    "SIGNATURES",
    "STATUS_OK",
    "STATUS_NONFINITE",
]

logger = logging.getLogger(__name__)

# Kernels follow NumPy's floating-point rules: 1/0 gives inf, which the sweeps'
# finiteness checks report with the step.  Numba's default ("python") raises
# ZeroDivisionError, which a cfunc can only print and ignore, leaving its
# output unwritten.
ERROR_MODEL = "numpy"


class Kernel:
    """A user function compiled for the sweeps and for complex-step checks.

    Parameters
    ----------
    py_func : callable
        The kernel as a plain Python function.
    kind : str
        One of ``'step'``, ``'step_vjp'``, ``'step_jvp'``, ``'running_cost'``,
        ``'running_cost_vjp'``, ``'terminal_cost'``, ``'terminal_cost_vjp'``,
        or, for the right-hand side of an ODE system, ``'rhs'``,
        ``'rhs_vjp'``, ``'rhs_jvp'``, ``'rhs_jac_x'``, ``'rhs_complex'``.

    Raises
    ------
    ValueError
        If ``kind`` is not one of those.
    TypeError
        If the function does not compile for the kind's float64 signature; the
        message names the kernel and the expected arguments.

    Examples
    --------
    The decorators of this module make kernels; calling one runs its generic
    (float64 or complex128) version:

    >>> import numpy as np
    >>> from adjoint import kernels
    >>> @kernels.step
    ... def halve(k, x, theta, p, consts, out):
    ...     out[0] = 0.5 * x[0]
    ...     return 0
    >>> halve
    <step kernel halve(k, x, theta, p, consts, out)>
    >>> out = np.zeros(1)
    >>> halve(0, np.array([3.0]), np.zeros(0), np.zeros(0), np.zeros(0), out)
    0
    >>> out
    array([1.5])
    """

    def __init__(self, py_func, kind: str):
        if kind not in SIGNATURES:
            raise ValueError(
                f"`kind` must be one of {sorted(SIGNATURES)}, got {kind!r}."
            )
        if not callable(py_func):
            raise TypeError(f"A {kind} kernel must be a function, got {py_func!r}.")
        self.py_func = py_func
        self.kind = kind
        self.name = getattr(py_func, "__name__", repr(py_func))
        self.cfunc = _compile_cfunc(py_func, kind, self.name)
        self._jit = None
        self._cfunc_complex = None

    @property
    def address(self) -> int:
        """Address of the float64 ``cfunc`` (what the compiled sweeps call)."""
        return self.cfunc.address

    @property
    def cfunc_complex(self):
        """The kernel as a ``cfunc`` on complex128 arrays, compiled on first use.

        Signatures in :data:`adjoint._kernel_types.COMPLEX_SIGNATURES`: states,
        parameters and cotangents complex, ``consts``, ``data``, time and cost
        weights float64.  The compiled sweeps run on it for the complex-step
        Hessian-vector products of :meth:`adjoint.Objective.hessp`.  Raises
        ``NotImplementedError`` when the kernel does not compile on complex
        input (``math.*`` functions, ``abs``, comparisons of perturbed values:
        it is not complex-safe).
        """
        if self._cfunc_complex is None:
            if self.kind not in COMPLEX_SIGNATURES:
                raise NotImplementedError(
                    f"A {self.kind} kernel has no complex128 form; only "
                    f"{', '.join(sorted(COMPLEX_SIGNATURES))} kernels do."
                )
            try:
                self._cfunc_complex = _compile_cfunc(
                    self.py_func, self.kind, self.name, COMPLEX_SIGNATURES
                )
            except TypeError as err:
                raise NotImplementedError(
                    f"The {self.kind} kernel `{self.name}` is not complex-safe "
                    f"(it does not compile on complex128 arrays), so complex-step "
                    f"Hessian-vector products are unavailable; use "
                    f"`method='fd'` (central differences of the adjoint gradient). "
                    f"{err}"
                ) from err
        return self._cfunc_complex

    @property
    def jit(self):
        """Generic ``njit`` version (float64 or complex128 arrays)."""
        if self._jit is None:
            try:
                self._jit = njit(cache=True, error_model=ERROR_MODEL)(self.py_func)
            except RuntimeError:  # no file to cache next to (stdin, exec)
                self._jit = njit(error_model=ERROR_MODEL)(self.py_func)
        return self._jit

    def __call__(self, *args):
        return self.jit(*args)

    def __repr__(self) -> str:
        return f"<{self.kind} kernel {self.name}{ARGUMENTS[self.kind]}>"


def _compile_cfunc(py_func, kind, name, signatures=SIGNATURES):
    sig = signatures[kind]
    try:
        try:
            return cfunc(sig, cache=True, error_model=ERROR_MODEL)(py_func)
        except RuntimeError as err:
            # Functions defined in a string or at an interactive prompt have no
            # file to cache next to; compile them for this process only.
            if "cache" not in str(err) and "locator" not in str(err):
                raise
            logger.info("kernel %s compiled without disk cache: %s", name, err)
            return cfunc(sig, error_model=ERROR_MODEL)(py_func)
    except Exception as err:  # numba.TypingError and friends
        first = _compile_reason(err)
        ret = "a float" if "cost" in kind and "vjp" not in kind else "an integer status"
        raise TypeError(
            f"The {kind} kernel `{name}` does not compile as {kind}"
            f"{ARGUMENTS[kind]} with {ARRAY_TYPES.get(kind, 'float64 1-D arrays')}, "
            f"returning {ret}: "
            f"{first}"
        ) from err


def _compile_reason(err):
    """The line of a Numba error that says what is wrong, and where.

    A typing error opens with "Failed in nopython mode pipeline (step: ...)",
    which names Numba's pass, not the problem; the next line does.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return repr(err)
    reason = next(
        (line for line in lines if not line.startswith("Failed in ")), lines[0]
    )
    where = next((line for line in lines if line.startswith("File ")), None)
    return f"{reason} ({where.rstrip(':')})" if where else reason


def _decorator(kind):
    def make(py_func):
        return Kernel(py_func, kind)

    make.__name__ = kind
    make.__doc__ = f"Compile a {kind}{ARGUMENTS[kind]} kernel."
    return make


step = _decorator("step")
step_vjp = _decorator("step_vjp")
step_jvp = _decorator("step_jvp")
running_cost = _decorator("running_cost")
running_cost_vjp = _decorator("running_cost_vjp")
terminal_cost = _decorator("terminal_cost")
terminal_cost_vjp = _decorator("terminal_cost_vjp")
rhs = _decorator("rhs")
rhs_vjp = _decorator("rhs_vjp")
rhs_jvp = _decorator("rhs_jvp")
rhs_jac_x = _decorator("rhs_jac_x")


def as_kernel(obj, kind):
    """Return ``obj`` as a :class:`Kernel` of ``kind`` (compiling a plain function)."""
    if isinstance(obj, Kernel):
        if obj.kind != kind:
            raise TypeError(
                f"Expected a {kind} kernel, got a {obj.kind} kernel `{obj.name}`."
            )
        return obj
    return Kernel(obj, kind)
