"""Hessian-vector products by a second-order adjoint (forward over reverse).

The gradient ``g(z) = ∇J(z)`` comes from a forward and an adjoint sweep.  Its
derivative in a direction ``v`` is the Hessian-vector product ``H v``; this
module forms it by running both sweeps on ``z + i h v`` in complex arithmetic:

    H v = Im g(z + i h v) / h,        h = 1e-30.

This is the tangent of the adjoint sweep (forward-over-reverse, the
second-order adjoint of DESIGN.md section 3) with complex step as the forward
mode.  Every product in the sweeps is analytic in ``h``, so the result is
exact to rounding (no subtraction, no step-size trade-off) wherever the
kernels are complex-safe, for one complex forward and one complex adjoint
sweep.  Measured, that costs 0.9–1.2 times one real value-and-gradient on the
Lotka–Volterra fit and a 2000-step Lorenz-63 sequence (per-call overheads
dominate there; complex arithmetic alone is 2–4 times dearer), against 2 for
central differences.  A sequence kind provides the complex
sweeps through ``SequenceBase._gradient_complex_impl``; where it cannot
(kernels that are not complex-safe, right-hand sides whose own Jacobian
products are taken by complex step), ``method='fd'`` takes central
differences of the adjoint gradient instead (two gradients, about 1e-7
relative), and ``method='auto'`` falls back to it with a warning.

Since this *is* complex step applied to the adjoint gradient, a "complex step
of the gradient" check would compare the computation with itself.  The
independent checks (:func:`check_hessian`) are central differences of the
gradient, the symmetry ``uᵀ(H w) = wᵀ(H u)`` (which finite differences meet
only to their truncation error) and the second-order Taylor test on the
gradient, :func:`hessian_taylor_test`.

Targets: an :class:`~adjoint.Objective` (any sequence kind with complex
sweeps: homogeneous sequences, network chains, integrators), a
``ControlProblem`` (``H_w = Pᵀ H_z P`` through the linear control
parameterisation) and a ``ParameterEstimation`` (log-scale unknowns by the
chain rule in complex arithmetic; a profiled noise scale by one more real
adjoint sweep).
"""

from __future__ import annotations

import copy
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from . import _validate
from ._chain import Chain
from ._check import (
    TAYLOR_MAX_ENLARGE,
    TAYLOR_NOISE_FACTOR,
    GradientReport,
    TaylorResult,
)
from ._layers import Abs, Layer, LeakyReLU, MaxPool2D, ReLU, Residual
from ._sequence import SequenceBase, Trajectory

__all__ = [
    "HessianReport",
    "check_hessian",
    "hessian",
    "hessian_taylor_test",
    "hessian_vector_product",
    "make_hessp",
]

# Imaginary step: far below rounding of any real perturbation that matters, far
# above underflow for derivatives of ordinary size.
COMPLEX_STEP_H = 1e-30
# Relative step of central differences of the gradient: about the cube root of
# the rounding unit, which balances truncation (ε²) against rounding (δ/ε).
FD_RELATIVE_STEP = 6e-6
# Targets of check_hessian's pass/fail column.
HVP_FD_RTOL = 1e-6
SYMMETRY_RTOL_COMPLEX = 1e-10
SYMMETRY_RTOL_FD = 1e-5
TAYLOR_ORDER_RANGE = (1.9, 2.1)
METHODS = ("auto", "complex", "fd")

# Targets on which 'auto' found no complex sweeps (warned once each).
_NO_COMPLEX = weakref.WeakKeyDictionary()


# ---- the public entry points ----


def hessian_vector_product(target, z, v, *, method: str = "auto") -> np.ndarray:
    """Hessian-vector product ``∇²J(z) v`` of a target's cost.

    Parameters
    ----------
    target : Objective, ControlProblem or ParameterEstimation
        What the cost is a function of (its ``value_and_grad(z)`` is the
        gradient differentiated).  Any object with ``value_and_grad`` works
        with ``method='fd'``.
    z : array_like, shape (size,)
        Where the Hessian is taken.
    v : array_like, shape (size,)
        The direction.
    method : {'auto', 'complex', 'fd'}
        ``'complex'``: the adjoint sweep differentiated by complex step, exact
        to rounding, one complex forward and one complex adjoint sweep
        (counted as ``counts['hvp']``); raises ``NotImplementedError`` where
        the sequence cannot run on complex values.  ``'fd'``: central
        differences of the adjoint gradient along ``v``, two gradients (about
        1e-7 relative accuracy).  ``'auto'`` (default): ``'complex'`` where
        available, else ``'fd'`` with a warning (once per target).

    Returns
    -------
    ndarray, shape (size,)
        ``H v``.

    Raises
    ------
    NotImplementedError
        With ``method='complex'``, where the target has no complex sweeps
        (kernels that are not complex-safe, a layer that is neither
        complex-analytic nor piecewise linear, a plain object).
    ValueError
        For an unknown ``method``, or ``z`` or ``v`` of the wrong shape or
        not finite.
    TypeError
        If ``target`` is not one of the kinds above (an object without
        ``value_and_grad`` and ``size``), or ``z`` or ``v`` cannot be read
        as real arrays.

    Warns
    -----
    UserWarning
        With ``method='auto'``, the first time a target falls back to central
        differences.

    See Also
    --------
    make_hessp : the product as SciPy's ``hessp``.
    hessian : the dense Hessian, for small problems.
    check_hessian : verify the products.

    Notes
    -----
    For piecewise-linear layers (ReLU, leaky ReLU, ``|x|``, max-pooling) the
    complex step branches on the real part, so their Hessian contribution is
    zero off the kinks, the derivative of the subgradient rule used by the
    gradient.  The complex sweeps store every state (no checkpointing).

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Chain, Dense, Objective, Tanh, init_params
    >>> net = Chain([Dense(2, 3), Tanh(), Dense(3, 1)], loss="mse",
    ...             targets=[[1.0], [0.0]])
    >>> obj = Objective(net, x0=[[1.0, 2.0], [0.5, -1.0]],
    ...                 thetas=init_params(net), wrt="theta")
    >>> from adjoint import hessian_vector_product
    >>> v = np.ones(obj.size)
    >>> Hv = hessian_vector_product(obj, obj.z0, v)
    >>> Hv_fd = hessian_vector_product(obj, obj.z0, v, method="fd")
    >>> Hv.shape, bool(np.allclose(Hv, Hv_fd, rtol=1e-6, atol=1e-9))
    ((13,), True)
    """
    _validate.choice("method", method, METHODS)
    adapter = _adapt(target)
    z = _validate.real_array(
        "z", z, (adapter.size,), what=f"the target has {adapter.size} unknowns"
    )
    v = _validate.real_array(
        "v", v, (adapter.size,), what=f"the target has {adapter.size} unknowns"
    )
    if method == "fd":
        return _fd_hvp(adapter.value_and_grad, z, v)
    if method == "complex":
        return adapter.hvp_complex(z, v)
    if not _known_without_complex(target):
        try:
            return adapter.hvp_complex(z, v)
        except NotImplementedError as err:
            _remember_without_complex(target, str(err))
            warnings.warn(
                f"Hessian-vector products fall back to central differences of the "
                f"adjoint gradient (about 1e-7 relative): {err}",
                UserWarning,
                stacklevel=2,
            )
    return _fd_hvp(adapter.value_and_grad, z, v)


def _known_without_complex(target) -> bool:
    try:
        return target in _NO_COMPLEX
    except TypeError:  # not weakly referenceable or not hashable
        return False


def _remember_without_complex(target, reason: str) -> None:
    try:
        _NO_COMPLEX[target] = reason
    except TypeError:
        pass


def make_hessp(target, *, method: str = "auto"):
    """``hessp(z, v)`` for ``scipy.optimize.minimize`` on ``target``.

    For the methods that take Hessian-vector products (Newton-CG, trust-ncg,
    trust-krylov, trust-constr); each call is one
    :func:`hessian_vector_product`.

    Parameters
    ----------
    target : Objective, ControlProblem or ParameterEstimation
        As for :func:`hessian_vector_product`.
    method : {'auto', 'complex', 'fd'}
        As for :func:`hessian_vector_product`.

    Returns
    -------
    callable
        ``hessp(z, v, *args) -> ndarray``; extra arguments SciPy passes are
        ignored.

    Raises
    ------
    ValueError
        For an unknown ``method``.
    TypeError
        If ``target`` is of an unsupported kind (raised here, not inside the
        optimiser).

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Chain, Dense, Objective, Tanh, init_params
    >>> net = Chain([Dense(2, 3), Tanh(), Dense(3, 1)], loss="mse",
    ...             targets=[[1.0], [0.0]])
    >>> obj = Objective(net, x0=[[1.0, 2.0], [0.5, -1.0]],
    ...                 thetas=init_params(net), wrt="theta")
    >>> from scipy.optimize import minimize
    >>> from adjoint import make_hessp
    >>> res = minimize(obj.value_and_grad, obj.z0, jac=True,
    ...                hessp=make_hessp(obj), method="trust-krylov")
    >>> bool(res.success), bool(res.fun < 1e-8)
    (True, True)
    """
    _validate.choice("method", method, METHODS)
    _adapt(target)  # fail now, not inside the optimiser

    def hessp(z, v, *args):
        return hessian_vector_product(target, z, v, method=method)

    return hessp


def hessian(target, z, *, method: str = "auto") -> np.ndarray:
    """The dense Hessian from ``size`` Hessian-vector products on unit vectors.

    Column ``j`` is ``H e_j``.  Costs ``size`` products; for small problems
    and tests (for optimisation use :func:`make_hessp`, which never forms
    ``H``).  Not symmetrised, so ``H − Hᵀ`` shows the rounding of the
    products.

    Parameters
    ----------
    target : Objective, ControlProblem or ParameterEstimation
        As for :func:`hessian_vector_product`.
    z : array_like, shape (size,)
        Where the Hessian is taken.
    method : {'auto', 'complex', 'fd'}
        How the products are formed (see :func:`hessian_vector_product`).

    Returns
    -------
    ndarray, shape (size, size)

    Raises
    ------
    NotImplementedError, ValueError, TypeError
        As :func:`hessian_vector_product`.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Chain, Dense, Objective, Tanh, init_params
    >>> net = Chain([Dense(2, 3), Tanh(), Dense(3, 1)], loss="mse",
    ...             targets=[[1.0], [0.0]])
    >>> obj = Objective(net, x0=[[1.0, 2.0], [0.5, -1.0]],
    ...                 thetas=init_params(net), wrt="theta")
    >>> from adjoint import hessian
    >>> H = hessian(obj, obj.z0)
    >>> H.shape, bool(np.allclose(H, H.T, atol=1e-12))
    ((13, 13), True)
    """
    size = _adapt(target).size
    H = np.empty((size, size))
    for j in range(size):
        e = np.zeros(size)
        e[j] = 1.0
        H[:, j] = hessian_vector_product(target, z, e, method=method)
    return H


# ---- checks ----


def hessian_taylor_test(
    target,
    z,
    u=None,
    w=None,
    *,
    method: str = "auto",
    eps0=None,
    n_halvings: int = 5,
    rng=None,
    hessp=None,
) -> TaylorResult:
    """Second-order Taylor test of the Hessian-vector product on the gradient.

    With an exact product the remainder

        r(ε) = |∇J(z + εw)·u − ∇J(z)·u − ε uᵀ(H w)|

    shrinks like ``ε²`` (each halving of ε divides it by four, observed order
    ``log2 r(ε)/r(ε/2) = 2``); a wrong product leaves order 1.  ``u`` and ``w``
    default to random directions.  ``eps0`` defaults to
    ``1e-3 · max(1, |z|_∞) / |w|_∞`` and is enlarged a few times while the
    smallest remainder sits at the rounding level of ``∇J·u``.  ``hessp``, a
    function ``hessp(z, w)``, tests that product instead of the target's own
    (for example a user's hand-written Hessian).

    When every remainder stays at the rounding level even so (a cost
    quadratic along ``w``, whose gradient is linear there), the orders are
    NaN: the product is then exact to rounding along ``w``, since a wrong one
    would leave a remainder ``ε |uᵀ(H w − slope)|`` far above it.

    Parameters
    ----------
    target : Objective, ControlProblem or ParameterEstimation
        As for :func:`hessian_vector_product`.
    z : array_like, shape (size,)
        Where the test is taken.
    u, w : array_like, shape (size,), optional
        The directions (default: random, from ``rng``).
    method : {'auto', 'complex', 'fd'}
        How the tested product is formed (ignored when ``hessp`` is given).
    eps0 : float, optional
        The first step (default: chosen and adapted as above).
    n_halvings : int, optional
        Number of halvings of ``ε`` (default 5): ``n_halvings + 1`` steps.
    rng : numpy.random.Generator, optional
        Source of the random directions (default seeded, reproducible).
    hessp : callable, optional
        ``hessp(z, w) -> ndarray``, a product to test instead.

    Returns
    -------
    TaylorResult
        ``eps``, ``remainders`` and ``orders`` (about 2 for a right product,
        1 for a wrong one; NaN as above).

    Raises
    ------
    ValueError, TypeError
        For a ``z`` of the wrong shape, or a target or method that
        :func:`hessian_vector_product` rejects.

    See Also
    --------
    check_hessian : this test together with the other checks.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Chain, Dense, Objective, Tanh, init_params
    >>> net = Chain([Dense(2, 3), Tanh(), Dense(3, 1)], loss="mse",
    ...             targets=[[1.0], [0.0]])
    >>> obj = Objective(net, x0=[[1.0, 2.0], [0.5, -1.0]],
    ...                 thetas=init_params(net), wrt="theta")
    >>> from adjoint import hessian_taylor_test
    >>> result = hessian_taylor_test(obj, obj.z0)
    >>> result.orders.round(1).tolist()
    [2.0, 2.0, 2.0, 2.0, 2.0]
    >>> wrong = hessian_taylor_test(obj, obj.z0, hessp=lambda z, w: 2 * w)
    >>> bool(wrong.orders[-1] < 1.5)
    True
    """
    rng = np.random.default_rng(4) if rng is None else rng
    adapter = _adapt(target)
    z = _validate.real_array(
        "z", z, (adapter.size,), what=f"the target has {adapter.size} unknowns"
    )
    u = rng.standard_normal(adapter.size) if u is None else np.asarray(u, float)
    w = rng.standard_normal(adapter.size) if w is None else np.asarray(w, float)
    _, g = adapter.value_and_grad(z)
    g = np.array(g, dtype=np.float64)  # the target may reuse its buffer
    if hessp is None:
        slope = float(u @ hessian_vector_product(target, z, w, method=method))
    else:
        slope = float(u @ np.asarray(hessp(z, w), dtype=np.float64))
    gu = float(g @ u)
    adapt = eps0 is None
    if adapt:
        eps0 = 1e-3 * max(1.0, np.max(np.abs(z))) / max(np.max(np.abs(w)), 1e-300)
    scale = float(np.abs(g) @ np.abs(u))
    for _ in range(TAYLOR_MAX_ENLARGE):
        eps = eps0 * 0.5 ** np.arange(n_halvings + 1)
        rem = np.array(
            [
                abs(float(adapter.value_and_grad(z + e * w)[1] @ u) - gu - e * slope)
                for e in eps
            ]
        )
        floor = _taylor_floor(scale, eps[0] * slope)
        if not adapt or rem[-1] >= floor:
            break
        eps0 *= min(2.0 * np.sqrt(floor / max(rem[-1], 1e-300)), 1e3)
    if np.max(rem) < floor:  # quadratic along w: nothing but rounding is left
        return TaylorResult(eps, rem, np.full(n_halvings, np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        orders = np.log2(rem[:-1] / rem[1:])
    return TaylorResult(eps, rem, orders)


def _taylor_floor(scale, step):
    """Remainders below this are rounding in ``∇J·u`` (a multiple of the
    rounding unit times the size of the terms)."""
    eps = np.finfo(np.float64).eps
    return TAYLOR_NOISE_FACTOR * eps * max(abs(scale), abs(step), 1e-300)


class HessianReport(GradientReport):
    """What :func:`check_hessian` measured; ``str(report)`` is a short table.

    A :class:`~adjoint.GradientReport` titled for Hessian-vector products:
    ``passed`` is True when every check met its target and ``value(name)``
    gives one check's measured value.

    Parameters
    ----------
    n_unknowns : int
        Size of the target.
    lines : list of tuple, optional
        One ``(name, value, target, passed)`` per check; ``passed`` is None
        for a line that only informs.
    taylor : TaylorResult, optional
        The second-order Taylor test's remainders.

    Examples
    --------
    >>> from adjoint import HessianReport
    >>> report = HessianReport(2, [("symmetry uᵀHw vs wᵀHu (rel.)", 1e-16,
    ...                             "< 1e-10", True)])
    >>> print(report)  # doctest: +ELLIPSIS
    Hessian-vector product checks on 2 unknowns
      symmetry uᵀHw vs wᵀHu (rel.) ... ok
      all passed
    """

    def __str__(self) -> str:
        text = super().__str__()
        return text.replace("Gradient checks on", "Hessian-vector product checks on", 1)


def check_hessian(
    target, z=None, *, method: str = "auto", n_directions: int = 3, rng=None
) -> HessianReport:
    """Check Hessian-vector products against independent routes.

    At ``z`` (default the target's starting point), for ``n_directions``
    random directions: central differences of the adjoint gradient (relative
    error below 1e-6), the symmetry ``uᵀ(H w) = wᵀ(H u)`` (1e-10 with complex
    products, which finite differences cannot meet), and the second-order
    Taylor test on the gradient (orders in [1.9, 2.1]).  With products by
    central differences (``method='fd'``, or ``'auto'`` after a fallback)
    the first check compares the route with itself and only informs, and
    the symmetry target is 1e-5.

    Parameters
    ----------
    target : Objective, ControlProblem or ParameterEstimation
        As for :func:`hessian_vector_product`.
    z : array_like, shape (size,), optional
        Where to check (default: the target's starting point).
    method : {'auto', 'complex', 'fd'}
        How the checked products are formed.
    n_directions : int, optional
        Random directions for the first two checks (default 3, at least 2).
    rng : numpy.random.Generator, optional
        Source of the directions (default seeded, reproducible).

    Returns
    -------
    HessianReport
        ``report.passed`` is True when every check met its target.

    Raises
    ------
    ValueError
        If ``z`` is not given and the target has no starting point, or for
        an unknown ``method`` or a ``z`` of the wrong shape.
    NotImplementedError, TypeError
        As :func:`hessian_vector_product`.

    See Also
    --------
    check_gradients : the first-order checks.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Chain, Dense, Objective, Tanh, init_params
    >>> net = Chain([Dense(2, 3), Tanh(), Dense(3, 1)], loss="mse",
    ...             targets=[[1.0], [0.0]])
    >>> obj = Objective(net, x0=[[1.0, 2.0], [0.5, -1.0]],
    ...                 thetas=init_params(net), wrt="theta")
    >>> from adjoint import check_hessian
    >>> report = check_hessian(obj)
    >>> report.passed
    True
    >>> print(report)  # doctest: +ELLIPSIS
    Hessian-vector product checks on 13 unknowns
      central differences of gradient ... ok
      symmetry uᵀHw vs wᵀHu (rel.) ... ok
      Taylor orders on the gradient ... ok
      all passed
    """
    rng = np.random.default_rng(5) if rng is None else rng
    adapter = _adapt(target)
    z = adapter.z0 if z is None else np.asarray(z, dtype=np.float64)
    if z is None:
        raise ValueError("`z` is required: this target has no starting point.")
    report = HessianReport(adapter.size)
    V = rng.standard_normal((max(int(n_directions), 2), adapter.size))
    HV = np.array([hessian_vector_product(target, z, v, method=method) for v in V])
    exact = method == "complex" or (
        method == "auto" and not _known_without_complex(target)
    )

    # Central differences of the adjoint gradient
    ref = np.array([_fd_hvp(adapter.value_and_grad, z, v) for v in V])
    err = _relative_error(HV, ref)
    if exact:
        line = (
            "central differences of gradient",
            err,
            f"< {HVP_FD_RTOL:.0e}",
            err < HVP_FD_RTOL,
        )
    else:
        line = ("products are central differences", err, "(same route)", None)
    report.lines.append(line)

    # Symmetry: exact products are symmetric to rounding
    tol = SYMMETRY_RTOL_COMPLEX if exact else SYMMETRY_RTOL_FD
    a, b = float(V[0] @ HV[1]), float(V[1] @ HV[0])
    sym = abs(a - b) / max(abs(a), abs(b), 1e-300)
    report.lines.append(
        ("symmetry uᵀHw vs wᵀHu (rel.)", sym, f"< {tol:.0e}", sym < tol)
    )

    # Second-order Taylor test on the gradient
    taylor = hessian_taylor_test(target, z, method=method, rng=rng)
    report.taylor = taylor
    lo, hi = TAYLOR_ORDER_RANGE
    if np.all(np.isnan(taylor.orders)):
        report.lines.append(
            (
                "Taylor remainder (quadratic cost)",
                float(np.max(taylor.remainders)),
                "at rounding",
                True,
            )
        )
    else:
        ok = bool(np.all((taylor.orders >= lo) & (taylor.orders <= hi)))
        report.lines.append(
            ("Taylor orders on the gradient", taylor.orders, f"in [{lo}, {hi}]", ok)
        )
    return report


def _relative_error(a, b) -> float:
    """``max|a − b| / max|b|`` over all entries."""
    scale = float(np.max(np.abs(b))) if np.size(b) else 0.0
    diff = float(np.max(np.abs(a - b))) if np.size(a) else 0.0
    return diff / scale if scale > 0 else diff


# ---- central differences of the gradient ----


def _fd_hvp(value_and_grad, z, v):
    """``(g(z + εv) − g(z − εv)) / 2ε``: two gradients."""
    size = np.max(np.abs(v)) if v.size else 0.0
    if size == 0.0:
        return np.zeros_like(z)
    eps = FD_RELATIVE_STEP * max(1.0, float(np.max(np.abs(z)))) / size
    g_plus = np.array(value_and_grad(z + eps * v)[1], dtype=np.float64)
    g_minus = np.array(value_and_grad(z - eps * v)[1], dtype=np.float64)
    return (g_plus - g_minus) / (2.0 * eps)


# ---- targets ----


@dataclass
class _Adapter:
    """What the products need from a target."""

    size: int
    value_and_grad: object
    hvp_complex: object
    z0: np.ndarray | None = None


def _adapt(target) -> _Adapter:
    # Imported here: those modules build on this one's importers.
    from ._control import ControlProblem
    from ._estimation import ParameterEstimation
    from ._objective import Objective

    if isinstance(target, Objective):
        return _Adapter(
            target.size,
            target.value_and_grad,
            lambda z, v: _objective_hvp(target, z, v),
            target.z0,
        )
    kind = type(target).__name__
    if isinstance(target, ControlProblem):
        return _Adapter(
            target.size,
            target.value_and_grad,
            lambda w, v: _control_hvp(target, w, v),
            target.pack(0.0),
        )
    if isinstance(target, ParameterEstimation):
        z0 = target.z_from_values(target.x0, target.p)
        return _Adapter(
            target.size,
            target.value_and_grad,
            lambda z, v: _estimation_hvp(target, z, v),
            z0,
        )
    if callable(getattr(target, "value_and_grad", None)):
        size = getattr(target, "size", None)
        if size is None:
            raise TypeError(
                f"A {kind} target needs a `size` attribute (number of unknowns) "
                "for Hessian-vector products."
            )

        def no_complex(z, v):
            raise NotImplementedError(
                f"A {kind} target has no complex sweeps; use `method='fd'`."
            )

        return _Adapter(
            int(size), target.value_and_grad, no_complex, getattr(target, "z0", None)
        )
    raise TypeError(
        f"Hessian-vector products need an Objective, a ControlProblem, a "
        f"ParameterEstimation or an object with `value_and_grad(z)` and `size`; "
        f"got {kind}."
    )


def _complex_sweeps(seq: SequenceBase, x0, thetas, p):
    """``(xs, J, grad_x0, grad_thetas, grad_p)`` on complex inputs."""
    own = type(seq)._gradient_complex_impl is not SequenceBase._gradient_complex_impl
    if not own and isinstance(seq, Chain):
        return _chain_gradient_complex(seq, x0, thetas, p)
    return seq._gradient_complex_impl(x0, thetas, p)


def _as_complex(block):
    if isinstance(block, np.ndarray) and block.dtype != object:
        return np.ascontiguousarray(block, dtype=np.complex128)
    return [np.ascontiguousarray(b, dtype=np.complex128) for b in block]


def _objective_complex(obj, z, v):
    """Complex sweeps of an Objective at ``z + i h v``: ``(xs, J, g)``."""
    zc = z + 1j * COMPLEX_STEP_H * v
    x0, thetas, p = (_as_complex(b) for b in obj.unpack(zc))
    xs, J, gx0, gthetas, gp = _complex_sweeps(obj.seq, x0, thetas, p)
    obj.counts["hvp"] += 1
    return xs, J, obj.pack(gx0, gthetas, gp)


def _objective_hvp(obj, z, v):
    _, _, g = _objective_complex(obj, z, v)
    return np.ascontiguousarray(g.imag / COMPLEX_STEP_H)


def _control_hvp(problem, w, v):
    # θ = P U is linear, so H_w v = Pᵀ H_z (P v) with z = (θ, p).
    z = problem.to_z(w)
    dz = problem._tangent_z(v)
    return problem._from_z_bar(_objective_hvp(problem.objective, z, dz))


def _estimation_hvp(est, z, v):
    """Complex-step product of ``ParameterEstimation.value_and_grad``.

    The unknowns ``z`` are the model unknowns (log values when
    ``log_params``); the chain rule through ``exp`` runs in complex
    arithmetic, so one complex forward and adjoint sweep gives ``H v``.

    With a fitted (profiled) noise scale the cost is
    ``J = Σ_c ½ n_c log S_c + const`` with ``S_c`` the sum of squared
    residuals of component ``c``; its gradient is that of ``Σ_c w_c S_c / 2``
    with the weights ``w_c = n_c / S_c`` held fixed, so

        H v = Im ∇(Σ_c w_c S_c / 2)(z + i h v) / h + ∇ Σ_c w'_c S_c / 2,
        w'_c = −w_c dS_c[v] / S_c,

    the first term from the complex sweeps with the weights ``w`` (real data
    of the cost kernels), ``dS_c[v]`` from the imaginary part of the complex
    residuals, the second term from one more real adjoint sweep.
    """
    obj = est.objective
    zc = np.asarray(z, dtype=np.float64) + 1j * COMPLEX_STEP_H * np.asarray(v)
    n_x0 = len(est.x0_idx)
    vals = np.exp(zc) if est.log_params else zc
    x0 = est.x0.astype(np.complex128)
    p = est.p.astype(np.complex128)
    x0[est.x0_idx] = vals[:n_x0]
    p[est.p_idx] = vals[n_x0:]
    if est.fit_noise:
        S = _sum_of_squares(est, obj.trajectory(est._model_z(z)).xs)
        w = est.n_counts / S
        est._set_weights(w)

    # Complex forward and adjoint sweeps with fixed weights
    xs, _, gx0, _, gp = _complex_sweeps(obj.seq, x0, _as_complex(obj.thetas), p)
    obj.counts["hvp"] += 1
    g = np.concatenate([gx0[est.x0_idx], gp[est.p_idx]])
    if est.log_params:
        g = g * np.exp(zc)
    hv = g.imag / COMPLEX_STEP_H
    if not est.fit_noise:
        return hv

    # The weights' own derivative: one real adjoint sweep with weights w'
    dS = _sum_of_squares(est, xs).imag / COMPLEX_STEP_H
    est._set_weights(-w * dS / S)
    try:
        g_cross = obj.vjp(est._model_z(z), None, 1.0)
    finally:
        est._set_weights(w)
    return hv + est._chain(z, g_cross)


def _sum_of_squares(est, xs):
    """``S_c``: the squared residuals of each observed component, summed, for
    states ``xs`` (real or complex)."""
    model = np.asarray(xs)[est.obs_steps][:, est.observed]
    present = ~np.isnan(est.y_obs)
    y = np.where(present, est.y_obs, 1.0)
    r = np.log(model) - np.log(y) if est.scale == "log" else model - y
    return np.sum(np.where(present, r * r, 0.0), axis=0)


# ---- network chains on complex values ----


def _chain_gradient_complex(chain, x0, thetas, p):
    """Forward and backward sweep of a chain on complex128 values.

    Complex-analytic layers run unchanged; piecewise-linear ones branch on the
    real part (see :func:`_complex_layer`).
    """
    layers = [
        _complex_layer(layer, f"layer {k}") for k, layer in enumerate(chain.layers)
    ]
    twin = copy.copy(chain)
    twin.layers = layers
    xs, caches, J = twin._run_forward(x0, thetas)
    traj = Trajectory(x0, thetas, p, xs, J, {"caches": caches})
    gx0, gthetas, gp = twin._adjoint_impl(traj, None, 1.0)
    return xs, complex(J), gx0, gthetas, np.zeros(0, dtype=np.complex128)


def _complex_layer(layer, where):
    """A layer that runs on complex128 with the real part choosing branches."""
    if isinstance(layer, Residual):
        sub = [_complex_layer(s, f"{where} (residual branch)") for s in layer.layers]
        return (
            Residual(sub)
            if any(a is not b for a, b in zip(sub, layer.layers))
            else layer
        )
    if isinstance(layer, (ReLU, LeakyReLU, Abs)):
        return _PiecewiseLinear(layer)
    if isinstance(layer, MaxPool2D):
        return _MaxPoolComplex(layer)
    if getattr(layer, "complex_analytic", False) and isinstance(layer, Layer):
        return layer
    raise NotImplementedError(
        f"The chain's {where} ({layer!r}) is neither complex-analytic nor a "
        "known piecewise-linear layer, so complex-step Hessian-vector products "
        "are unavailable; use `method='fd'`."
    )


class _PiecewiseLinear(Layer):
    """ReLU, leaky ReLU or ``|x|`` on complex input: ``y = φ'(Re x) · x``.

    These activations are positively homogeneous, ``φ(x) = φ'(x) x``, so the
    product with the slope chosen from the real part is their complex
    extension off the kink (and uses the layer's own subgradient at it).
    """

    def __init__(self, layer):
        self.layer = layer
        self.n_params = 0

    def forward(self, x, theta):
        d = self.layer._dphi(np.real(x), None)
        return d * x, d

    def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
        return cache * y_bar, np.zeros(0, dtype=np.result_type(y_bar, np.float64))

    def jvp(self, x, theta, y, cache, x_dot, theta_dot):
        return cache * x_dot


class _MaxPoolComplex(Layer):
    """Max-pooling on complex input: winners chosen on the real part, each
    output takes its winner's complex value; the VJP routes real and
    imaginary cotangents separately (it is linear in them)."""

    def __init__(self, layer):
        self.layer = layer
        self.n_params = 0

    def forward(self, x, theta):
        xr = np.ascontiguousarray(np.real(x))
        y, winner = self.layer.forward(xr, theta)
        if np.iscomplexobj(x):
            y = y + 1j * self.layer.jvp(xr, theta, y, winner, np.imag(x), theta)
        return y, (y.real.copy(), winner)

    def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
        y_real, winner = cache
        xr = np.real(x)
        x_bar, t_bar = self.layer.vjp(xr, theta, y_real, winner, np.real(y_bar))
        if np.iscomplexobj(y_bar):
            x_bar = (
                x_bar
                + 1j * self.layer.vjp(xr, theta, y_real, winner, np.imag(y_bar))[0]
            )
        return x_bar, t_bar

    def jvp(self, x, theta, y, cache, x_dot, theta_dot):
        y_real, winner = cache
        xr = np.real(x)
        out = self.layer.jvp(xr, theta, y_real, winner, np.real(x_dot), theta_dot)
        if np.iscomplexobj(x_dot):
            out = out + 1j * self.layer.jvp(
                xr, theta, y_real, winner, np.imag(x_dot), theta_dot
            )
        return out
