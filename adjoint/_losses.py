"""Costs of a network chain: terminal losses on the output and weight decay.

A :class:`~adjoint.Chain` has the cost ``J = Φ(x_N) + Σ_k g_k(θ_k)``.  The
terminal cost ``Φ`` is a loss of the network output against targets (softmax
cross-entropy for classification, mean squared error for regression); the
running cost ``g_k`` is L2 weight decay on the weights of layer ``k``.  Each
cost comes with its gradient; the tangent of a cost is its gradient dotted
with the tangent of its argument.  All of them are complex-safe: the
cross-entropy shifts by the maximum of the *real* part only, which is exact
because the shift cancels analytically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = [
    "Loss",
    "MeanSquaredError",
    "SoftmaxCrossEntropy",
    "accuracy",
    "as_loss",
    "log_softmax",
    "softmax",
]


def _shape_text(shape) -> str:
    return "(" + ", ".join(["B", *(str(s) for s in shape)]) + ")"


# ---- helpers on logits ----


def log_softmax(z):
    """``log softmax`` along the last axis, stable for large logits.

    The shift by the row maximum is taken from the real part, so the function
    is complex-safe (the shift cancels exactly in the result).
    """
    z = np.asarray(z)
    m = np.max(z.real, axis=-1, keepdims=True)
    shifted = z - m
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def softmax(z):
    """Softmax along the last axis (stable, complex-safe)."""
    z = np.asarray(z)
    m = np.max(z.real, axis=-1, keepdims=True)
    e = np.exp(z - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def accuracy(outputs, labels) -> float:
    """Fraction of samples whose largest output is at their label.

    ``mean_b [argmax_j outputs[b, j] == labels[b]]``, on the real part of
    ``outputs``; ties go to the first largest entry.

    Parameters
    ----------
    outputs : array_like, shape (B, n_classes)
        Network outputs (logits or probabilities), one row per sample.
    labels : array_like, shape (B,)
        Integer class labels.

    Returns
    -------
    float
        In [0, 1]; NaN when there are no samples.

    Raises
    ------
    ValueError
        If ``outputs`` and ``labels`` hold different numbers of samples.

    Examples
    --------
    >>> from adjoint import accuracy
    >>> round(accuracy([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]], [1, 1, 0]), 4)
    0.6667
    """
    outputs = np.asarray(outputs)
    labels = np.asarray(labels)
    if outputs.shape[:1] != labels.shape:
        raise ValueError(
            f"`outputs` has shape {outputs.shape} and `labels` shape "
            f"{labels.shape}; they must hold the same number of samples."
        )
    if labels.size == 0:
        return float("nan")
    return float(np.mean(np.argmax(outputs.real, axis=1) == labels))


# ---- terminal costs ----


class Loss(ABC):
    """A terminal cost ``Φ(z, t)`` of the network output ``z`` (B, ...).

    Subclasses supply:

    - ``check_output_shape(out_shape)``: raise ``ValueError`` (a message
      fragment) when the network output does not fit the loss;
    - ``validate_targets(targets, out_shape) -> ndarray``: the cleaned targets,
      or ``ValueError``/``TypeError`` naming ``targets``;
    - ``value(z, t) -> scalar`` and ``grad(z, t) -> dΦ/dz`` (same shape as
      ``z``), both complex-safe.

    The tangent ``Φ'(z) ż`` is ``Σ grad(z, t) * ż`` (:meth:`jvp`).  The
    methods are documented here once; the losses below follow the same
    contract.  A :class:`~adjoint.Chain` takes an instance as ``loss=``.

    Examples
    --------
    Half the squared error, ``Φ = ½ Σ (z − t)²`` with gradient ``z − t``:

    >>> import numpy as np
    >>> from adjoint import Loss
    >>> class HalfSquaredError(Loss):
    ...     name = "half_squared_error"
    ...     def validate_targets(self, targets, out_shape):
    ...         return np.asarray(targets, dtype=np.float64)
    ...     def value(self, z, t):
    ...         return 0.5 * np.sum((z - t) ** 2)
    ...     def grad(self, z, t):
    ...         return z - t
    >>> loss = HalfSquaredError()
    >>> z, t = np.array([[1.0, -1.0]]), loss.validate_targets([[0.0, 0.0]], (2,))
    >>> float(loss.value(z, t)), loss.grad(z, t).tolist()
    (1.0, [[1.0, -1.0]])
    >>> float(loss.jvp(z, t, np.array([[2.0, 1.0]])))
    1.0
    """

    name = "loss"

    def check_output_shape(self, out_shape: tuple) -> None:
        """Check that a network output of per-sample shape ``out_shape`` fits.

        The default accepts any shape; a subclass overrides it to restrict.

        Parameters
        ----------
        out_shape : tuple of int
            Shape of one output sample, without the batch axis.

        Raises
        ------
        ValueError
            If the loss cannot take that output; the message is a fragment
            the chain prefixes with ``loss``.
        """

    @abstractmethod
    def validate_targets(self, targets, out_shape: tuple) -> np.ndarray:
        """The targets, checked and converted, for outputs of shape ``out_shape``.

        Parameters
        ----------
        targets : array_like
            One target per sample (integer labels ``(B,)``, or arrays of the
            output's shape ``(B, ...)``, as the loss takes).
        out_shape : tuple of int
            Shape of one output sample.

        Returns
        -------
        ndarray
            The targets as :meth:`value` and :meth:`grad` take them.

        Raises
        ------
        TypeError
            If ``targets`` cannot be read as an array of the right kind.
        ValueError
            If their shape or values do not fit the output; the message names
            ``targets``.
        """

    @abstractmethod
    def value(self, z, t):
        """The cost ``Φ(z, t)``.

        Parameters
        ----------
        z : ndarray, shape (B, ...)
            The network output (``float64``, or ``complex128`` for the complex
            step: the computation must stay complex-safe).
        t : ndarray
            Targets as returned by :meth:`validate_targets`.

        Returns
        -------
        scalar
            A float, or a complex number for complex ``z``.
        """

    @abstractmethod
    def grad(self, z, t):
        """The gradient ``∂Φ/∂z``, the starting adjoint ``λ_N`` of a chain.

        Parameters
        ----------
        z, t
            As for :meth:`value`.

        Returns
        -------
        ndarray, shape (B, ...)
            Same shape as ``z``; a new array the caller may modify.
        """

    def jvp(self, z, t, z_dot):
        """The tangent ``Φ'(z) ż = Σ grad(z, t) · ż`` of the cost.

        Parameters
        ----------
        z, t
            As for :meth:`value`.
        z_dot : ndarray, shape (B, ...)
            Tangent of the output, same shape as ``z``.

        Returns
        -------
        scalar
        """
        return np.sum(self.grad(z, t) * z_dot)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Mean softmax cross-entropy of logits against integer class labels.

    ``Φ(z, y) = (1/B) Σ_b [log Σ_j exp(z_bj) − z_{b, y_b}]`` with gradient
    ``(softmax(z) − onehot(y)) / B``.  Computed with the log-sum-exp shift by
    each row's maximum (of the real part, so the complex step passes through
    unharmed): no overflow for logits of any size.

    Targets are integer labels ``0 … n_classes − 1``, shape ``(B,)``;
    :meth:`validate_targets` raises ``TypeError`` for non-integer dtypes and
    ``ValueError`` for labels out of range or of another shape, and
    :meth:`check_output_shape` raises ``ValueError`` unless the network
    outputs ``(B, n_classes)`` with ``n_classes >= 2``.  A chain takes it as
    ``loss='softmax_cross_entropy'`` (the default).

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import SoftmaxCrossEntropy
    >>> loss = SoftmaxCrossEntropy()
    >>> z = np.array([[2.0, 0.0], [0.0, 0.0]])
    >>> t = loss.validate_targets([0, 1], (2,))
    >>> round(float(loss.value(z, t)), 4), loss.grad(z, t).round(4).tolist()
    (0.41, [[-0.0596, 0.0596], [0.25, -0.25]])
    >>> loss.validate_targets([0, 2], (2,))
    Traceback (most recent call last):
        ...
    ValueError: `targets[1]` is 2; the network has 2 outputs, so labels ...
    """

    name = "softmax_cross_entropy"

    def check_output_shape(self, out_shape):
        if len(out_shape) != 1 or out_shape[0] < 2:
            raise ValueError(
                f"softmax cross-entropy needs logits of shape (B, n_classes) with "
                f"n_classes >= 2, but the network outputs shape "
                f"{_shape_text(out_shape)}; end the chain with a Dense layer."
            )

    def validate_targets(self, targets, out_shape):
        try:
            t = np.asarray(targets)
        except Exception as err:
            raise TypeError(f"`targets` could not be read as an array: {err}") from err
        if t.ndim != 1:
            raise ValueError(
                f"`targets` has shape {t.shape}; softmax cross-entropy takes one "
                "integer class label per sample, shape (B,)."
            )
        if t.dtype.kind in "f":
            if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
                raise ValueError(
                    "`targets` holds values that are not whole numbers; softmax "
                    "cross-entropy takes integer class labels."
                )
        elif t.dtype.kind not in "iu":
            raise TypeError(
                f"`targets` must hold integer class labels; got dtype {t.dtype}."
            )
        t = t.astype(np.intp)
        n_classes = out_shape[0]
        bad = (t < 0) | (t >= n_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"`targets[{i}]` is {t[i]}; the network has {n_classes} outputs, "
                f"so labels must lie in 0 … {n_classes - 1}."
            )
        return t

    def value(self, z, t):
        B = z.shape[0]
        lsm = log_softmax(z)
        return -np.sum(lsm[np.arange(B), t]) / B

    def grad(self, z, t):
        B = z.shape[0]
        g = softmax(z)
        g[np.arange(B), t] -= 1.0
        g /= B
        return g


class MeanSquaredError(Loss):
    """Mean squared error over every entry of the output.

    ``Φ(z, t) = (1 / (B·m)) Σ (z − t)²`` with ``m`` the entries per sample;
    gradient ``2 (z − t) / (B·m)``.  Targets have the output's shape,
    ``(B, ...)``; :meth:`validate_targets` raises ``TypeError`` for
    non-numeric targets and ``ValueError`` for another shape or a non-finite
    value.  A chain takes it as ``loss='mse'``.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import MeanSquaredError
    >>> loss = MeanSquaredError()
    >>> z = np.array([[1.0, 2.0]])
    >>> t = loss.validate_targets([[0.0, 2.0]], (2,))
    >>> float(loss.value(z, t)), loss.grad(z, t).tolist()
    (0.5, [[1.0, 0.0]])
    """

    name = "mse"

    def validate_targets(self, targets, out_shape):
        try:
            t = np.asarray(targets)
        except Exception as err:
            raise TypeError(f"`targets` could not be read as an array: {err}") from err
        if t.dtype.kind not in "iuf":
            raise TypeError(f"`targets` must hold real numbers; got dtype {t.dtype}.")
        t = np.ascontiguousarray(t, dtype=np.float64)
        if t.ndim != 1 + len(out_shape) or t.shape[1:] != tuple(out_shape):
            raise ValueError(
                f"`targets` has shape {t.shape}; the network outputs shape "
                f"{_shape_text(out_shape)}, so `targets` must have that shape."
            )
        if not np.all(np.isfinite(t)):
            raise ValueError("`targets` contains a non-finite value.")
        return t

    def value(self, z, t):
        d = z - t
        return np.sum(d * d) / d.size

    def grad(self, z, t):
        return (2.0 / z.size) * (z - t)


_LOSSES = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "cross_entropy": SoftmaxCrossEntropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def as_loss(loss) -> Loss | None:
    """A :class:`Loss` from a name (``'softmax_cross_entropy'``, ``'mse'``), a
    Loss instance, or ``None`` (no terminal cost)."""
    if loss is None or isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        key = loss.strip().lower().replace("-", "_")
        if key in _LOSSES:
            return _LOSSES[key]()
        raise ValueError(
            f"`loss` must be one of {', '.join(repr(k) for k in _LOSSES)}, a Loss "
            f"instance or None; got {loss!r}."
        )
    raise TypeError(
        f"`loss` must be a name, a Loss instance or None; got {type(loss).__name__}."
    )


# ---- running cost ----


def weight_decay_value(alpha, theta, mask):
    """``(α/2) Σ mask · θ²``: L2 weight decay on the entries ``mask`` selects."""
    return 0.5 * alpha * np.sum(mask * theta * theta)


def weight_decay_grad(alpha, theta, mask):
    """Gradient of :func:`weight_decay_value`: ``α · mask · θ``."""
    return alpha * (mask * theta)
