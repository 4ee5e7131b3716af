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
    """Fraction of rows of ``outputs`` (B, n_classes) whose largest entry is at
    the index ``labels`` (B,).  Ties go to the first largest entry."""
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

    The tangent ``Φ'(z) ż`` is ``Σ grad(z, t) * ż`` (:meth:`jvp`).
    """

    name = "loss"

    def check_output_shape(self, out_shape: tuple) -> None:
        """Accept any output shape (override to restrict)."""

    @abstractmethod
    def validate_targets(self, targets, out_shape: tuple) -> np.ndarray: ...

    @abstractmethod
    def value(self, z, t): ...

    @abstractmethod
    def grad(self, z, t): ...

    def jvp(self, z, t, z_dot):
        return np.sum(self.grad(z, t) * z_dot)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Mean softmax cross-entropy of logits against integer class labels.

    ``Φ(z, y) = (1/B) Σ_b [log Σ_j exp(z_bj) − z_{b, y_b}]`` with gradient
    ``(softmax(z) − onehot(y)) / B``.  Computed with the log-sum-exp shift by
    each row's maximum (of the real part, so the complex step passes through
    unharmed): no overflow for logits of any size.

    Targets are integer labels ``0 … n_classes − 1``, shape ``(B,)``.
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
    gradient ``2 (z − t) / (B·m)``.  Targets have the output's shape.
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
