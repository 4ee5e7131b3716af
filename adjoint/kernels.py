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

from ._kernel_types import ARGUMENTS, SIGNATURES, STATUS_NONFINITE, STATUS_OK

__all__ = [
    "Kernel",
    "step",
    "step_vjp",
    "step_jvp",
    "running_cost",
    "running_cost_vjp",
    "terminal_cost",
    "terminal_cost_vjp",
    "SIGNATURES",
    "STATUS_OK",
    "STATUS_NONFINITE",
]

logger = logging.getLogger(__name__)


class Kernel:
    """A user function compiled for the sweeps and for complex-step checks.

    Parameters
    ----------
    py_func : callable
        The kernel as a plain Python function.
    kind : str
        One of ``'step'``, ``'step_vjp'``, ``'step_jvp'``, ``'running_cost'``,
        ``'running_cost_vjp'``, ``'terminal_cost'``, ``'terminal_cost_vjp'``.

    Raises
    ------
    TypeError
        If the function does not compile for the kind's float64 signature; the
        message names the kernel and the expected arguments.
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

    @property
    def address(self) -> int:
        return self.cfunc.address

    @property
    def jit(self):
        """Generic ``njit`` version (float64 or complex128 arrays)."""
        if self._jit is None:
            try:
                self._jit = njit(cache=True)(self.py_func)
            except RuntimeError:  # no file to cache next to (stdin, exec)
                self._jit = njit(self.py_func)
        return self._jit

    def __call__(self, *args):
        return self.jit(*args)

    def __repr__(self) -> str:
        return f"<{self.kind} kernel {self.name}{ARGUMENTS[self.kind]}>"


def _compile_cfunc(py_func, kind, name):
    sig = SIGNATURES[kind]
    try:
        try:
            return cfunc(sig, cache=True)(py_func)
        except RuntimeError as err:
            # Functions defined in a string or at an interactive prompt have no
            # file to cache next to; compile them for this process only.
            if "cache" not in str(err) and "locator" not in str(err):
                raise
            logger.info("kernel %s compiled without disk cache: %s", name, err)
            return cfunc(sig)(py_func)
    except Exception as err:  # numba.TypingError and friends
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        ret = "a float" if "cost" in kind and "vjp" not in kind else "an integer status"
        raise TypeError(
            f"The {kind} kernel `{name}` does not compile as {kind}"
            f"{ARGUMENTS[kind]} with float64 1-D arrays, returning {ret}: "
            f"{first}"
        ) from err


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


def as_kernel(obj, kind):
    """Return ``obj`` as a :class:`Kernel` of ``kind`` (compiling a plain function)."""
    if isinstance(obj, Kernel):
        if obj.kind != kind:
            raise TypeError(
                f"Expected a {kind} kernel, got a {obj.kind} kernel `{obj.name}`."
            )
        return obj
    return Kernel(obj, kind)
