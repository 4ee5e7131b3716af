"""Discrete against continuous gradients as the step shrinks.

The discrete adjoint gives the exact gradient of the discretised cost; as
``dt → 0`` it approaches the gradient of the exact cost (the continuous
adjoint's) at the order of the scheme.  :func:`gradient_convergence`
measures that order with a log-log fit; :func:`adjoint.plotting.plot_convergence`
draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import linregress

from .._check import relative_error
from .._objective import Objective
from ._continuous import compare_adjoints
from ._tableaus import SCHEME_ORDERS

__all__ = ["ConvergenceResult", "gradient_convergence"]


@dataclass
class ConvergenceResult:
    """Errors of discrete gradients against a continuous reference.

    Attributes
    ----------
    scheme : str
    Ns : ndarray of int
        Numbers of steps.
    dts : ndarray
        Step sizes.
    errors : ndarray
        ``max|g_N − g_ref| / max|g_ref|`` for each ``N``.
    order : float
        Slope of ``log(error)`` against ``log(dt)`` (``scipy.stats.linregress``).
    intercept : float
        Intercept of the same fit, for drawing it.
    expected_order : int or None
        The scheme's classical order, where known.
    reference : ndarray
        The continuous-adjoint gradient.
    gradients : list of ndarray
        The discrete gradients.

    Examples
    --------
    :func:`gradient_convergence` makes one;
    :func:`adjoint.plotting.plot_convergence` draws it.  Built by hand:

    >>> import numpy as np
    >>> from adjoint import ConvergenceResult
    >>> result = ConvergenceResult(
    ...     scheme="heun", Ns=np.array([10, 20]), dts=np.array([0.2, 0.1]),
    ...     errors=np.array([4e-3, 1e-3]), order=2.0, intercept=-2.3,
    ...     expected_order=2, reference=np.array([-0.7]), gradients=[])
    >>> result.order == result.expected_order
    True
    """

    scheme: str
    Ns: np.ndarray
    dts: np.ndarray
    errors: np.ndarray
    order: float
    intercept: float
    expected_order: int | None
    reference: np.ndarray
    gradients: list


def gradient_convergence(
    make_sequence,
    x0,
    p,
    Ns,
    *,
    wrt=("p",),
    reference=None,
    method: str = "DOP853",
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> ConvergenceResult:
    """Observed order of convergence of the discrete gradient.

    Parameters
    ----------
    make_sequence : callable
        ``make_sequence(N) -> ODESequence``: the same problem on ``N`` steps
        (same ``t0`` and final time, observations at the same times).
    x0, p : array_like
        Where the gradients are taken (controls stay zero).
    Ns : sequence of int
        Step counts, increasing; choose them in the asymptotic range and with
        errors well above the reference's accuracy.
    wrt : str or sequence of str, optional
        Gradient blocks compared (default ``('p',)``).
    reference : array_like, optional
        The exact gradient if known; default: the continuous adjoint
        (:func:`~adjoint.compare_adjoints` on the finest sequence) with
        ``method``, ``rtol``, ``atol``.

    method, rtol, atol : optional
        Solver and tolerances of the continuous reference (defaults
        ``'DOP853'``, 1e-12, 1e-12).

    Returns
    -------
    ConvergenceResult
        ``order`` is the fitted slope; it should be close to the scheme's
        classical order.

    Raises
    ------
    ValueError
        If ``Ns`` holds fewer than two step counts, or from the sequences,
        :class:`~adjoint.Objective` or :func:`~adjoint.compare_adjoints` for
        bad inputs.

    Examples
    --------
    Heun's method (order 2) on exponential decay, with one observation at
    ``t = 2``:

    >>> from adjoint import ODESequence, ODESystem, gradient_convergence
    >>> from adjoint import observation_cost
    >>> def decay(t, x, p, u, out):
    ...     out[0] = -p[0] * x[0]
    ...     return 0
    >>> system = ODESystem.from_rhs(decay, n=1, n_p=1)
    >>> def make_sequence(N):
    ...     obs = observation_cost([N], [0.3], N=N)
    ...     return ODESequence(system, scheme="heun", dt=2.0 / N, N=N,
    ...                        observations=obs)
    >>> result = gradient_convergence(make_sequence, [1.0], [0.5], [10, 20, 40])
    >>> round(result.order, 1), result.expected_order
    (2.0, 2)
    """
    Ns = np.asarray(sorted(int(N) for N in Ns))
    if Ns.size < 2:
        raise ValueError("`Ns` needs at least two step counts to fit an order.")
    wrt = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    seqs = [make_sequence(int(N)) for N in Ns]
    if reference is None:
        reference = compare_adjoints(
            seqs[-1], x0, p, wrt=wrt, method=method, rtol=rtol, atol=atol
        ).continuous
    reference = np.asarray(reference, dtype=np.float64)
    gradients, errors, dts = [], [], []
    for seq in seqs:
        obj = Objective(seq, x0=x0, p=p, wrt=wrt)
        gradients.append(obj.grad(obj.z0))
        errors.append(relative_error(gradients[-1], reference))
        dts.append(seq.dt)
    dts, errors = np.array(dts), np.array(errors)
    fit = linregress(np.log(dts), np.log(errors))
    scheme = seqs[0].scheme
    expected = SCHEME_ORDERS.get(scheme)
    if expected is None and seqs[0].tableau is not None:
        expected = seqs[0].tableau.order
    return ConvergenceResult(
        scheme=scheme,
        Ns=Ns,
        dts=dts,
        errors=errors,
        order=float(fit.slope),
        intercept=float(fit.intercept),
        expected_order=expected,
        reference=reference,
        gradients=gradients,
    )
