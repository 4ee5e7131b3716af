"""Numba signatures of the kernels a homogeneous sequence is built from.

Every kernel is a plain Python function compiled twice: as a ``cfunc`` with
the float64 signature below, which the compiled sweeps receive as a
first-class function pointer (so the sweeps are cached on disk and a new
process does not recompile them, see DESIGN.md section 4), and as a generic
``njit`` function that also runs on ``complex128`` for the complex-step check.

Argument conventions (all arrays one-dimensional and C-contiguous):

- ``step(k, x, theta, p, consts, out) -> status``: write ``x_{k+1}`` to ``out``.
- ``step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar) -> status``:
  *add* ``(∂F/∂x)ᵀλ``, ``(∂F/∂θ)ᵀλ`` and ``(∂F/∂p)ᵀλ`` into the three bars.
- ``step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out) -> status``:
  write the tangent of ``x_{k+1}`` to ``out``.
- ``running_cost(k, x, theta, p, consts, data) -> g``; ``data`` is row ``k`` of
  the sequence's per-step data.
- ``running_cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar,
  p_bar) -> status``: add ``g_bar`` times the three partial gradients.
- ``terminal_cost(x, p, consts, data) -> phi`` with ``data`` row ``N``.
- ``terminal_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar) -> status``.

A status of 0 means success; any other value stops the sweep and is reported
with the step index.
"""

from numba import types

_i = types.intp
_f = types.float64
_v = types.float64[::1]

SIGNATURES = {
    "step": _i(_i, _v, _v, _v, _v, _v),
    "step_vjp": _i(_i, _v, _v, _v, _v, _v, _v, _v, _v),
    "step_jvp": _i(_i, _v, _v, _v, _v, _v, _v, _v, _v),
    "running_cost": _f(_i, _v, _v, _v, _v, _v),
    "running_cost_vjp": _i(_i, _v, _v, _v, _v, _v, _f, _v, _v, _v),
    "terminal_cost": _f(_v, _v, _v, _v),
    "terminal_cost_vjp": _i(_v, _v, _v, _v, _f, _v, _v),
}

ARGUMENTS = {
    "step": "(k, x, theta, p, consts, out)",
    "step_vjp": "(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar)",
    "step_jvp": "(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out)",
    "running_cost": "(k, x, theta, p, consts, data)",
    "running_cost_vjp": "(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar)",
    "terminal_cost": "(x, p, consts, data)",
    "terminal_cost_vjp": "(x, p, consts, data, phi_bar, x_bar, p_bar)",
}

# Status codes written by the sweeps themselves (user kernels return 0 or
# their own positive codes).
STATUS_OK = 0
STATUS_NONFINITE = -1
