"""Network layers as steps of a chain, each with forward, VJP and JVP rules.

A layer is one step ``x_{k+1} = F_k(x_k, θ_k)`` of a :class:`~adjoint.Chain`:
it maps a batch ``x`` (B, ...) and its own flat parameter vector ``θ`` to a
batch ``y``.  Each layer keeps its three rules side by side: ``forward``,
``vjp`` (``x̄ = (∂F/∂x)ᵀ ȳ``, ``θ̄ = (∂F/∂θ)ᵀ ȳ``) and ``jvp``
(``ẏ = ∂F/∂x ẋ + ∂F/∂θ θ̇``).

Dense layers and activations are vectorised NumPy (matrix products go to
BLAS); convolution and max-pooling call the Numba loops of
:mod:`adjoint._layers_kernels`.  Layers marked ``complex_analytic`` run
unchanged on ``complex128`` for the complex-step check.

Non-differentiable points follow stated rules (see each class): ReLU, leaky
ReLU and ``|x|`` take a selectable subgradient at 0 (by default the one of
smallest magnitude: 0, the leak slope and 0, as PyTorch and JAX do), and
max-pooling routes a window's whole cotangent to one winner, the first
maximum in row-major order.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from . import _layers_kernels as lk

__all__ = [
    "Abs",
    "Conv2D",
    "Dense",
    "Flatten",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "ReLU",
    "Residual",
    "Sigmoid",
    "Softplus",
    "Tanh",
]

INIT_SCHEMES = (
    "glorot",
    "glorot_normal",
    "he",
    "he_uniform",
    "lecun",
    "standard",
    "zeros",
)


class ShapeError(ValueError):
    """A layer cannot take inputs of a given shape.

    ``expects`` describes the shape the layer takes (``"(B, 64)"``); the chain
    adds which layer this is and where the wrong shape came from.
    """

    def __init__(self, expects: str, detail: str = "", hint: str = ""):
        super().__init__(detail or f"expects inputs of shape {expects}")
        self.expects = expects
        self.detail = detail
        self.hint = hint


def shape_text(shape) -> str:
    """``(B, 1, 8, 8)`` for the per-sample shape ``(1, 8, 8)``."""
    return "(" + ", ".join(["B", *(str(int(s)) for s in shape)]) + ")"


def _common_dtype(*arrays):
    return np.result_type(*arrays, np.float64)


def _empty_theta(dtype=np.float64):
    return np.zeros(0, dtype=dtype)


class Layer(ABC):
    """One step of a network chain.

    A subclass supplies:

    - ``n_params``: the size of its flat parameter vector ``θ`` (0 for layers
      without parameters, which receive an empty array);
    - ``out_shape(in_shape) -> tuple``: the per-sample output shape, or
      :class:`ShapeError` for an input shape it cannot take;
    - ``forward(x, theta) -> (y, cache)``: ``y`` for the batch ``x`` and
      whatever the two derivative rules need besides ``x`` and ``y``;
    - ``vjp(x, theta, y, cache, y_bar, need_x_bar=True) -> (x_bar, theta_bar)``:
      the cotangents (``x_bar`` may be ``None`` when ``need_x_bar`` is False);
    - ``jvp(x, theta, y, cache, x_dot, theta_dot) -> y_dot``;
    - optionally ``init(rng, scheme) -> θ`` (default zeros) and
      ``decay_mask() -> ndarray`` (1 on the weights that L2 weight decay acts
      on, 0 elsewhere; default none);
    - ``complex_analytic``: True when ``forward`` is complex-analytic and runs
      on ``complex128`` (the complex-step check needs every layer of a chain
      to be).

    The rules receive arrays already checked by the chain and do no
    validation.  They must not modify their inputs.  The methods are
    documented here once; the layers below follow the same contract.

    Examples
    --------
    A layer ``y = θ x`` with one scalar parameter, usable in a
    :class:`~adjoint.Chain` like the built-in layers:

    >>> import numpy as np
    >>> from adjoint import Layer
    >>> class Scale(Layer):
    ...     n_params = 1
    ...     def forward(self, x, theta):
    ...         return theta[0] * x, None
    ...     def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
    ...         x_bar = theta[0] * y_bar if need_x_bar else None
    ...         return x_bar, np.array([np.sum(x * y_bar)])
    ...     def jvp(self, x, theta, y, cache, x_dot, theta_dot):
    ...         return theta[0] * x_dot + theta_dot[0] * x
    >>> layer, x, theta = Scale(), np.array([[1.0, 2.0]]), np.array([3.0])
    >>> y, cache = layer.forward(x, theta)
    >>> x_bar, theta_bar = layer.vjp(x, theta, y, cache, np.ones_like(y))
    >>> y.tolist(), x_bar.tolist(), theta_bar.tolist()
    ([[3.0, 6.0]], [[3.0, 3.0]], [3.0])
    >>> layer.out_shape((2,)), layer.decay_mask().tolist()
    ((2,), [0.0])
    """

    n_params: int = 0
    complex_analytic: bool = True

    def out_shape(self, in_shape: tuple) -> tuple:
        """The per-sample output shape for inputs of per-sample shape ``in_shape``.

        A chain calls it once per layer when it is built, to check that
        consecutive layers fit.  The default keeps the shape (activations).

        Parameters
        ----------
        in_shape : tuple of int
            Shape of one input sample, without the batch axis: ``(64,)`` or
            ``(1, 8, 8)``.

        Returns
        -------
        tuple of int
            Shape of one output sample.

        Raises
        ------
        ValueError
            A ``ShapeError``, when the layer cannot take inputs of that shape;
            the chain turns it into a message naming the layer and where the
            shape came from.
        """
        return tuple(in_shape)

    @abstractmethod
    def forward(self, x, theta):
        """The output ``y = F(x, θ)`` of the batch ``x``, and a cache for the rules.

        Parameters
        ----------
        x : ndarray, shape (B, ...)
            The batch, one sample per row, of a per-sample shape the layer
            takes (``float64``, or ``complex128`` for the complex-step check).
        theta : ndarray, shape (n_params,)
            The layer's flat parameters (empty for a layer without any).

        Returns
        -------
        y : ndarray, shape (B, ...)
            The output; per-sample shape ``out_shape(x.shape[1:])``.
        cache : object
            What :meth:`vjp` and :meth:`jvp` need besides ``x`` and ``y``
            (None for most layers).
        """

    @abstractmethod
    def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
        """One backward step: ``x̄ = (∂F/∂x)ᵀ ȳ`` and
        ``θ̄ = (∂F/∂θ)ᵀ ȳ``.

        Parameters
        ----------
        x, theta : ndarray
            The arguments of the :meth:`forward` call.
        y, cache : ndarray and object
            What that call returned.
        y_bar : ndarray, shape (B, ...)
            The cotangent of the output (the adjoint ``λ_{k+1}``), shape of
            ``y``.
        need_x_bar : bool, optional
            False when the caller needs no ``x̄`` (the first layer of a
            training step); the layer may then skip it.

        Returns
        -------
        x_bar : ndarray, shape (B, ...), or None
            Shape of ``x``; None is allowed only when ``need_x_bar`` is False.
        theta_bar : ndarray, shape (n_params,)
        """

    @abstractmethod
    def jvp(self, x, theta, y, cache, x_dot, theta_dot):
        """One tangent step: ``ẏ = ∂F/∂x ẋ + ∂F/∂θ θ̇``.

        Parameters
        ----------
        x, theta, y, cache
            As for :meth:`vjp`.
        x_dot : ndarray, shape (B, ...)
            Tangent of the input, shape of ``x``.
        theta_dot : ndarray, shape (n_params,)
            Tangent of the parameters.

        Returns
        -------
        ndarray, shape (B, ...)
            The tangent ``ẏ`` of the output, shape of ``y``.
        """

    def init(self, rng: np.random.Generator, scheme: str = "glorot") -> np.ndarray:
        """Initial parameters: weights drawn by ``scheme``, biases zero.

        Parameters
        ----------
        rng : numpy.random.Generator
        scheme : str, optional
            One of ``'glorot'`` (default), ``'glorot_normal'``, ``'he'``,
            ``'he_uniform'``, ``'lecun'``, ``'standard'``, ``'zeros'``; see
            :func:`~adjoint.init_params`.

        Returns
        -------
        ndarray, shape (n_params,)
            Zeros for a layer without weights (the default).

        Raises
        ------
        ValueError
            For an unknown ``scheme`` (layers with weights).
        """
        return np.zeros(self.n_params)

    def decay_mask(self) -> np.ndarray:
        """Where L2 weight decay acts: 1 on the weights, 0 elsewhere.

        Returns
        -------
        ndarray, shape (n_params,)
            Zeros for a layer without weights (the default); biases are never
            decayed.
        """
        return np.zeros(self.n_params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _init_weights(rng, scheme, shape, fan_in, fan_out, scale):
    """Random weights of ``shape`` by ``scheme`` times ``scale``."""
    if scheme == "glorot":  # Glorot & Bengio (2010), uniform
        a = math.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-a, a, size=shape)
    elif scheme == "glorot_normal":
        w = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
    elif scheme == "he":  # He et al. (2015), normal
        w = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    elif scheme == "he_uniform":
        a = math.sqrt(6.0 / fan_in)
        w = rng.uniform(-a, a, size=shape)
    elif scheme == "lecun":
        w = rng.normal(0.0, math.sqrt(1.0 / fan_in), size=shape)
    elif scheme == "standard":  # Glorot & Bengio's "standard"; PyTorch's default
        a = 1.0 / math.sqrt(fan_in)
        w = rng.uniform(-a, a, size=shape)
    elif scheme == "zeros":
        w = np.zeros(shape)
    else:
        raise ValueError(
            f"`scheme` must be one of {', '.join(repr(s) for s in INIT_SCHEMES)}; "
            f"got {scheme!r}."
        )
    return scale * w


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be a positive integer, got {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1, got {value}.")
    return int(value)


# ---- affine ----


class Dense(Layer):
    """Affine layer ``y = x Wᵀ + b`` on a batch of vectors.

    ``x`` has shape (B, n_in), ``W`` (n_out, n_in), ``b`` (n_out,), and the
    flat parameter vector is ``θ = [W.ravel(), b]`` (see :meth:`unpack`).
    Rules: ``x̄ = ȳ W``, ``W̄ = ȳᵀ x``, ``b̄ = Σ_b ȳ``;
    ``ẏ = ẋ Wᵀ + x Ẇᵀ + ḃ``.
    Weight decay acts on ``W`` only.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths.
    init_scale : float, optional
        Factor on the initial weights (for instance ``1/√depth`` on the last
        layer of a residual branch); default 1.

    Raises
    ------
    TypeError
        If ``n_in`` or ``n_out`` is not an integer.
    ValueError
        If ``n_in`` or ``n_out`` is below 1.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Dense
    >>> layer = Dense(3, 2)
    >>> theta = np.arange(8.0)  # W = [[0, 1, 2], [3, 4, 5]], b = [6, 7]
    >>> x = np.array([[1.0, 0.0, -1.0]])
    >>> y, cache = layer.forward(x, theta)
    >>> y.tolist()
    [[4.0, 5.0]]
    >>> x_bar, theta_bar = layer.vjp(x, theta, y, cache, np.ones((1, 2)))
    >>> x_bar.tolist(), theta_bar.tolist()
    ([[3.0, 5.0, 7.0]], [1.0, 0.0, -1.0, 1.0, 0.0, -1.0, 1.0, 1.0])
    >>> layer.out_shape((3,)), layer.decay_mask().tolist()
    ((2,), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    """

    def __init__(self, n_in: int, n_out: int, *, init_scale: float = 1.0):
        self.n_in = _positive_int("n_in", n_in)
        self.n_out = _positive_int("n_out", n_out)
        self.init_scale = float(init_scale)
        self.n_weights = self.n_in * self.n_out
        self.n_params = self.n_weights + self.n_out

    def __repr__(self):
        return f"Dense({self.n_in} → {self.n_out})"

    def out_shape(self, in_shape):
        if tuple(in_shape) != (self.n_in,):
            hint = "insert Flatten() before it" if len(in_shape) > 1 else ""
            raise ShapeError(shape_text((self.n_in,)), hint=hint)
        return (self.n_out,)

    def unpack(self, theta):
        """Views ``(W, b)`` into the flat parameters ``θ = [W.ravel(), b]``.

        Parameters
        ----------
        theta : ndarray, shape (n_params,)

        Returns
        -------
        W : ndarray, shape (n_out, n_in)
        b : ndarray, shape (n_out,)
            Views: writing to them writes to ``theta``.
        """
        return (
            theta[: self.n_weights].reshape(self.n_out, self.n_in),
            theta[self.n_weights :],
        )

    def forward(self, x, theta):
        W, b = self.unpack(theta)
        y = x @ W.T
        y += b
        return y, None

    def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
        W, _ = self.unpack(theta)
        theta_bar = np.empty(self.n_params, dtype=_common_dtype(x, theta, y_bar))
        W_bar, b_bar = self.unpack(theta_bar)
        np.matmul(y_bar.T, x, out=W_bar)
        np.sum(y_bar, axis=0, out=b_bar)
        x_bar = y_bar @ W if need_x_bar else None
        return x_bar, theta_bar

    def jvp(self, x, theta, y, cache, x_dot, theta_dot):
        W, _ = self.unpack(theta)
        W_dot, b_dot = self.unpack(theta_dot)
        y_dot = x_dot @ W.T
        y_dot += x @ W_dot.T
        y_dot += b_dot
        return y_dot

    def init(self, rng, scheme="glorot"):
        theta = np.zeros(self.n_params)
        theta[: self.n_weights] = _init_weights(
            rng, scheme, self.n_weights, self.n_in, self.n_out, self.init_scale
        )
        return theta

    def decay_mask(self):
        mask = np.zeros(self.n_params)
        mask[: self.n_weights] = 1.0
        return mask


# ---- activations ----


class _Elementwise(Layer):
    """``y = φ(x)`` entry by entry; subclasses give ``φ`` and ``φ'``."""

    @abstractmethod
    def _phi(self, x): ...

    @abstractmethod
    def _dphi(self, x, y): ...

    def forward(self, x, theta):
        return self._phi(x), None

    def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
        return self._dphi(x, y) * y_bar, _empty_theta(y_bar.dtype)

    def jvp(self, x, theta, y, cache, x_dot, theta_dot):
        return self._dphi(x, y) * x_dot


class Tanh(_Elementwise):
    """``y = tanh x``, ``φ' = 1 − y²``.  Complex-analytic.

    No parameters (``n_params = 0``: ``θ`` is an empty array).

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Tanh
    >>> layer, x = Tanh(), np.array([[-1.0, 0.0, 2.0]])
    >>> y, cache = layer.forward(x, np.zeros(0))
    >>> x_bar, theta_bar = layer.vjp(x, np.zeros(0), y, cache, np.ones_like(x))
    >>> y.round(4).tolist(), x_bar.round(4).tolist()
    ([[-0.7616, 0.0, 0.964]], [[0.42, 1.0, 0.0707]])
    """

    def _phi(self, x):
        return np.tanh(x)

    def _dphi(self, x, y):
        d = y * y
        np.subtract(1.0, d, out=d)
        return d


def _sigmoid(x):
    """``1 / (1 + e^{−x})`` as ``e^{x} / (1 + e^{x})`` where ``Re x < 0``: no
    overflow, full relative accuracy in both tails, complex-analytic."""
    e = np.exp(np.where(x.real > 0, -x, x))
    return np.where(x.real > 0, 1.0, e) / (1.0 + e)


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + e^{−x})``, ``φ' = y (1 − y)``.

    Each tail is evaluated in the form that cannot overflow (the branch is
    chosen by the real part of ``x``), so it is complex-analytic.  No
    parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Sigmoid
    >>> layer, x = Sigmoid(), np.array([[-1.0, 0.0, 2.0]])
    >>> y, cache = layer.forward(x, np.zeros(0))
    >>> x_bar, theta_bar = layer.vjp(x, np.zeros(0), y, cache, np.ones_like(x))
    >>> y.round(4).tolist(), x_bar.round(4).tolist()
    ([[0.2689, 0.5, 0.8808]], [[0.1966, 0.25, 0.105]])
    """

    def _phi(self, x):
        return _sigmoid(x)

    def _dphi(self, x, y):
        return y * (1.0 - y)


class Softplus(_Elementwise):
    """``y = log(1 + eˣ)``, ``φ' = sigmoid(x)``.

    Evaluated as ``log1p(e^{−|x|}) + max(x, 0)``, with the branch chosen by the
    real part of ``x``: no overflow, full relative accuracy for very negative
    ``x``, and complex-analytic (each branch is analytic).  No parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Softplus
    >>> layer, x = Softplus(), np.array([[-1.0, 0.0, 2.0]])
    >>> y, cache = layer.forward(x, np.zeros(0))
    >>> x_bar, theta_bar = layer.vjp(x, np.zeros(0), y, cache, np.ones_like(x))
    >>> y.round(4).tolist(), x_bar.round(4).tolist()
    ([[0.3133, 0.6931, 2.1269]], [[0.2689, 0.5, 0.8808]])
    """

    def _phi(self, x):
        pos = x.real > 0
        y = np.log1p(np.exp(np.where(pos, -x, x)))
        y += np.where(pos, x, 0.0)
        return y

    def _dphi(self, x, y):
        return _sigmoid(x)


def _subgradient(name, value, lo, hi):
    value = float(value)
    if not lo <= value <= hi:
        raise ValueError(
            f"`at_zero` of {name} must be a subgradient at 0, a number in "
            f"[{lo}, {hi}]; got {value}."
        )
    return value


class ReLU(_Elementwise):
    """``y = max(x, 0)``; derivative 1 for x > 0, 0 for x < 0, ``at_zero`` at 0.

    Parameters
    ----------
    at_zero : float in [0, 1], optional
        The subgradient used at exactly ``x = 0`` (default 0, as PyTorch and
        JAX).  The VJP and JVP use the same value, so they stay transposes.

    Raises
    ------
    ValueError
        If ``at_zero`` lies outside [0, 1].

    Notes
    -----
    Not complex-analytic: check gradients through it by central differences
    (:func:`~adjoint.finite_difference_gradient`).

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import ReLU
    >>> layer, x = ReLU(at_zero=0.5), np.array([[-1.0, 0.0, 2.0]])
    >>> y, cache = layer.forward(x, np.zeros(0))
    >>> x_bar, theta_bar = layer.vjp(x, np.zeros(0), y, cache, np.ones_like(x))
    >>> y.round(4).tolist(), x_bar.round(4).tolist()
    ([[0.0, 0.0, 2.0]], [[0.0, 0.5, 1.0]])
    """

    complex_analytic = False

    def __init__(self, at_zero: float = 0.0):
        self.at_zero = _subgradient("ReLU", at_zero, 0.0, 1.0)

    def __repr__(self):
        return "ReLU()" if self.at_zero == 0.0 else f"ReLU(at_zero={self.at_zero})"

    def _phi(self, x):
        return np.maximum(x, 0.0)

    def _dphi(self, x, y):
        d = (x > 0).astype(np.float64)
        if self.at_zero != 0.0:
            d[x == 0] = self.at_zero
        return d


class LeakyReLU(_Elementwise):
    """``y = x`` for x > 0 and ``slope · x`` otherwise.

    Parameters
    ----------
    slope : float in [0, 1), optional
        Slope of the negative side (default 0.01).
    at_zero : float, optional
        Subgradient at exactly ``x = 0``, between ``slope`` and 1 (default
        ``slope``, the left derivative, as PyTorch).

    Raises
    ------
    ValueError
        If ``slope`` lies outside [0, 1) or ``at_zero`` outside [slope, 1].

    Notes
    -----
    Not complex-analytic: check gradients through it by central differences
    (:func:`~adjoint.finite_difference_gradient`).

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import LeakyReLU
    >>> layer, x = LeakyReLU(slope=0.1), np.array([[-1.0, 0.0, 2.0]])
    >>> y, cache = layer.forward(x, np.zeros(0))
    >>> x_bar, theta_bar = layer.vjp(x, np.zeros(0), y, cache, np.ones_like(x))
    >>> y.round(4).tolist(), x_bar.round(4).tolist()
    ([[-0.1, 0.0, 2.0]], [[0.1, 0.1, 1.0]])
    """

    complex_analytic = False

    def __init__(self, slope: float = 0.01, at_zero: float | None = None):
        self.slope = float(slope)
        if not 0.0 <= self.slope < 1.0:
            raise ValueError(f"`slope` must lie in [0, 1); got {self.slope}.")
        self.at_zero = (
            self.slope
            if at_zero is None
            else _subgradient("LeakyReLU", at_zero, self.slope, 1.0)
        )

    def __repr__(self):
        return f"LeakyReLU(slope={self.slope})"

    def _phi(self, x):
        return np.where(x > 0, x, self.slope * x)

    def _dphi(self, x, y):
        d = np.where(x > 0, 1.0, self.slope)
        if self.at_zero != self.slope:
            d[x == 0] = self.at_zero
        return d


class Abs(_Elementwise):
    """``y = |x|``; derivative ``sign x`` away from 0 and ``at_zero`` at 0.

    Parameters
    ----------
    at_zero : float in [-1, 1], optional
        Subgradient at exactly ``x = 0`` (default 0, as ``np.sign`` and JAX).

    Raises
    ------
    ValueError
        If ``at_zero`` lies outside [-1, 1].

    Notes
    -----
    Not complex-analytic: check gradients through it by central differences
    (:func:`~adjoint.finite_difference_gradient`).

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Abs
    >>> layer, x = Abs(), np.array([[-1.0, 0.0, 2.0]])
    >>> y, cache = layer.forward(x, np.zeros(0))
    >>> x_bar, theta_bar = layer.vjp(x, np.zeros(0), y, cache, np.ones_like(x))
    >>> y.round(4).tolist(), x_bar.round(4).tolist()
    ([[1.0, 0.0, 2.0]], [[-1.0, 0.0, 1.0]])
    """

    complex_analytic = False

    def __init__(self, at_zero: float = 0.0):
        self.at_zero = _subgradient("Abs", at_zero, -1.0, 1.0)

    def __repr__(self):
        return "Abs()" if self.at_zero == 0.0 else f"Abs(at_zero={self.at_zero})"

    def _phi(self, x):
        return np.abs(x)

    def _dphi(self, x, y):
        d = np.sign(x)
        if self.at_zero != 0.0:
            d[x == 0] = self.at_zero
        return d


# ---- shape changes ----


class Flatten(Layer):
    """Reshape each sample to a vector: (B, C, H, W) → (B, C·H·W).

    No parameters.  The rules reshape back: ``x̄ = ȳ`` in the shape of ``x``,
    ``ẏ = ẋ`` in the shape of ``y``.  Put it between the convolution part of
    a network and its :class:`~adjoint.Dense` layers.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Flatten
    >>> x = np.arange(8.0).reshape(2, 1, 2, 2)
    >>> y, cache = Flatten().forward(x, np.zeros(0))
    >>> y.shape, Flatten().out_shape((1, 8, 8))
    ((2, 4), (64,))
    """

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, x, theta):
        return x.reshape(x.shape[0], -1), None

    def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
        return y_bar.reshape(x.shape), _empty_theta(y_bar.dtype)

    def jvp(self, x, theta, y, cache, x_dot, theta_dot):
        return x_dot.reshape(y.shape)


# ---- convolution and pooling ----


class Conv2D(Layer):
    """2-D convolution (cross-correlation), stride 1, on images (B, C, H, W).

    ``y[b, o, i, j] = bias[o] + Σ_{c,p,q} W[o, c, p, q] x̃[b, c, i+p, j+q]``
    where ``x̃`` is ``x`` zero-padded for ``padding='same'`` (output H × W;
    ``(k−1)//2`` rows above and the rest below, likewise for columns) or
    ``x`` itself for ``'valid'`` (output (H−kh+1) × (W−kw+1)).  The flat
    parameters are ``θ = [W.ravel(), bias]``, W of shape (C_out, C_in, kh, kw).
    Complex-analytic.

    The patches of the input are unrolled by a compiled loop and multiplied
    by the weights with BLAS; the forward cache keeps them (memory
    ``B·Ho·Wo·C_in·kh·kw`` numbers), so the VJP needs no second unrolling.
    Meant for small kernels and images (digits, not ImageNet).

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.
    kernel_size : int or (int, int)
        ``kh`` and ``kw``; one int for a square kernel (default 3).
    padding : {'valid', 'same'}
        ``'valid'`` (default): no padding, the image shrinks by ``k − 1``;
        ``'same'``: zero padding that keeps H × W.
    init_scale : float, optional
        Factor on the initial weights (default 1).

    Raises
    ------
    TypeError
        If ``c_in``, ``c_out`` or a kernel size is not an integer.
    ValueError
        If one of them is below 1, or ``padding`` is neither ``'valid'`` nor
        ``'same'``.

    Examples
    --------
    A kernel that is 1 at its centre copies the image under ``'same'``
    padding:

    >>> import numpy as np
    >>> from adjoint import Conv2D
    >>> layer = Conv2D(1, 2, 3, padding="same")
    >>> layer.n_params, layer.out_shape((1, 8, 8)), Conv2D(1, 2, 3).out_shape((1, 8, 8))
    (20, (2, 8, 8), (2, 6, 6))
    >>> W, bias = layer.unpack(np.zeros(layer.n_params))
    >>> W[0, 0, 1, 1] = 1.0
    >>> theta = np.concatenate([W.ravel(), bias])
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> y, cache = layer.forward(x, theta)
    >>> y.shape, bool(np.array_equal(y[0, 0], x[0, 0]))
    ((1, 2, 4, 4), True)
    >>> x_bar, theta_bar = layer.vjp(x, theta, y, cache, np.ones_like(y))
    >>> x_bar.shape, theta_bar.shape
    ((1, 1, 4, 4), (20,))
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size=3,
        *,
        padding: str = "valid",
        init_scale: float = 1.0,
    ):
        self.c_in = _positive_int("c_in", c_in)
        self.c_out = _positive_int("c_out", c_out)
        ks = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        self.kh, self.kw = (_positive_int("kernel_size", k) for k in ks)
        if padding not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same'; got {padding!r}.")
        self.padding = padding
        self.init_scale = float(init_scale)
        self.w_shape = (self.c_out, self.c_in, self.kh, self.kw)
        self.n_weights = int(np.prod(self.w_shape))
        self.n_params = self.n_weights + self.c_out
        if padding == "same":
            top, left = (self.kh - 1) // 2, (self.kw - 1) // 2
            self._pad = ((top, self.kh - 1 - top), (left, self.kw - 1 - left))
        else:
            self._pad = ((0, 0), (0, 0))

    def __repr__(self):
        return (
            f"Conv2D({self.c_in} → {self.c_out}, "
            f"{self.kh}×{self.kw}, {self.padding})"
        )  # fmt: skip

    def out_shape(self, in_shape):
        expects = f"(B, {self.c_in}, H, W)"
        if len(in_shape) != 3 or in_shape[0] != self.c_in:
            raise ShapeError(expects)
        _, H, W = in_shape
        if self.padding == "same":
            return (self.c_out, H, W)
        if H < self.kh or W < self.kw:
            raise ShapeError(f"{expects} with H >= {self.kh} and W >= {self.kw}")
        return (self.c_out, H - self.kh + 1, W - self.kw + 1)

    def unpack(self, theta):
        """Views ``(W, bias)`` into the flat parameters ``θ = [W.ravel(), bias]``.

        Parameters
        ----------
        theta : ndarray, shape (n_params,)

        Returns
        -------
        W : ndarray, shape (c_out, c_in, kh, kw)
        bias : ndarray, shape (c_out,)
            Views: writing to them writes to ``theta``.
        """
        return theta[: self.n_weights].reshape(self.w_shape), theta[self.n_weights :]

    def _padded(self, x):
        if self.padding == "valid":
            return np.ascontiguousarray(x)
        return np.pad(x, ((0, 0), (0, 0), *self._pad))

    def _cols(self, x, dtype):
        """The unrolled patches of (padded) ``x``, shape (B·Ho·Wo, C_in·kh·kw)."""
        xp = self._padded(np.asarray(x, dtype=dtype))
        B, _, Hp, Wp = xp.shape
        cols = np.empty(
            (B, Hp - self.kh + 1, Wp - self.kw + 1, self.n_weights // self.c_out),
            dtype=dtype,
        )
        lk.im2col(xp, self.kh, self.kw, cols)
        return cols.reshape(-1, cols.shape[-1]), cols.shape[:3]

    def _to_images(self, rows, bhw):
        # (B·Ho·Wo, C_out) rows -> (B, C_out, Ho, Wo) images
        B, Ho, Wo = bhw
        return np.ascontiguousarray(
            rows.reshape(B, Ho, Wo, self.c_out).transpose(0, 3, 1, 2)
        )

    def forward(self, x, theta):
        dtype = _common_dtype(x, theta)
        W, bias = self.unpack(np.asarray(theta, dtype=dtype))
        cols, bhw = self._cols(x, dtype)
        rows = cols @ W.reshape(self.c_out, -1).T
        rows += bias
        return self._to_images(rows, bhw), cols

    def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
        # W̄ = Ȳᵀ cols, b̄ = Σ Ȳ, x̄ = col2im(Ȳ W_mat) with Ȳ the rows of ȳ
        cols = cache
        dtype = _common_dtype(cols, theta, y_bar)
        W, _ = self.unpack(np.asarray(theta, dtype=dtype))
        rows_bar = np.asarray(y_bar, dtype=dtype).transpose(0, 2, 3, 1)
        rows_bar = rows_bar.reshape(-1, self.c_out)
        theta_bar = np.empty(self.n_params, dtype=dtype)
        W_bar, b_bar = self.unpack(theta_bar)
        np.matmul(rows_bar.T, cols, out=W_bar.reshape(self.c_out, -1))
        np.sum(rows_bar, axis=0, out=b_bar)
        if not need_x_bar:
            return None, theta_bar
        B, C, H, Wd = x.shape
        (top, bottom), (left, right) = self._pad
        cols_bar = rows_bar @ W.reshape(self.c_out, -1)
        cols_bar = cols_bar.reshape(B, y.shape[2], y.shape[3], -1)
        xp_bar = np.empty((B, C, H + top + bottom, Wd + left + right), dtype=dtype)
        lk.col2im(cols_bar, self.kh, self.kw, xp_bar)
        x_bar = xp_bar[:, :, top : top + H, left : left + Wd]
        return np.ascontiguousarray(x_bar), theta_bar

    def jvp(self, x, theta, y, cache, x_dot, theta_dot):
        # Bilinear in (x, W): ẏ = conv(ẋ, W) + conv(x, Ẇ) + ḃ
        cols = cache
        dtype = _common_dtype(cols, theta, x_dot, theta_dot)
        W, _ = self.unpack(np.asarray(theta, dtype=dtype))
        W_dot, b_dot = self.unpack(np.asarray(theta_dot, dtype=dtype))
        cols_dot, bhw = self._cols(x_dot, dtype)
        rows = cols_dot @ W.reshape(self.c_out, -1).T
        rows += cols @ W_dot.reshape(self.c_out, -1).T
        rows += b_dot
        return self._to_images(rows, bhw)

    def init(self, rng, scheme="glorot"):
        fan_in = self.c_in * self.kh * self.kw
        fan_out = self.c_out * self.kh * self.kw
        theta = np.zeros(self.n_params)
        theta[: self.n_weights] = _init_weights(
            rng, scheme, self.n_weights, fan_in, fan_out, self.init_scale
        )
        return theta

    def decay_mask(self):
        mask = np.zeros(self.n_params)
        mask[: self.n_weights] = 1.0
        return mask


class MaxPool2D(Layer):
    """Max-pooling over non-overlapping ``size × size`` windows (stride = size).

    Output (B, C, H // size, W // size); rows and columns beyond the last
    whole window are dropped (their cotangent is zero).

    Tie rule: the whole cotangent of a window goes to one entry, the first
    maximum in row-major order (lowest row, then lowest column); tied
    entries after it get zero.  The tangent takes that same entry's tangent,
    so the VJP and JVP are transposes at ties too.

    Parameters
    ----------
    size : int, optional
        Side of the windows and stride (default 2).

    Raises
    ------
    TypeError
        If ``size`` is not an integer.
    ValueError
        If ``size`` is below 1.

    Notes
    -----
    Not complex-analytic: check gradients through it by central differences
    (:func:`~adjoint.finite_difference_gradient`).  No parameters.

    Examples
    --------
    A tie: the cotangent goes to the first 3 in row-major order.

    >>> import numpy as np
    >>> from adjoint import MaxPool2D
    >>> layer = MaxPool2D(2)
    >>> x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])
    >>> y, cache = layer.forward(x, np.zeros(0))
    >>> x_bar, theta_bar = layer.vjp(x, np.zeros(0), y, cache, np.ones_like(y))
    >>> y.tolist(), x_bar.tolist()
    ([[[[3.0]]]], [[[[0.0, 1.0], [0.0, 0.0]]]])
    >>> layer.out_shape((3, 9, 8))
    (3, 4, 4)
    """

    complex_analytic = False

    def __init__(self, size: int = 2):
        self.size = _positive_int("size", size)

    def __repr__(self):
        return f"MaxPool2D({self.size})"

    def out_shape(self, in_shape):
        s = self.size
        if len(in_shape) != 3 or in_shape[1] < s or in_shape[2] < s:
            raise ShapeError(f"(B, C, H, W) with H >= {s} and W >= {s}")
        return (in_shape[0], in_shape[1] // s, in_shape[2] // s)

    def forward(self, x, theta):
        x = np.ascontiguousarray(x, dtype=np.float64)
        B, C, H, W = x.shape
        s = self.size
        y = np.empty((B, C, H // s, W // s))
        winner = np.empty(y.shape, dtype=np.intp)
        lk.maxpool2d_forward(x, s, y, winner)
        return y, winner

    def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
        x_bar = np.empty(x.shape)
        lk.maxpool2d_vjp(
            np.ascontiguousarray(y_bar, dtype=np.float64), cache, self.size, x_bar
        )
        return x_bar, _empty_theta()

    def jvp(self, x, theta, y, cache, x_dot, theta_dot):
        y_dot = np.empty(y.shape)
        lk.maxpool2d_jvp(
            np.ascontiguousarray(x_dot, dtype=np.float64), cache, self.size, y_dot
        )
        return y_dot


# ---- residual block ----


def propagate_shapes(layers, in_shape, where: str = "") -> list[tuple]:
    """Per-sample shapes ``[in_shape, after layer 0, …]`` through ``layers``.

    Raises ``ValueError`` naming the layer index, the layer, the shape it
    takes and where the wrong shape came from.
    """
    shapes = [tuple(int(s) for s in in_shape)]
    for k, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"Layer {k}{where} is a {type(layer).__name__}, not a Layer; build "
                "chains from adjoint layers (Dense, Tanh, Conv2D, ...)."
            )
        try:
            shapes.append(tuple(int(s) for s in layer.out_shape(shapes[-1])))
        except ShapeError as err:
            source = "the input" if k == 0 else f"layer {k - 1} ({layers[k - 1]!r})"
            if err.detail:
                raise ValueError(
                    f"Layer {k} ({layer!r}){where}: {err.detail}"
                ) from None
            hint = f"; {err.hint}" if err.hint else ""
            raise ValueError(
                f"Layer {k} ({layer!r}){where} takes inputs of shape {err.expects}, "
                f"but {source} has shape {shape_text(shapes[-1])}{hint}."
            ) from None
    return shapes


class Residual(Layer):
    """Residual block ``y = x + g(x)`` around a sub-chain ``g`` of layers.

    ``g`` must keep the per-sample shape.  Its parameters are those of its
    layers, concatenated in order.  Rules: ``x̄ = ȳ + (∂g/∂x)ᵀ ȳ`` (the
    sub-chain's backward sweep), ``ẏ = ẋ + ġ``.  Weight decay acts on the
    weights of the sub-layers.

    Parameters
    ----------
    layers : sequence of Layer
        The branch ``g``, applied in order.

    Raises
    ------
    ValueError
        If ``layers`` is empty; from :meth:`out_shape` (so when a chain is
        built) if the branch changes the per-sample shape.
    TypeError
        If an entry of ``layers`` is not a :class:`~adjoint.Layer`.

    Examples
    --------
    With zero parameters the branch ``tanh(0 x + 0)`` vanishes and the
    block is the identity:

    >>> import numpy as np
    >>> from adjoint import Dense, Residual, Tanh
    >>> block = Residual([Dense(2, 2), Tanh()])
    >>> block, block.n_params
    (Residual([Dense(2 → 2), Tanh()]), 6)
    >>> x, theta = np.array([[1.0, -2.0]]), np.zeros(6)
    >>> y, cache = block.forward(x, theta)
    >>> y.tolist(), [t.size for t in block.split(theta)]
    ([[1.0, -2.0]], [6, 0])
    """

    def __init__(self, layers):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError(
                "`layers` of a Residual block is empty; give the branch g."
            )
        for j, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"`layers[{j}]` of a Residual block is a {type(layer).__name__}, "
                    "not a Layer."
                )
        sizes = [layer.n_params for layer in self.layers]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.n_params = int(self._offsets[-1])
        self.complex_analytic = all(layer.complex_analytic for layer in self.layers)

    def __repr__(self):
        return "Residual([" + ", ".join(repr(layer) for layer in self.layers) + "])"

    def out_shape(self, in_shape):
        shapes = propagate_shapes(self.layers, in_shape, " of the residual branch")
        if shapes[-1] != tuple(in_shape):
            raise ShapeError(
                shape_text(in_shape),
                f"the residual branch maps shape {shape_text(in_shape)} to "
                f"{shape_text(shapes[-1])}; y = x + g(x) needs g to keep the shape.",
            )
        return tuple(in_shape)

    def split(self, theta):
        """The sub-layers' parameter vectors, views into ``θ``.

        Parameters
        ----------
        theta : ndarray, shape (n_params,)
            The block's flat parameters, the sub-layers' concatenated.

        Returns
        -------
        list of ndarray
            One view per sub-layer, shape ``(layer.n_params,)``.
        """
        o = self._offsets
        return [theta[o[j] : o[j + 1]] for j in range(len(self.layers))]

    def forward(self, x, theta):
        zs, caches = [x], []
        for layer, th in zip(self.layers, self.split(theta)):
            z, c = layer.forward(zs[-1], th)
            zs.append(z)
            caches.append(c)
        return x + zs[-1], (zs, caches)

    def vjp(self, x, theta, y, cache, y_bar, need_x_bar=True):
        zs, caches = cache
        thetas = self.split(theta)
        theta_bar = np.empty(self.n_params, dtype=_common_dtype(x, theta, y_bar))
        parts = self.split(theta_bar)
        lam = y_bar
        for j in range(len(self.layers) - 1, -1, -1):
            lam, parts[j][...] = self.layers[j].vjp(
                zs[j], thetas[j], zs[j + 1], caches[j], lam
            )
        return y_bar + lam, theta_bar

    def jvp(self, x, theta, y, cache, x_dot, theta_dot):
        zs, caches = cache
        thetas, thetas_dot = self.split(theta), self.split(theta_dot)
        z_dot = x_dot
        for j, layer in enumerate(self.layers):
            z_dot = layer.jvp(
                zs[j], thetas[j], zs[j + 1], caches[j], z_dot, thetas_dot[j]
            )
        return x_dot + z_dot

    def init(self, rng, scheme="glorot"):
        if self.n_params == 0:
            return np.zeros(0)
        return np.concatenate([layer.init(rng, scheme) for layer in self.layers])

    def decay_mask(self):
        if self.n_params == 0:
            return np.zeros(0)
        return np.concatenate([layer.decay_mask() for layer in self.layers])
