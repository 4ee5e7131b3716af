"""A network as a state-transition sequence: a chain of layers of changing width.

:class:`Chain` is the heterogeneous sequence kind.  The state ``x_k`` is a
batch array (B, ...) whose per-sample shape changes from layer to layer,
``θ_k`` is the flat parameter vector of layer ``k`` (empty for layers without
parameters), ``p`` is unused (shape (0,)).  The cost is a loss of the output
against targets plus L2 weight decay as a running cost, so the adjoint sweep
of the chain is backpropagation and :class:`~adjoint.Objective` and the
gradient checks work on networks as on any other sequence.
"""

from __future__ import annotations

import copy

import numpy as np

from . import _validate
from ._errors import SweepError
from ._layers import propagate_shapes, shape_text
from ._losses import as_loss, weight_decay_grad, weight_decay_value
from ._sequence import SequenceBase, Trajectory

__all__ = ["Chain"]


class Chain(SequenceBase):
    """A neural network as a chain of layers, ``x_{k+1} = F_k(x_k, θ_k)``.

    The cost is ``J = Φ(x_N, t) + Σ_k (α/2) ‖W_k‖²``: a loss of the output
    against the targets ``t`` and L2 weight decay with coefficient ``α`` on
    each layer's weights (not its biases).  As a plain Python loop, the
    forward sweep is::

        xs = [x0]; J = 0
        for k, layer in enumerate(layers):
            J += alpha / 2 * sum(decay_mask[k] * thetas[k] ** 2)
            xs.append(layer.forward(xs[k], thetas[k]))
        J += loss(xs[N], targets)

    and the adjoint sweep (backpropagation) runs the layers' VJPs from
    ``λ_N = ∂Φ/∂x_N`` down to ``λ_0``.

    Parameters
    ----------
    layers : sequence of Layer
        The steps, in order.  Shapes are checked once, here: a layer that
        cannot take the previous layer's output raises ``ValueError`` naming
        both layers and shapes.
    input_shape : tuple of int, optional
        Shape of one input sample, e.g. ``(64,)`` or ``(1, 8, 8)``.  Taken
        from the first layer when it is :class:`~adjoint.Dense`.
    loss : {'softmax_cross_entropy', 'mse'}, Loss or None
        Terminal cost (default softmax cross-entropy).  ``None`` means no
        terminal cost.
    targets : array_like, optional
        Labels (B,) for cross-entropy or outputs (B, ...) for MSE.  They fix
        the batch size; :meth:`with_targets` gives a copy with other targets.
    weight_decay : float, optional
        ``α ≥ 0`` (default 0).
    batch_size : int, optional
        Batch size of a chain without targets (needed only to build an
        :class:`~adjoint.Objective` on such a chain).

    Raises
    ------
    ValueError
        If ``layers`` is empty; a layer cannot take the previous layer's
        output; ``input_shape`` is missing and the first layer is not
        :class:`~adjoint.Dense`; the loss does not fit the output shape;
        ``weight_decay`` is negative or not finite; or ``targets`` do not fit
        the loss (or are given with ``loss=None``).
    TypeError
        If an entry of ``layers`` is not a :class:`~adjoint.Layer`, ``loss``
        is neither a name, a Loss nor None, or ``targets`` or ``batch_size``
        have the wrong type.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Chain, Dense, Tanh, Objective, init_params
    >>> net = Chain([Dense(4, 8), Tanh(), Dense(8, 3)])
    >>> X = np.random.default_rng(0).standard_normal((5, 4))
    >>> y = np.array([0, 1, 2, 1, 0])
    >>> obj = Objective(net.with_targets(y), x0=X, thetas=init_params(net),
    ...                 wrt="theta")
    >>> J, grad = obj.value_and_grad(obj.z0)
    >>> grad.shape
    (67,)
    >>> net.theta_shapes, net.layer_names()
    ([(40,), (0,), (27,)], ['Dense(4 → 8)', 'Tanh()', 'Dense(8 → 3)'])
    >>> net.batch_size, net.with_targets(y).x0_shape
    (None, (5, 4))
    >>> net.predict(np.zeros((7, 4)), init_params(net)).shape
    (7, 3)
    >>> Chain([Dense(4, 8), Dense(4, 3)])
    Traceback (most recent call last):
        ...
    ValueError: Layer 1 (Dense(4 → 3)) takes inputs of shape (B, 4), but layer 0 ...

    Notes
    -----
    Memory: every state ``x_k`` and each layer's cache (max-pool winners,
    unrolled convolution patches) is kept until the adjoint sweep,
    ``O(B · Σ_k width_k)``.  Use mini-batches for large data sets.

    The layers run on the CPU in float64, for small networks and images
    (the digits problem, gradient studies, networks inside control
    problems); for large convolutional networks use a GPU framework.
    """

    def __init__(
        self,
        layers,
        *,
        input_shape=None,
        loss="softmax_cross_entropy",
        targets=None,
        weight_decay: float = 0.0,
        batch_size=None,
    ):
        layers = list(layers)
        if not layers:
            raise ValueError("`layers` is empty; a chain needs at least one layer.")
        if input_shape is None:
            n_in = getattr(layers[0], "n_in", None)
            if n_in is None:
                raise ValueError(
                    f"`input_shape` is required: the first layer ({layers[0]!r}) "
                    "does not fix the shape of a sample; pass e.g. "
                    "`input_shape=(1, 8, 8)`."
                )
            input_shape = (n_in,)
        input_shape = tuple(int(s) for s in np.atleast_1d(input_shape))
        self.layers = layers
        self.shapes = propagate_shapes(layers, input_shape)
        self.N = len(layers)
        self.input_shape = self.shapes[0]
        self.output_shape = self.shapes[-1]
        self.p_shape = (0,)

        self.loss = as_loss(loss)
        if self.loss is not None:
            try:
                self.loss.check_output_shape(self.output_shape)
            except ValueError as err:
                raise ValueError(f"`loss`: {err}") from None
        alpha = float(weight_decay)
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(
                f"`weight_decay` must be a finite number >= 0; got {alpha}."
            )
        self.weight_decay = alpha
        self._decay_masks = [layer.decay_mask() for layer in layers]

        self.targets = None
        self._batch_size = (
            None
            if batch_size is None
            else _validate.positive_int("batch_size", batch_size)
        )
        if targets is not None:
            self._set_targets(targets)

    def __repr__(self):
        body = ",\n    ".join(repr(layer) for layer in self.layers)
        return f"Chain([\n    {body},\n], input_shape={self.input_shape})"

    # ---- targets and shapes ----

    def _set_targets(self, targets):
        if self.loss is None:
            raise ValueError(
                "The chain has no loss (`loss=None`), so `targets` have no use; "
                "pass `batch_size=` to fix the batch size instead."
            )
        self.targets = self.loss.validate_targets(targets, self.output_shape)
        if self.targets.shape[0] == 0:
            raise ValueError("`targets` is empty; give at least one sample.")
        self._batch_size = int(self.targets.shape[0])

    def with_targets(self, targets) -> Chain:
        """A copy of the chain (sharing its layers) with other targets.

        Parameters
        ----------
        targets : array_like
            Labels (B,) for cross-entropy or outputs (B, ...) for MSE; they
            fix the copy's batch size.

        Returns
        -------
        Chain
            The copy; the chain itself is unchanged.

        Raises
        ------
        ValueError
            If the chain has no loss, or ``targets`` are empty or do not fit
            the loss and output shape.
        TypeError
            If ``targets`` are not of a type the loss takes.
        """
        new = copy.copy(self)
        new._set_targets(targets)
        return new

    def _with_checked_targets(self, targets) -> Chain:
        # Mini-batches of targets validated once for the whole data set.
        new = copy.copy(self)
        new.targets = targets
        new._batch_size = int(targets.shape[0])
        return new

    @property
    def batch_size(self) -> int | None:
        """Number of samples ``B`` a sweep takes, or None if not fixed.

        Fixed by the targets, or by ``batch_size=`` for a chain without a
        loss.

        Returns
        -------
        int or None
        """
        return self._batch_size

    @property
    def x0_shape(self) -> tuple:
        """Shape ``(B, *input_shape)`` of the input batch ``x_0``.

        Returns
        -------
        tuple of int

        Raises
        ------
        ValueError
            If the batch size is not fixed (no targets and no ``batch_size``).
        """
        if self._batch_size is None:
            raise ValueError(
                "The chain has no fixed batch size; bind targets with "
                "`chain.with_targets(y)` (or pass `batch_size=` for a chain "
                "without a loss)."
            )
        return (self._batch_size, *self.input_shape)

    @property
    def theta_shapes(self) -> list[tuple]:
        """Shape ``(n_params,)`` of each layer's parameter vector ``θ_k``.

        Returns
        -------
        list of tuple
            One per layer; ``(0,)`` for layers without parameters.
        """
        return [(layer.n_params,) for layer in self.layers]

    def flatten(self, thetas) -> np.ndarray:
        """One flat vector from the per-layer parameter vectors.

        Parameters
        ----------
        thetas : sequence of ndarray
            One vector per layer, shapes :attr:`theta_shapes`.

        Returns
        -------
        ndarray, shape (theta_size(),)
            The vectors concatenated in layer order.
        """
        return self._theta_to_flat(list(thetas))

    def unflatten(self, z) -> list[np.ndarray]:
        """Per-layer parameter vectors, views into ``z``; inverse of :meth:`flatten`.

        Parameters
        ----------
        z : array_like, shape (theta_size(),)
            All parameters, in layer order.

        Returns
        -------
        list of ndarray
            One vector per layer, shapes :attr:`theta_shapes`.

        Raises
        ------
        ValueError
            If ``z`` does not hold exactly the chain's number of parameters.
        """
        z = np.asarray(z)
        if z.shape != (self.theta_size(),):
            raise ValueError(
                f"`z` has shape {z.shape}; the chain has {self.theta_size()} "
                f"parameters, so `z` must have shape ({self.theta_size()},)."
            )
        return self._theta_from_flat(z, [np.zeros(s) for s in self.theta_shapes])

    # ---- validation ----

    def _validate_x(self, name, x):
        x = _validate.real_array(name, x)
        if x.ndim != 1 + len(self.input_shape) or x.shape[1:] != self.input_shape:
            raise ValueError(
                f"`{name}` has shape {x.shape}; the chain's first layer "
                f"({self.layers[0]!r}) takes inputs of shape "
                f"{shape_text(self.input_shape)}, one sample per row."
            )
        return x

    def _validate_thetas(self, thetas):
        shapes = self.theta_shapes
        if thetas is None:
            return [np.zeros(s) for s in shapes]
        if (
            isinstance(thetas, np.ndarray)
            and thetas.ndim == 1
            and thetas.dtype != object
        ):
            flat = _validate.real_array(
                "thetas",
                thetas,
                (self.theta_size(),),
                what=f"the chain has {self.theta_size()} parameters in all",
            )
            return self._theta_from_flat(flat, [np.zeros(s) for s in shapes])
        thetas = list(thetas)
        if len(thetas) != self.N:
            raise ValueError(
                f"`thetas` holds {len(thetas)} arrays; the chain has {self.N} "
                "layers, so it must hold one parameter vector per layer (empty "
                "for layers without parameters)."
            )
        return [
            _validate.real_array(
                f"thetas[{k}]",
                np.ravel(t) if np.size(t) == 0 else t,
                shapes[k],
                what=f"layer {k} ({self.layers[k]!r}) has {shapes[k][0]} parameters",
            )
            for k, t in enumerate(thetas)
        ]

    def _validate_inputs(self, x0, thetas, p):
        x0 = self._validate_x("x0", x0)
        if self.loss is not None and self.targets is None:
            raise ValueError(
                f"The chain's loss ({self.loss!r}) needs targets; call "
                "`chain.with_targets(y)` first."
            )
        if self._batch_size is not None and x0.shape[0] != self._batch_size:
            raise ValueError(
                f"`x0` holds {x0.shape[0]} samples but the chain's targets hold "
                f"{self._batch_size}; they must match (use `with_targets`)."
            )
        thetas = self._validate_thetas(thetas)
        p = (
            np.zeros(0)
            if p is None
            else _validate.real_array(
                "p", p, (0,), what="a chain has no shared parameters"
            )
        )
        return x0, thetas, p

    # ---- sweeps ----

    def _run_forward(self, x0, thetas):
        xs, caches = [x0], []
        J = 0.0
        alpha = self.weight_decay
        for k, layer in enumerate(self.layers):
            if alpha:
                J = J + weight_decay_value(alpha, thetas[k], self._decay_masks[k])
            y, cache = layer.forward(xs[k], thetas[k])
            xs.append(y)
            caches.append(cache)
        if self.loss is not None:
            J = J + self.loss.value(xs[-1], self.targets)
        return xs, caches, J

    def _forward_impl(self, x0, thetas, p) -> Trajectory:
        xs, caches, J = self._run_forward(x0, thetas)
        if not np.isfinite(J):
            self._raise_nonfinite(xs, J)
        return Trajectory(x0, thetas, p, xs, float(J), {"caches": caches})

    def _adjoint_impl(self, traj, xs_bar, cost_weight, *, need_x0_bar=True):
        xs, thetas, caches = traj.xs, traj.thetas, traj.extra["caches"]
        N = self.N
        alpha = self.weight_decay * cost_weight

        # λ_N = w ∂Φ/∂x_N + x̄_N
        if self.loss is not None and cost_weight != 0:
            lam = cost_weight * self.loss.grad(xs[N], self.targets)
        else:
            lam = np.zeros_like(xs[N])
        if xs_bar is not None:
            lam = lam + xs_bar[N]

        # Backward sweep, k = N-1 down to 0: λ_k = (∂F_k/∂x)ᵀ λ_{k+1} + x̄_k
        grad_thetas = [None] * N
        for k in range(N - 1, -1, -1):
            need = need_x0_bar or k > 0 or xs_bar is not None
            lam, theta_bar = self.layers[k].vjp(
                xs[k], thetas[k], xs[k + 1], caches[k], lam, need
            )
            if alpha:
                theta_bar += weight_decay_grad(alpha, thetas[k], self._decay_masks[k])
            grad_thetas[k] = theta_bar
            if xs_bar is not None:
                lam = lam + xs_bar[k]
        if lam is None:
            lam = np.zeros_like(xs[0])
        return lam, grad_thetas, np.zeros(0)

    def _tangent_impl(self, traj, x0_tan, thetas_tan, p_tan):
        xs, thetas, caches = traj.xs, traj.thetas, traj.extra["caches"]
        alpha = self.weight_decay
        xs_tan = [np.asarray(x0_tan, dtype=np.float64).reshape(xs[0].shape)]
        J_tan = 0.0

        # Tangent sweep: ẋ_{k+1} = ∂F_k/∂x ẋ_k + ∂F_k/∂θ θ̇_k
        for k, layer in enumerate(self.layers):
            if alpha:
                g = weight_decay_grad(alpha, thetas[k], self._decay_masks[k])
                J_tan += float(g @ thetas_tan[k])
            xs_tan.append(
                layer.jvp(
                    xs[k], thetas[k], xs[k + 1], caches[k], xs_tan[k], thetas_tan[k]
                )
            )
        if self.loss is not None:
            J_tan += float(self.loss.jvp(xs[-1], self.targets, xs_tan[-1]))
        return xs_tan, J_tan

    def _forward_complex_impl(self, x0, thetas, p):
        bad = [
            f"layer {k} ({layer!r})"
            for k, layer in enumerate(self.layers)
            if not layer.complex_analytic
        ]
        if bad:
            raise NotImplementedError(
                f"The chain has layers that are not complex-analytic ("
                f"{', '.join(bad)}), so the complex-step check does not apply; "
                "use central differences (`finite_difference_gradient`)."
            )
        xs, _, J = self._run_forward(x0, thetas)
        return xs, J

    def _raise_nonfinite(self, xs, J):
        for k in range(1, len(xs)):
            if not np.all(np.isfinite(xs[k])):
                raise SweepError(
                    f"The output of layer {k - 1} ({self.layers[k - 1]!r}) is not "
                    "finite; its input was finite. Check the parameters "
                    "(initial scale, learning rate)."
                )
        raise SweepError(
            f"The cost is not finite (J = {J}) though every layer's output is; "
            "check the targets and the weight-decay coefficient."
        )

    # ---- outputs for Jacobians and dot-product tests ----

    def _n_outputs(self, traj, steps) -> int:
        return int(sum(np.size(traj.xs[k]) for k in steps))

    def _states_at(self, xs, steps) -> np.ndarray:
        return np.concatenate([np.ravel(xs[k]) for k in steps])

    def _states_cotangent(self, traj, w, steps):
        xs_bar = [np.zeros_like(x) for x in traj.xs]
        i = 0
        for k in steps:
            size = xs_bar[k].size
            xs_bar[k] += np.reshape(w[i : i + size], xs_bar[k].shape)
            i += size
        return xs_bar

    # ---- evaluation ----

    def predict(self, X, thetas, *, batch_size: int = 4096) -> np.ndarray:
        """The network output for inputs ``X``, in batches to bound memory.

        Runs the layers' forward rules only (no loss, no caches kept), so
        the chain needs no targets.

        Parameters
        ----------
        X : array_like, shape (n, *input_shape)
            Inputs, one sample per row.
        thetas : list of ndarray or ndarray
            Parameters, per layer or flat.
        batch_size : int, optional
            Samples per forward pass (default 4096).

        Returns
        -------
        ndarray, shape (n, *output_shape)

        Raises
        ------
        ValueError
            If ``X`` or ``thetas`` do not fit the chain's shapes or are not
            finite.
        TypeError
            If they cannot be read as real arrays.
        """
        X = self._validate_x("X", X)
        thetas = self._validate_thetas(thetas)
        outs = []
        for start in range(0, X.shape[0], batch_size):
            x = X[start : start + batch_size]
            for layer, th in zip(self.layers, thetas):
                x, _ = layer.forward(x, th)
            outs.append(x)
        if not outs:
            return np.zeros((0, *self.output_shape))
        return np.concatenate(outs)

    def layer_names(self) -> list[str]:
        """A short description of each layer, such as ``'Dense(4 → 8)'``.

        :func:`~adjoint.save_params` stores them beside the parameters.

        Returns
        -------
        list of str
            ``repr`` of each layer, in order.
        """
        return [repr(layer) for layer in self.layers]
