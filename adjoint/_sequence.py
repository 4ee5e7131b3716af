"""The state-transition sequence: the one object every sweep works on.

A sequence is ``x_{k+1} = F_k(x_k, θ_k, p)`` for ``k = 0 … N-1`` with the cost
``J = Φ(x_N, p) + Σ_k g_k(x_k, θ_k, p)``.  This module holds the abstract base
class that every kind of sequence implements (kernel-based homogeneous
sequences, Runge–Kutta and implicit integrators, heterogeneous network
chains) and the bookkeeping that turns a choice of unknowns (any of ``x0``,
``theta``, ``p``) into one flat vector for optimisers and checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNKNOWN_NAMES = ("x0", "theta", "p")


@dataclass
class Trajectory:
    """What a forward sweep keeps for the backward and tangent sweeps.

    Made by the sequences' forward sweeps and returned by
    :meth:`adjoint.Objective.trajectory`; users read it, they rarely build
    one.  The fields are also the constructor's parameters, in this order.

    Attributes
    ----------
    x0, thetas, p : ndarray
        The inputs of the sweep, as validated arrays (``thetas`` is a list of
        arrays for a chain whose stages have parameters of their own shapes).
    xs : ndarray, shape (N + 1, n), or list of arrays
        The states ``x_0 … x_N``.
    J : float
        The cost.
    extra : dict
        Whatever a sequence kind needs to keep besides the states (stage
        values of an implicit step, checkpoint snapshots, counters).

    Examples
    --------
    ``x_{k+1} = x_k + θ_k`` over three steps:

    >>> import adjoint
    >>> def step(k, x, theta, p, consts, out):
    ...     out[0] = x[0] + theta[0]
    ...     return 0
    >>> def step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    ...     x_bar[0] += lam[0]
    ...     theta_bar[0] += lam[0]
    ...     return 0
    >>> seq = adjoint.Sequence(step, step_vjp, n=1, N=3, m=1)
    >>> obj = adjoint.Objective(seq, x0=[0.0], thetas=[[1.0], [2.0], [3.0]],
    ...                         wrt="theta")
    >>> traj = obj.trajectory(obj.z0)
    >>> traj.xs.ravel().tolist(), traj.J  # no cost kernels: J = 0
    ([0.0, 1.0, 3.0, 6.0], 0.0)
    """

    x0: Any
    thetas: Any
    p: Any
    xs: Any
    J: float
    extra: dict = field(default_factory=dict)


class SequenceBase(ABC):
    """A state-transition sequence with compiled forward, adjoint and tangent sweeps.

    Subclasses supply, in this order:

    1. ``N`` (number of steps) and the three shape attributes ``x0_shape``,
       ``theta_shapes`` (a list of ``N`` shapes, or one ``(N, m)`` shape given
       by ``theta_shape``) and ``p_shape``;
    2. ``_forward_impl(x0, thetas, p) -> Trajectory``;
    3. ``_adjoint_impl(traj, xs_bar, cost_weight) -> (grad_x0, grad_thetas,
       grad_p)``: the vector-Jacobian product of the map
       ``(x0, θ, p) -> (x_0 … x_N, J)`` with cotangents ``xs_bar`` on the states
       (or ``None``) and ``cost_weight`` on ``J``;
    4. ``_tangent_impl(traj, x0_tan, thetas_tan, p_tan) -> (xs_tan, J_tan)``:
       the Jacobian-vector product of the same map;
    5. optionally ``_forward_complex_impl(x0, thetas, p) -> (xs, J)`` running the
       same arithmetic on ``complex128`` for the complex-step check;
    6. optionally, for checkpointed gradients (:mod:`adjoint._checkpoint`),
       ``_forward_segment``, ``_adjoint_segment`` and ``_terminal_segment``:
       the same sweeps over a range of steps ``[k_a, k_b)``;
    7. optionally, for exact Hessian-vector products (:mod:`adjoint._hessian`),
       ``_gradient_complex_impl(x0, thetas, p) -> (xs, J, grad_x0,
       grad_thetas, grad_p)``: forward and adjoint sweeps on ``complex128``.

    The public methods validate inputs once and call these hooks.  Users do
    not subclass it to write a model: :class:`adjoint.Sequence` (kernels),
    :class:`adjoint.ODESequence` (ODE integrators) and :class:`adjoint.Chain`
    (networks) are its subclasses; wrap one in :class:`adjoint.Objective`
    for gradients.  The class takes no constructor arguments of its own.

    Raises
    ------
    NotImplementedError
        From the optional hooks a subclass does not implement, with a message
        naming the alternative (finite differences, ``checkpoint=None``).

    Examples
    --------
    Every sequence reports the sizes of its unknowns:

    >>> import adjoint
    >>> def step(k, x, theta, p, consts, out):
    ...     out[0] = x[0] + theta[0] + theta[1]
    ...     return 0
    >>> def step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    ...     x_bar[0] += lam[0]
    ...     theta_bar[0] += lam[0]
    ...     theta_bar[1] += lam[0]
    ...     return 0
    >>> seq = adjoint.Sequence(step, step_vjp, n=1, N=3, m=2)
    >>> isinstance(seq, adjoint.SequenceBase)
    True
    >>> seq.sizes(), seq.theta_size(), seq.theta_shapes
    ({'x0': 1, 'theta': 6, 'p': 0}, 6, [(2,), (2,), (2,)])
    """

    N: int
    x0_shape: tuple
    p_shape: tuple

    # ---- shapes of the unknowns ----

    @property
    def theta_shapes(self) -> list[tuple]:
        """Shape of each ``θ_k``; per-step parameters of a homogeneous
        sequence share one shape."""
        return [tuple(self.theta_shape[1:])] * self.N

    def theta_size(self) -> int:
        """Number of scalars in all per-step parameters ``θ_0 … θ_{N-1}``."""
        if hasattr(self, "theta_shape"):  # one (N, m) block: skip the N shapes
            return int(np.prod(self.theta_shape))
        return int(sum(int(np.prod(s)) for s in self.theta_shapes))

    def sizes(self) -> dict:
        """Number of scalars in each unknown block."""
        return {
            "x0": int(np.prod(self.x0_shape)),
            "theta": self.theta_size(),
            "p": int(np.prod(self.p_shape)),
        }

    # ---- hooks ----

    @abstractmethod
    def _forward_impl(self, x0, thetas, p) -> Trajectory: ...

    @abstractmethod
    def _adjoint_impl(self, traj, xs_bar, cost_weight): ...

    @abstractmethod
    def _tangent_impl(self, traj, x0_tan, thetas_tan, p_tan): ...

    def _forward_complex_impl(self, x0, thetas, p):
        raise NotImplementedError(
            f"{type(self).__name__} has no complex-step forward sweep; use "
            "finite differences (`method='fd'`) to check its gradient."
        )

    def _gradient_complex_impl(self, x0, thetas, p):
        """Forward and adjoint sweeps on ``complex128`` inputs.

        Returns ``(xs, J, grad_x0, grad_thetas, grad_p)``, complex: the states,
        the cost and its gradient from the same arithmetic as
        ``_forward_impl`` and ``_adjoint_impl`` (cost weight 1).
        With inputs ``z + i h v`` its imaginary part over ``h`` is the
        Hessian-vector product ``H v`` (:meth:`adjoint.Objective.hessp`).
        Raise ``NotImplementedError`` when the sequence (or one of its
        kernels) cannot run on complex values; ``hessp`` then falls back to
        central differences of the gradient.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no complex-step gradient sweep; use "
            "`method='fd'` (central differences of the adjoint gradient)."
        )

    # ---- hooks for checkpointed sweeps (adjoint._checkpoint) ----
    # A sequence kind that implements these three can be differentiated under
    # any schedule of :class:`adjoint.Checkpointing`; the driver calls them on
    # segments [k_a, k_b) of the steps and keeps the snapshots itself.

    def _forward_segment(self, x_a, thetas, p, k_a, k_b, xs_out, J0=None):
        """Run steps ``k_a … k_b-1`` from the state ``x_a = x_{k_a}``.

        State ``x_{k_a + i}`` is written to ``xs_out[i % len(xs_out)]``:
        ``xs_out`` with ``k_b - k_a + 1`` rows keeps every state of the segment;
        with 2 rows only the last two are kept and ``x_{k_b}`` ends in row
        ``(k_b - k_a) % 2``.  ``x_a`` may be ``xs_out[0]`` itself.  Each row has
        the shape of ``x0``.

        With ``J0`` a float, return ``J0 + Σ_{k_a ≤ k < k_b} g_k`` summed in
        step order (so running the steps in consecutive segments gives the
        cost of one sweep bit for bit); with ``J0=None`` skip the costs and
        return None.  Raises :class:`adjoint.SweepError` as the full sweep does.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no segment sweeps, so it can only be "
            "differentiated with every state stored; pass `checkpoint=None` (or "
            "`Checkpointing('store_all')`)."
        )

    def _adjoint_segment(
        self, xs, thetas, p, k_a, lam, grad_thetas, grad_p, cost_weight, x_end
    ):
        """Backward sweep over steps ``k_b-1`` down to ``k_a``.

        ``xs`` holds the states ``x_{k_a} … x_{k_b-1}`` (``k_b = k_a +
        len(xs)``) and ``x_end`` the state ``x_{k_b}``, for kinds whose step
        VJP needs the step's output (implicit steps); others ignore it.
        ``lam`` is ``λ_{k_b}`` on entry and is overwritten with
        ``λ_{k_a}``; rows ``k_a … k_b-1`` of ``grad_thetas`` are overwritten with
        ``dJ/dθ_k``; ``dJ/dp`` contributions are added to ``grad_p``.  The
        running costs enter with weight ``cost_weight``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no segment sweeps; pass `checkpoint=None`."
        )

    def _terminal_segment(self, x_N, p, cost_weight, lam_out, grad_p):
        """Return ``Φ(x_N, p)``; overwrite ``lam_out`` with ``λ_N = w ∂Φ/∂x_N``
        and add ``w ∂Φ/∂p`` to ``grad_p`` (``w = cost_weight``)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no segment sweeps; pass `checkpoint=None`."
        )

    @abstractmethod
    def _validate_inputs(self, x0, thetas, p):
        """Return ``(x0, thetas, p)`` as float64 arrays of the right shapes, or
        raise ``ValueError`` naming the argument."""

    # ---- flat vectors of unknowns ----

    def _theta_to_flat(self, thetas):
        if isinstance(thetas, np.ndarray):
            return thetas.ravel()
        return np.concatenate([np.ravel(t) for t in thetas]) if thetas else np.zeros(0)

    def _theta_from_flat(self, flat, like):
        if isinstance(like, np.ndarray):
            return flat.reshape(like.shape)
        out, i = [], 0
        for t in like:
            size = int(np.size(t))
            out.append(flat[i : i + size].reshape(np.shape(t)))
            i += size
        return out

    # ---- outputs for Jacobians and dot-product tests ----
    # Defaults for sequences whose states stack into one (N + 1, n) array; a
    # chain of stages of different widths overrides them.

    def _has_tangent(self) -> bool:
        return getattr(self, "step_jvp", True) is not None

    def _output_steps(self, steps):
        if steps is None:
            return [self.N]
        steps = [int(k) for k in np.atleast_1d(steps)]
        for k in steps:
            if not 0 <= k <= self.N:
                raise ValueError(
                    f"`steps` holds {k}; states are numbered 0 … N = {self.N}."
                )
        return steps

    def _n_outputs(self, traj, steps) -> int:
        return int(sum(np.size(traj.xs[k]) for k in steps))

    def _states_at(self, xs, steps) -> np.ndarray:
        return np.concatenate([np.ravel(xs[k]) for k in steps])

    def _states_cotangent(self, traj, w, steps):
        xs_bar = np.zeros_like(traj.xs)
        i = 0
        for k in steps:
            size = xs_bar[k].size
            xs_bar[k] += w[i : i + size].reshape(xs_bar[k].shape)
            i += size
        return xs_bar
