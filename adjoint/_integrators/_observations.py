"""Least-squares observation costs for ODE sequences.

:func:`observation_cost` turns observations of some state components at some
steps into the cost kernels and the per-step data array of an
:class:`~adjoint.ODESequence`; the continuous adjoint reads the same object.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .. import _validate
from ..kernels import Kernel
from . import _observation_kernels as ok

__all__ = ["ObservationCost", "observation_cost"]


@functools.cache
def _kernels(log: bool):
    prefix = "log_observation" if log else "observation"
    return tuple(
        Kernel(getattr(ok, f"{prefix}_{kind}"), kind)
        for kind in (
            "running_cost",
            "running_cost_vjp",
            "terminal_cost",
            "terminal_cost_vjp",
        )
    )


@dataclass(frozen=True, eq=False)
class ObservationCost:
    """Kernels and data of a least-squares observation cost.

    Unpacks as ``(running_cost, running_cost_vjp, terminal_cost,
    terminal_cost_vjp, data)``; :meth:`kwargs` gives the same as keyword
    arguments of :class:`~adjoint.ODESequence`.

    Attributes
    ----------
    running_cost, running_cost_vjp, terminal_cost, terminal_cost_vjp : Kernel
    data : ndarray, shape (N + 1, 3 q)
        Row ``k``: ``[y_1 … y_q, w_1 … w_q, j_1 … j_q]`` (see
        :func:`observation_cost`).
    obs_steps : ndarray of int, shape (n_obs,)
    values : ndarray, shape (n_obs, q)
        Observed values, NaN where missing.
    components : ndarray of int, shape (q,)
    weights : ndarray, shape (n_obs, q)
        Weights, zero where a value is missing.
    log : bool
    N : int

    Parameters
    ----------
    running_cost, running_cost_vjp, terminal_cost, terminal_cost_vjp : Kernel
    data, obs_steps, values, components, weights, log, N
        The attributes above.  Build the object with
        :func:`~adjoint.observation_cost`, which checks its inputs and lays
        out ``data``; the constructor checks nothing.

    Examples
    --------
    >>> from adjoint import observation_cost
    >>> cost = observation_cost([2, 4], [0.5, 0.3], N=4)
    >>> running_cost, running_cost_vjp, terminal_cost, terminal_cost_vjp, data = cost
    >>> data.shape, cost.obs_steps.tolist()
    ((5, 3), [2, 4])
    """

    running_cost: Kernel
    running_cost_vjp: Kernel
    terminal_cost: Kernel
    terminal_cost_vjp: Kernel
    data: np.ndarray
    obs_steps: np.ndarray
    values: np.ndarray
    components: np.ndarray
    weights: np.ndarray
    log: bool
    N: int

    def __iter__(self):
        yield self.running_cost
        yield self.running_cost_vjp
        yield self.terminal_cost
        yield self.terminal_cost_vjp
        yield self.data

    def kwargs(self) -> dict:
        """``running_cost=…, running_cost_vjp=…, terminal_cost=…,
        terminal_cost_vjp=…, data=…`` for :class:`~adjoint.ODESequence`.

        Returns
        -------
        dict

        Examples
        --------
        >>> from adjoint import observation_cost
        >>> sorted(observation_cost([1], [0.5], N=2).kwargs())
        ['data', 'running_cost', 'running_cost_vjp', 'terminal_cost',
         'terminal_cost_vjp']
        """
        return dict(
            running_cost=self.running_cost,
            running_cost_vjp=self.running_cost_vjp,
            terminal_cost=self.terminal_cost,
            terminal_cost_vjp=self.terminal_cost_vjp,
            data=self.data,
        )

    def check_fits(self, n: int, N: int) -> None:
        """Raise ``ValueError`` unless the cost fits ``N`` steps of ``n`` states.

        Parameters
        ----------
        n : int
            Number of states of the system.
        N : int
            Number of steps of the sequence.

        Raises
        ------
        ValueError
            If the cost was built for another ``N`` or observes a component
            ``>= n``.

        Examples
        --------
        >>> from adjoint import observation_cost
        >>> cost = observation_cost([1], [0.5], N=2, components=[1])
        >>> cost.check_fits(2, 2)
        >>> cost.check_fits(1, 2)
        Traceback (most recent call last):
            ...
        ValueError: The observation cost observes component 1, but the system ...
        """
        if N != self.N:
            raise ValueError(
                f"The observation cost was built for N = {self.N} steps; the "
                f"sequence has N = {N}. Build it with `N={N}`."
            )
        if self.components.size and self.components.max() >= n:
            raise ValueError(
                f"The observation cost observes component {self.components.max()}, "
                f"but the system has n = {n} states (components 0 … {n - 1})."
            )

    def misfit(self, k: int, x) -> tuple[float, np.ndarray]:
        """``(g_k, ∂g_k/∂x)`` at step ``k`` for state ``x`` (NumPy, for the
        continuous adjoint's jumps).

        Parameters
        ----------
        k : int
            Step, ``0 … N``.
        x : array_like, shape (n,)
            State at that step.

        Returns
        -------
        g : float
            The misfit, 0 at a step without observations.
        grad : ndarray, shape (n,)
            Its gradient with respect to ``x``.

        Examples
        --------
        >>> from adjoint import observation_cost
        >>> cost = observation_cost([2], [0.5], N=2)
        >>> g, grad = cost.misfit(2, [0.7])
        >>> round(g, 6), grad.round(6)
        (0.02, array([0.2]))
        """
        x = np.asarray(x, dtype=np.float64)
        row = self.data[k]
        q = self.components.size
        y, w = row[:q], row[q : 2 * q]
        grad = np.zeros_like(x)
        observed = w != 0.0
        j = self.components[observed]
        if self.log:
            r = np.log(x[j]) - np.log(y[observed])
            np.add.at(grad, j, w[observed] * r / x[j])
        else:
            r = x[j] - y[observed]
            np.add.at(grad, j, w[observed] * r)
        return float(0.5 * np.sum(w[observed] * r * r)), grad


def observation_cost(
    obs_steps, values, *, N: int, components=None, weights=None, log: bool = False
) -> ObservationCost:
    """A least-squares misfit to observations at chosen steps.

    The cost is

        J = Σ_{r} ½ Σ_i w_ri (x_{k_r}[j_i] − y_ri)²

    over observations ``r`` at steps ``k_r = obs_steps[r]`` of the components
    ``j_i = components[i]``; with ``log=True`` the misfit compares
    ``log x[j_i]`` with ``log y_ri`` (positive states and data).  Observations
    at steps ``0 … N-1`` enter as running costs ``g_k``, one at step ``N`` as
    the terminal cost ``Φ``.

    Parameters
    ----------
    obs_steps : array_like of int, shape (n_obs,)
        Distinct steps in ``0 … N`` (the state ``x_k`` is observed at time
        ``t0 + k dt``).
    values : array_like, shape (n_obs, q) or (n_obs,)
        Observed values; NaN marks a missing value (weight 0).
    N : int
        Number of steps of the sequence the cost is for.
    components : array_like of int, shape (q,), optional
        Which state component each column of ``values`` observes (default
        ``0 … q-1``).
    weights : float or array_like, shape (q,) or (n_obs, q), optional
        Non-negative weights ``w`` (default 1), e.g. ``1/σ²``.
    log : bool, optional
        Compare logarithms.

    Returns
    -------
    ObservationCost
        Unpacks as ``(running_cost, running_cost_vjp, terminal_cost,
        terminal_cost_vjp, data)``.

    Raises
    ------
    ValueError
        For ``N`` not positive, steps out of ``0 … N`` or repeated, values
        of the wrong shape or infinite, bad ``components`` or ``weights``,
        or (with ``log=True``) non-positive values.
    TypeError
        If ``obs_steps`` does not hold integers.

    Notes
    -----
    Data layout (for code that builds or reads ``data`` itself): shape
    ``(N + 1, 3 q)``; row ``k`` is ``[y_1 … y_q, w_1 … w_q, j_1 … j_q]`` with
    the observed values, the weights (zero where nothing is observed at step
    ``k``; the value is then 0) and the observed components as floats (the
    same in every row).  The kernels read nothing else, so several costs can
    share a sequence only by summing their kernels yourself.

    Examples
    --------
    >>> from adjoint import observation_cost
    >>> cost = observation_cost([2, 4], [[1.0, 0.5], [1.2, 0.4]], N=4)
    >>> cost.data.shape
    (5, 6)
    >>> cost.data[2]
    array([1. , 0.5, 1. , 1. , 0. , 1. ])
    """
    N = _validate.positive_int("N", N)
    steps = np.asarray(obs_steps)
    if steps.ndim != 1 or steps.size == 0:
        raise ValueError(
            f"`obs_steps` must be a non-empty 1-D list of steps; got shape "
            f"{steps.shape}."
        )
    if steps.dtype.kind not in "iu":
        if steps.dtype.kind == "f" and np.all(steps == np.round(steps)):
            steps = steps.astype(np.intp)
        else:
            raise TypeError(f"`obs_steps` must hold integers; got dtype {steps.dtype}.")
    steps = steps.astype(np.intp)
    bad = (steps < 0) | (steps > N)
    if bad.any():
        raise ValueError(
            f"`obs_steps` holds {int(steps[bad][0])}; "
            f"states are numbered 0 … N = {N}."
        )  # fmt: skip
    if np.unique(steps).size != steps.size:
        raise ValueError("`obs_steps` holds a step twice; combine the observations.")

    values = np.array(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != steps.size:
        raise ValueError(
            f"`values` has shape {values.shape}; with {steps.size} observation steps "
            f"it must have shape ({steps.size}, q)."
        )
    q = values.shape[1]
    if np.isinf(values).any():
        raise ValueError("`values` holds an infinite value; use NaN for missing ones.")
    if components is None:
        components = np.arange(q)
    components = np.asarray(components)
    if components.shape != (q,) or components.dtype.kind not in "iu":
        raise ValueError(
            f"`components` must be {q} integers (one per column of `values`); got "
            f"{components!r}."
        )
    if (components < 0).any():
        raise ValueError("`components` must be non-negative state indices.")
    if weights is None:
        weights = 1.0
    weights = np.broadcast_to(
        np.asarray(weights, dtype=np.float64), values.shape
    ).copy()
    if not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise ValueError("`weights` must be finite and non-negative.")
    missing = np.isnan(values)
    weights[missing] = 0.0
    if log and np.any(values[~missing] <= 0):
        raise ValueError("`log=True` needs positive observed values.")

    data = np.zeros((N + 1, 3 * q))
    data[steps, :q] = np.where(missing, 0.0, values)
    data[steps, q : 2 * q] = weights
    data[:, 2 * q :] = components
    kernels = _kernels(bool(log))
    return ObservationCost(
        *kernels,
        data=data,
        obs_steps=steps,
        values=values,
        components=components.astype(np.intp),
        weights=weights,
        log=bool(log),
        N=N,
    )
