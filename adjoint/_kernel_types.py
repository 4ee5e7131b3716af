"""Numba signatures of the kernels a homogeneous sequence is built from.

Every kernel is a plain Python function compiled twice: as a ``cfunc`` with
the float64 signature below, which the compiled sweeps receive as a
first-class function pointer (so the sweeps are cached on disk and a new
process does not recompile them, see DESIGN.md section 4), and as a generic
``njit`` function that also runs on ``complex128`` for the complex-step check.

Argument conventions (all arrays one-dimensional and C-contiguous):

- ``step(k, x, theta, p, consts, out) -> status``: write ``x_{k+1}`` to ``out``.
- ``step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar) -> status``:
  *add* ``(∂F/∂x)ᵀλ``, ``(∂F/∂θ)ᵀλ`` and ``(∂F/∂p)ᵀλ`` into the
  three bars.
- ``step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out) -> status``:
  write the tangent of ``x_{k+1}`` to ``out``.
- ``running_cost(k, x, theta, p, consts, data) -> g``; ``data`` is row ``k`` of
  the sequence's per-step data.
- ``running_cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar,
  p_bar) -> status``: add ``g_bar`` times the three partial gradients.
- ``terminal_cost(x, p, consts, data) -> phi`` with ``data`` row ``N``.
- ``terminal_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar) -> status``.

An ODE system (:mod:`adjoint._systems`) brings kernels of its right-hand
side ``f(t, x, p, u)`` instead of a step; the integrators turn them into steps:

- ``rhs(t, x, p, u, out) -> status``: write ``f`` to ``out``.
- ``rhs_vjp(t, x, p, u, f_bar, x_bar, p_bar, u_bar) -> status``: *add*
  ``(∂f/∂x)ᵀf̄``, ``(∂f/∂p)ᵀf̄`` and ``(∂f/∂u)ᵀf̄`` into the three
  bars.
- ``rhs_jvp(t, x, p, u, x_tan, p_tan, u_tan, out) -> status``: write
  ``∂f/∂x ẋ + ∂f/∂p ṗ + ∂f/∂u u̇`` to ``out``.
- ``rhs_jac_x(t, x, p, u, jac_out) -> status``: write ``∂f/∂x`` to
  ``jac_out``, a C-contiguous ``(n, n)`` array.
- ``rhs_complex``: ``rhs`` compiled on ``complex128`` arrays (``t`` stays
  real), for Jacobian products by complex step.

A status of 0 means success; any other value stops the sweep and is reported
with the step index.
"""

from numba import types

_i = types.intp
_f = types.float64
_v = types.float64[::1]
_m = types.float64[:, ::1]
_c = types.complex128[::1]

SIGNATURES = {
    "step": _i(_i, _v, _v, _v, _v, _v),
    "step_vjp": _i(_i, _v, _v, _v, _v, _v, _v, _v, _v),
    "step_jvp": _i(_i, _v, _v, _v, _v, _v, _v, _v, _v),
    "running_cost": _f(_i, _v, _v, _v, _v, _v),
    "running_cost_vjp": _i(_i, _v, _v, _v, _v, _v, _f, _v, _v, _v),
    "terminal_cost": _f(_v, _v, _v, _v),
    "terminal_cost_vjp": _i(_v, _v, _v, _v, _f, _v, _v),
    "rhs": _i(_f, _v, _v, _v, _v),
    "rhs_vjp": _i(_f, _v, _v, _v, _v, _v, _v, _v),
    "rhs_jvp": _i(_f, _v, _v, _v, _v, _v, _v, _v),
    "rhs_jac_x": _i(_f, _v, _v, _v, _m),
    "rhs_complex": _i(_f, _c, _c, _c, _c),
}

# The same kernels on complex128 states, parameters and cotangents, for the
# complex-step Hessian-vector products of :mod:`adjoint._hessian`.  What is
# never perturbed stays float64: the step index, time, ``consts``, ``data``
# and the cost weights ``g_bar``/``phi_bar``.  Costs return complex128.
_z = types.complex128
COMPLEX_SIGNATURES = {
    "step": _i(_i, _c, _c, _c, _v, _c),
    "step_vjp": _i(_i, _c, _c, _c, _v, _c, _c, _c, _c),
    "step_jvp": _i(_i, _c, _c, _c, _v, _c, _c, _c, _c),
    "running_cost": _z(_i, _c, _c, _c, _v, _v),
    "running_cost_vjp": _i(_i, _c, _c, _c, _v, _v, _f, _c, _c, _c),
    "terminal_cost": _z(_c, _c, _v, _v),
    "terminal_cost_vjp": _i(_c, _c, _v, _v, _f, _c, _c),
    "rhs": _i(_f, _c, _c, _c, _c),
    "rhs_vjp": _i(_f, _c, _c, _c, _c, _c, _c, _c),
    "rhs_jvp": _i(_f, _c, _c, _c, _c, _c, _c, _c),
    "rhs_jac_x": _i(_f, _c, _c, _c, types.complex128[:, ::1]),
    "rhs_complex": _i(_f, _c, _c, _c, _c),
}

ARGUMENTS = {
    "step": "(k, x, theta, p, consts, out)",
    "step_vjp": "(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar)",
    "step_jvp": "(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out)",
    "running_cost": "(k, x, theta, p, consts, data)",
    "running_cost_vjp": (
        "(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar)"
    ),
    "terminal_cost": "(x, p, consts, data)",
    "terminal_cost_vjp": "(x, p, consts, data, phi_bar, x_bar, p_bar)",
    "rhs": "(t, x, p, u, out)",
    "rhs_vjp": "(t, x, p, u, f_bar, x_bar, p_bar, u_bar)",
    "rhs_jvp": "(t, x, p, u, x_tan, p_tan, u_tan, out)",
    "rhs_jac_x": "(t, x, p, u, jac_out)",
    "rhs_complex": "(t, x, p, u, out)",
}

# How the arrays of each kind are typed, for compile-error messages.
ARRAY_TYPES = {
    "rhs_jac_x": "float64 1-D arrays and a C-contiguous 2-D `jac_out`",
    "rhs_complex": "a float64 `t` and complex128 1-D arrays",
}

# Status codes written by the sweeps themselves (user kernels return 0 or
# their own positive codes).
STATUS_OK = 0
STATUS_NONFINITE = -1
