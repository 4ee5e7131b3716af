"""A sequence with its unknowns chosen: the object optimisers and checks use.

:class:`Objective` fixes the values of ``x0``, ``thetas`` and ``p``, marks some
of them as unknowns (``wrt``), and maps one flat vector ``z`` of those
unknowns to the cost, its gradient (one forward and one adjoint sweep),
tangents (forward mode) and Jacobians of chosen states.  It counts every
sweep it runs, so comparisons report measured costs.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from . import _checkpoint, _validate
from ._sequence import UNKNOWN_NAMES, SequenceBase

_OBJECTIVE_DEFAULT = object()  # "use the objective's own checkpointing"


class Objective:
    """The cost of a sequence as a function of a flat vector of unknowns.

    Parameters
    ----------
    seq : SequenceBase
        The sequence (homogeneous, integrator or chain).
    x0, thetas, p : array_like
        Values of the three blocks; those not in ``wrt`` stay fixed.
        ``thetas`` and ``p`` default to zeros.
    wrt : str or sequence of str
        Which blocks are unknowns: any of ``'x0'``, ``'theta'``, ``'p'``.  The
        flat vector ``z`` stacks them in that fixed order.
    checkpoint : Checkpointing, optional
        How gradients get the states for the backward sweep (default: the
        sequence keeps every state).  With a schedule other than store-all,
        :meth:`value_and_grad` runs it and :meth:`fun` keeps two states only;
        :meth:`vjp`, :meth:`jvp` and :meth:`jacobian` still store every state.

    Attributes
    ----------
    z0 : ndarray
        The unknowns at the values given.
    counts : collections.Counter
        Sweeps run so far: ``'forward'``, ``'adjoint'``, ``'tangent'``, and,
        once :meth:`hessp` has run, ``'hvp'``: complex-step Hessian-vector
        products, each one forward and one adjoint sweep in complex128
        arithmetic (not counted under ``'forward'``/``'adjoint'``).
    last_checkpoint_stats : CheckpointStats or None
        What the latest gradient did: schedule, snapshots held, steps
        recomputed, peak bytes of stored states.

    Raises
    ------
    TypeError
        If ``seq`` is not a sequence object.
    ValueError
        If ``wrt`` names an unknown block or is empty, ``x0`` is missing, or a
        block has the wrong shape (the message names it).

    Examples
    --------
    The rate of a logistic model fitted to one observation, with SciPy:

    >>> import sympy as sp
    >>> from scipy.optimize import minimize
    >>> from adjoint import ODESystem, ODESequence, Objective, observation_cost
    >>> x, r = sp.symbols("x r")
    >>> system = ODESystem.from_sympy([r * x * (1 - x)], [x], [r])
    >>> obs = observation_cost([20], [0.8], N=20)
    >>> seq = ODESequence(system, dt=0.1, N=20, observations=obs)
    >>> obj = Objective(seq, x0=[0.1], p=[1.5], wrt="p")
    >>> J, grad = obj.value_and_grad(obj.z0)      # one forward, one adjoint sweep
    >>> grad.shape
    (1,)
    >>> res = minimize(obj.value_and_grad, obj.z0, jac=True, method="L-BFGS-B")
    >>> bool(res.fun < 1e-10), round(float(res.x[0]), 3)  # exact: ln(36)/2
    (True, 1.792)
    >>> obj.counts["adjoint"] > 0
    True
    """

    def __init__(
        self,
        seq: SequenceBase,
        x0=None,
        thetas=None,
        p=None,
        *,
        wrt="p",
        checkpoint=None,
    ):
        if not isinstance(seq, SequenceBase):
            raise TypeError(
                f"`seq` must be a sequence object, got {type(seq).__name__}."
            )
        if isinstance(wrt, str):
            wrt = (wrt,)
        wrt = tuple(wrt)
        for name in wrt:
            _validate.choice("wrt", name, UNKNOWN_NAMES)
        if not wrt:
            raise ValueError("`wrt` is empty; name at least one of 'x0', 'theta', 'p'.")
        self.seq = seq
        self.wrt = tuple(name for name in UNKNOWN_NAMES if name in wrt)
        if x0 is None:
            raise ValueError("`x0` is required: the initial state of the sequence.")
        self.x0, self.thetas, self.p = seq._validate_inputs(x0, thetas, p)
        sizes = seq.sizes()
        self._sizes = [sizes[name] for name in self.wrt]
        self.size = int(sum(self._sizes))
        self.z0 = self.pack(self.x0, self.thetas, self.p)
        self.counts = Counter(forward=0, adjoint=0, tangent=0)
        self._last = None  # (z, trajectory) of the latest forward sweep
        self.checkpoint = _checkpoint.as_checkpointing(checkpoint)
        self.last_checkpoint_stats = None

    # ---- packing ----

    def pack(self, x0, thetas, p) -> np.ndarray:
        """Flat vector of the unknown blocks of ``(x0, thetas, p)``.

        Parameters
        ----------
        x0, thetas, p : array_like
            Values of the three blocks; those not in ``wrt`` are ignored.

        Returns
        -------
        ndarray, shape (size,)

        Examples
        --------
        >>> from adjoint import ODESequence, ODESystem, Objective
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = ODESequence(ODESystem.from_rhs(decay, n=1, n_p=1), dt=0.1, N=10)
        >>> obj = Objective(seq, x0=[1.0], p=[0.5], wrt=("x0", "p"))
        >>> obj.pack([2.0], None, [0.3])
        array([2. , 0.3])
        """
        parts = {
            "x0": lambda: np.ravel(x0),
            "theta": lambda: self.seq._theta_to_flat(thetas),
            "p": lambda: np.ravel(p),
        }
        if not self.wrt:
            return np.zeros(0)
        return np.concatenate([parts[name]() for name in self.wrt]).astype(
            np.result_type(*(parts[name]() for name in self.wrt)), copy=False
        )

    def unpack(self, z):
        """``(x0, thetas, p)`` with the unknown blocks taken from ``z``.

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        x0, thetas, p
            The blocks in ``wrt`` from ``z``, the others as given to the
            constructor.

        Raises
        ------
        ValueError
            If ``z`` has the wrong shape.

        Examples
        --------
        >>> from adjoint import ODESequence, ODESystem, Objective
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = ODESequence(ODESystem.from_rhs(decay, n=1, n_p=1), dt=0.1, N=10)
        >>> obj = Objective(seq, x0=[1.0], p=[0.5], wrt=("x0", "p"))
        >>> x0, thetas, p = obj.unpack([2.0, 0.3])
        >>> x0, p, thetas.shape
        (array([2.]), array([0.3]), (10, 0))
        """
        z = np.asarray(z)
        if z.shape != (self.size,):
            raise ValueError(
                f"`z` has shape {z.shape}; the objective has {self.size} unknowns "
                f"({', '.join(self.wrt)}), so `z` must have shape ({self.size},)."
            )
        blocks = {"x0": self.x0, "theta": self.thetas, "p": self.p}
        i = 0
        for name, size in zip(self.wrt, self._sizes):
            piece = z[i : i + size]
            if name == "theta":
                blocks[name] = self.seq._theta_from_flat(piece, self.thetas)
            else:
                blocks[name] = piece.reshape(np.shape(blocks[name]))
            i += size
        return blocks["x0"], blocks["theta"], blocks["p"]

    def _checked(self, z):
        z = _validate.real_array(
            "z", z, (self.size,), what=f"the objective has {self.size} unknowns"
        )
        return z

    # ---- sweeps ----

    def trajectory(self, z):
        """Forward sweep at ``z`` (reused when ``z`` repeats).

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        Trajectory
            The states ``xs``, the cost ``J`` and what the backward sweep
            needs.

        Raises
        ------
        ValueError
            If ``z`` has the wrong shape or a non-finite entry.
        SweepError
            If the forward sweep fails.

        Examples
        --------
        >>> from adjoint import ODESequence, ODESystem, Objective
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = ODESequence(ODESystem.from_rhs(decay, n=1, n_p=1), dt=0.1, N=10)
        >>> obj = Objective(seq, x0=[1.0], p=[0.5], wrt=("x0", "p"))
        >>> obj.trajectory(obj.z0).xs.shape
        (11, 1)
        """
        z = self._checked(z)
        if self._last is not None and np.array_equal(self._last[0], z):
            return self._last[1]
        # A private copy: the trajectory keeps views of it (x0, p), and the
        # caller may change its own array in place afterwards.
        z = z.copy()
        x0, thetas, p = self.unpack(z)
        traj = self.seq._forward_impl(x0, thetas, p)
        self.counts["forward"] += 1
        self._last = (z, traj)
        return traj

    def fun(self, z) -> float:
        """The cost ``J(z)`` (one forward sweep, reused if ``z`` repeats).

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        float

        Raises
        ------
        SweepError
            If the forward sweep fails (a non-finite state names its step).

        Examples
        --------
        >>> from adjoint import ODESequence, ODESystem, Objective
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = ODESequence(ODESystem.from_rhs(decay, n=1, n_p=1), dt=0.1, N=10)
        >>> obj = Objective(seq, x0=[1.0], p=[0.5], wrt=("x0", "p"))
        >>> obj.fun(obj.z0)
        0.0
        """
        if self.checkpoint is not None and not self.checkpoint.stores_all:
            z = self._checked(z)
            self.counts["forward"] += 1
            return _checkpoint._value(self.seq, *self.unpack(z))
        return self.trajectory(z).J

    def value_and_grad(self, z, *, checkpoint=_OBJECTIVE_DEFAULT):
        """``(J, dJ/dz)`` from one forward and one adjoint sweep (SciPy's
        ``jac=True`` convention).

        Parameters
        ----------
        z : array_like, shape (size,)
        checkpoint : Checkpointing or None, optional
            Overrides the objective's choice for this call;
            ``last_checkpoint_stats`` tells what the call did.

        Returns
        -------
        J : float
        grad : ndarray, shape (size,)

        Raises
        ------
        SweepError
            If a sweep fails.

        Examples
        --------
        See the class docstring; with SciPy,
        ``minimize(obj.value_and_grad, obj.z0, jac=True)``.

        >>> from adjoint import ODESequence, ODESystem, Objective
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = ODESequence(ODESystem.from_rhs(decay, n=1, n_p=1), dt=0.1, N=10)
        >>> obj = Objective(seq, x0=[1.0], p=[0.5], wrt=("x0", "p"))
        >>> J, grad = obj.value_and_grad(obj.z0)
        >>> grad.shape
        (2,)
        """
        if checkpoint is _OBJECTIVE_DEFAULT:
            checkpoint = self.checkpoint
        checkpoint = _checkpoint.as_checkpointing(checkpoint)
        if checkpoint is not None and not checkpoint.stores_all:
            z = self._checked(z)
            res = _checkpoint.checkpointed_gradient(
                self.seq, *self.unpack(z), checkpoint=checkpoint
            )
            self.counts["forward"] += 1
            self.counts["adjoint"] += 1
            self.last_checkpoint_stats = res.stats
            return res.J, self.pack(res.grad_x0, res.grad_thetas, res.grad_p)
        start = time.perf_counter()
        traj = self.trajectory(z)
        grad = self._vjp(traj, None, 1.0)
        self.last_checkpoint_stats = _checkpoint.store_all_stats(
            self.seq, traj.xs, time.perf_counter() - start
        )
        return traj.J, grad

    def grad(self, z) -> np.ndarray:
        """``dJ/dz`` alone (see :meth:`value_and_grad`), shape (size,).

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        ndarray, shape (size,)

        Raises
        ------
        SweepError
            If a sweep fails.
        """
        return self.value_and_grad(z)[1]

    def hessp(self, z, v, *, method: str = "auto") -> np.ndarray:
        """Hessian-vector product ``∇²J(z) v``, in SciPy's ``hessp(x, p)`` form.

        ``method='complex'`` differentiates the adjoint sweep in the direction
        ``v`` by complex step (exact to rounding, counted as one ``'hvp'``),
        ``'fd'`` takes central differences of the adjoint gradient (two
        forward and two adjoint sweeps), ``'auto'`` the first where the
        sequence's kernels are complex-safe.  See
        :func:`adjoint.hessian_vector_product`.

        Parameters
        ----------
        z, v : array_like, shape (size,)
            The point and the direction.
        method : {'auto', 'complex', 'fd'}, optional

        Returns
        -------
        ndarray, shape (size,)

        Raises
        ------
        ValueError
            For an unknown ``method`` or a ``z`` or ``v`` of the wrong shape.
        """
        from ._hessian import hessian_vector_product

        return hessian_vector_product(self, z, v, method=method)

    def vjp(self, z, xs_bar, cost_weight: float = 0.0) -> np.ndarray:
        """``(d xs/dz)ᵀ xs_bar + cost_weight · dJ/dz``: one adjoint sweep.

        Parameters
        ----------
        z : array_like, shape (size,)
        xs_bar : ndarray or None
            Cotangents of the states, shaped like the trajectory's ``xs``
            (None for zeros).
        cost_weight : float, optional
            Weight of ``dJ/dz`` in the result (default 0).

        Returns
        -------
        ndarray, shape (size,)

        Raises
        ------
        SweepError
            If a sweep fails.

        Examples
        --------
        The sensitivity of the final state, ``d x_N / dz``:

        >>> from adjoint import ODESequence, ODESystem, Objective
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = ODESequence(ODESystem.from_rhs(decay, n=1, n_p=1), dt=0.1, N=10)
        >>> obj = Objective(seq, x0=[1.0], p=[0.5], wrt=("x0", "p"))
        >>> import numpy as np
        >>> xs_bar = np.zeros((11, 1))
        >>> xs_bar[-1] = 1.0
        >>> obj.vjp(obj.z0, xs_bar).round(4)
        array([ 0.6065, -0.6065])
        """
        traj = self.trajectory(z)
        return self._vjp(traj, xs_bar, cost_weight)

    def _vjp(self, traj, xs_bar, cost_weight):
        grad_x0, grad_thetas, grad_p = self.seq._adjoint_impl(traj, xs_bar, cost_weight)
        self.counts["adjoint"] += 1
        return self.pack(grad_x0, grad_thetas, grad_p)

    def jvp(self, z, v):
        """Tangent sweep in direction ``v``: returns ``(xs_tan, J_tan)``.

        Parameters
        ----------
        z, v : array_like, shape (size,)
            The point and the direction.

        Returns
        -------
        xs_tan : ndarray
            Tangents of every state, shaped like the trajectory's ``xs``.
        J_tan : float
            The directional derivative ``dJ/dz · v``.

        Raises
        ------
        NotImplementedError
            If the sequence has no tangent (JVP) kernels.

        Examples
        --------
        >>> from adjoint import ODESequence, ODESystem, Objective
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = ODESequence(ODESystem.from_rhs(decay, n=1, n_p=1), dt=0.1, N=10)
        >>> obj = Objective(seq, x0=[1.0], p=[0.5], wrt=("x0", "p"))
        >>> xs_tan, J_tan = obj.jvp(obj.z0, [1.0, 0.0])
        >>> xs_tan[-1].round(4), J_tan
        (array([0.6065]), 0.0)
        """
        traj = self.trajectory(z)
        v = _validate.real_array(
            "v", v, (self.size,), what=f"the objective has {self.size} unknowns"
        )
        x0_tan, thetas_tan, p_tan = self._tangent_blocks(v)
        xs_tan, J_tan = self.seq._tangent_impl(traj, x0_tan, thetas_tan, p_tan)
        self.counts["tangent"] += 1
        return xs_tan, J_tan

    def _tangent_blocks(self, v):
        zero = {
            "x0": np.zeros_like(self.x0),
            "theta": self.seq._theta_from_flat(
                np.zeros(self.seq.theta_size()), self.thetas
            ),
            "p": np.zeros_like(self.p),
        }
        i = 0
        for name, size in zip(self.wrt, self._sizes):
            piece = np.ascontiguousarray(v[i : i + size])
            if name == "theta":
                zero[name] = self.seq._theta_from_flat(piece, self.thetas)
            else:
                zero[name] = piece.reshape(np.shape(zero[name]))
            i += size
        return zero["x0"], zero["theta"], zero["p"]

    # ---- Jacobians of states ----

    def jacobian(self, z, steps=None, *, mode: str = "auto") -> np.ndarray:
        """Jacobian of the states at ``steps`` with respect to ``z``.

        Parameters
        ----------
        z : array_like, shape (size,)
        steps : sequence of int, optional
            Which states are the outputs (default: the final state only).  The
            output vector stacks ``x_k`` for ``k`` in ``steps``.
        mode : {'auto', 'forward', 'reverse'}
            Forward mode costs one tangent sweep per unknown, reverse mode one
            adjoint sweep per output; ``'auto'`` picks the fewer sweeps
            (reverse on a tie).

        Returns
        -------
        ndarray, shape (n_outputs, size)

        Raises
        ------
        ValueError
            For an unknown ``mode`` or step.
        SweepError
            If a sweep fails.

        Examples
        --------
        >>> from adjoint import ODESequence, ODESystem, Objective
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = ODESequence(ODESystem.from_rhs(decay, n=1, n_p=1), dt=0.1, N=10)
        >>> obj = Objective(seq, x0=[1.0], p=[0.5], wrt=("x0", "p"))
        >>> obj.jacobian(obj.z0).round(4)
        array([[ 0.6065, -0.6065]])
        """
        _validate.choice("mode", mode, ("auto", "forward", "reverse"))
        traj = self.trajectory(z)
        steps = self.seq._output_steps(steps)
        n_out = self.seq._n_outputs(traj, steps)
        if mode == "auto":
            has_tangent = self.seq._has_tangent()
            # A tangent sweep costs a little more than an adjoint sweep (it
            # evaluates cost gradients at every step), so ties go to reverse.
            mode = "forward" if (self.size < n_out and has_tangent) else "reverse"
        jac = np.empty((n_out, self.size))
        if mode == "forward":
            for j in range(self.size):
                v = np.zeros(self.size)
                v[j] = 1.0
                xs_tan, _ = self.jvp(z, v)
                jac[:, j] = self.seq._states_at(xs_tan, steps)
        else:
            for i in range(n_out):
                w = np.zeros(n_out)
                w[i] = 1.0
                xs_bar = self.seq._states_cotangent(traj, w, steps)
                jac[i, :] = self._vjp(traj, xs_bar, 0.0)
        return jac

    # ---- complex step ----

    def fun_complex(self, z):
        """``J`` and the states on ``complex128`` input, for the complex-step check.

        Parameters
        ----------
        z : array_like, shape (size,)
            Complex unknowns.

        Returns
        -------
        xs : ndarray of complex128
            The states.
        J : complex
            The cost.

        Raises
        ------
        NotImplementedError
            If the sequence's kernels do not run on complex input.
        """
        z = np.asarray(z, dtype=np.complex128)
        x0, thetas, p = self.unpack(z)
        x0 = np.asarray(x0, dtype=np.complex128)
        thetas = (
            np.asarray(thetas, dtype=np.complex128)
            if isinstance(thetas, np.ndarray)
            else [np.asarray(t, dtype=np.complex128) for t in thetas]
        )
        p = np.asarray(p, dtype=np.complex128)
        self.counts["forward"] += 1
        return self.seq._forward_complex_impl(x0, thetas, p)
