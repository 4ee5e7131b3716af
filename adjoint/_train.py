"""Training network chains: initialisation, SGD/momentum/Adam, L-BFGS, files.

The stochastic optimisers run mini-batch epochs: each batch is one forward
and one adjoint sweep of the chain (the same sweeps :class:`~adjoint.Objective`
runs) and one parameter update.  Full-batch L-BFGS hands the chain's
``Objective.value_and_grad`` to :func:`scipy.optimize.minimize`.  Parameters
are saved to ``.npz`` files atomically: a half-written file never replaces a
good one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import OptimizeResult, minimize

from . import _validate
from ._chain import Chain
from ._layers import INIT_SCHEMES
from ._losses import accuracy
from ._objective import Objective

__all__ = [
    "SGD",
    "Adam",
    "Momentum",
    "Optimiser",
    "ProgressBar",
    "init_params",
    "load_params",
    "save_params",
    "train",
    "train_lbfgs",
]

logger = logging.getLogger(__name__)


# ---- initialisation ----


def _rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an int or a numpy Generator; got {seed!r}.")
    return np.random.default_rng(int(seed))


def init_params(chain: Chain, scheme: str = "glorot", *, seed=0) -> list[np.ndarray]:
    """Random initial parameters of every layer of ``chain``.

    Weights are drawn by ``scheme``, biases start at zero, each layer's
    ``init_scale`` multiplies its weights.  Schemes (fan-in ``n_i`` and
    fan-out ``n_o`` count the weights feeding one output and fed by one
    input; for a convolution they include the kernel area):

    - ``'glorot'``: uniform on ``±√(6 / (n_i + n_o))`` (Glorot & Bengio
      2010), for tanh and sigmoid networks;
    - ``'glorot_normal'``: normal, variance ``2 / (n_i + n_o)``;
    - ``'he'``: normal, variance ``2 / n_i`` (He et al. 2015), for ReLU;
    - ``'he_uniform'``: uniform on ``±√(6 / n_i)``;
    - ``'lecun'``: normal, variance ``1 / n_i``;
    - ``'zeros'``.

    Parameters
    ----------
    chain : Chain
        The network whose layers draw their parameters.
    scheme : str, optional
        One of the schemes above, or ``'standard'`` (uniform on
        ``±1/√n_i``, PyTorch's default); default ``'glorot'``.
    seed : int or numpy.random.Generator
        Fixes the draw (default 0), so two calls give the same parameters.

    Returns
    -------
    list of ndarray
        One flat parameter vector per layer (empty for layers without
        parameters).

    Raises
    ------
    TypeError
        If ``chain`` is not a :class:`~adjoint.Chain` or ``seed`` is neither
        an int nor a Generator.
    ValueError
        For an unknown ``scheme``.

    Examples
    --------
    >>> from adjoint import Chain, Dense, Tanh, init_params
    >>> net = Chain([Dense(2, 16), Tanh(), Dense(16, 2)])
    >>> params = init_params(net, "he", seed=1)
    >>> [theta.shape for theta in params]
    [(48,), (0,), (34,)]
    >>> float(params[0][-16:].max())  # biases start at zero
    0.0
    """
    if not isinstance(chain, Chain):
        raise TypeError(f"`chain` must be a Chain, got {type(chain).__name__}.")
    _validate.choice("scheme", scheme, INIT_SCHEMES)
    rng = _rng(seed)
    return [
        np.asarray(layer.init(rng, scheme), dtype=np.float64) for layer in chain.layers
    ]


# ---- optimisers ----


class Optimiser:
    """A first-order update rule ``z ← z − step(g)`` with internal state.

    Subclasses supply ``init_state(n) -> dict`` and ``step(z, g, state)``,
    which updates ``z`` in place.  :func:`~adjoint.train` calls
    ``init_state`` once and ``step`` once per mini-batch; it may change
    ``learning_rate`` between epochs (``learning_rate_decay``) and restores
    it at the end.  The methods are documented here once.

    Parameters
    ----------
    learning_rate : float
        The step size ``η > 0``.

    Raises
    ------
    ValueError
        If ``learning_rate`` is not a positive finite number.

    See Also
    --------
    SGD, Momentum, Adam : the update rules provided.

    Examples
    --------
    Sign descent, ``z ← z − η sign(g)``:

    >>> import numpy as np
    >>> from adjoint import Optimiser
    >>> class SignDescent(Optimiser):
    ...     def step(self, z, g, state):
    ...         z -= self.learning_rate * np.sign(g)
    >>> opt = SignDescent(0.5)
    >>> z = np.array([1.0, -2.0])
    >>> opt.step(z, np.array([3.0, -0.1]), opt.init_state(z.size))
    >>> z.tolist()
    [0.5, -1.5]
    """

    def __init__(self, learning_rate: float):
        lr = float(learning_rate)
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"`learning_rate` must be a positive number; got {lr}.")
        self.learning_rate = lr

    def init_state(self, n: int) -> dict:
        """The optimiser's state for ``n`` unknowns, before the first step.

        Parameters
        ----------
        n : int
            Number of unknowns (the size of ``z``).

        Returns
        -------
        dict
            Passed to every :meth:`step` and updated there (the default holds
            nothing).
        """
        return {}

    def step(self, z, g, state) -> None:
        """One update of ``z`` in place from the gradient ``g``.

        Parameters
        ----------
        z : ndarray, shape (n,)
            The unknowns, updated in place.
        g : ndarray, shape (n,)
            The gradient (of a mini-batch's cost) at ``z``.
        state : dict
            The state from :meth:`Optimiser.init_state`, updated in place.

        Raises
        ------
        NotImplementedError
            In the base class; subclasses implement the rule.
        """
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(learning_rate={self.learning_rate})"


class SGD(Optimiser):
    """Plain stochastic gradient descent, ``z ← z − η g``.

    Parameters
    ----------
    learning_rate : float, optional
        ``η > 0`` (default 0.1).

    Raises
    ------
    ValueError
        If ``learning_rate`` is not a positive finite number.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import SGD
    >>> opt, z = SGD(0.1), np.array([1.0, -2.0])
    >>> opt.step(z, np.array([0.5, 0.5]), opt.init_state(z.size))
    >>> z.round(4).tolist()
    [0.95, -2.05]
    """

    def __init__(self, learning_rate: float = 0.1):
        super().__init__(learning_rate)

    def step(self, z, g, state):
        z -= self.learning_rate * g


class Momentum(Optimiser):
    """Heavy-ball momentum: ``v ← μ v + g``, ``z ← z − η v`` (Nesterov:
    ``z ← z − η (g + μ v)``).

    Parameters
    ----------
    learning_rate : float, optional
        ``η > 0`` (default 0.05).
    momentum : float, optional
        ``μ`` in [0, 1) (default 0.9).
    nesterov : bool, optional
        Use Nesterov's update (default False).

    Raises
    ------
    ValueError
        If ``learning_rate`` is not positive or ``momentum`` lies outside
        [0, 1).

    Examples
    --------
    Two steps with the same gradient: the second is ``1 + μ`` times longer.

    >>> import numpy as np
    >>> from adjoint import Momentum
    >>> opt, z = Momentum(0.1, 0.9), np.array([1.0, -2.0])
    >>> state = opt.init_state(z.size)
    >>> for _ in range(2):
    ...     opt.step(z, np.array([0.5, 0.5]), state)
    >>> z.round(4).tolist(), state["v"].round(4).tolist()
    ([0.855, -2.145], [0.95, 0.95])
    """

    def __init__(
        self,
        learning_rate: float = 0.05,
        momentum: float = 0.9,
        *,
        nesterov: bool = False,
    ):
        super().__init__(learning_rate)
        mu = float(momentum)
        if not 0.0 <= mu < 1.0:
            raise ValueError(f"`momentum` must lie in [0, 1); got {mu}.")
        self.momentum = mu
        self.nesterov = bool(nesterov)

    def init_state(self, n):
        return {"v": np.zeros(n)}

    def step(self, z, g, state):
        v = state["v"]
        v *= self.momentum
        v += g
        if self.nesterov:
            z -= self.learning_rate * (g + self.momentum * v)
        else:
            z -= self.learning_rate * v


class Adam(Optimiser):
    """Adam (Kingma & Ba 2015) with bias correction.

    ``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``,
    ``z ← z − η m̂ / (√v̂ + ε)`` with ``m̂ = m/(1−β₁ᵗ)``,
    ``v̂ = v/(1−β₂ᵗ)``.

    Parameters
    ----------
    learning_rate : float, optional
        ``η > 0`` (default 1e-3).
    beta1, beta2 : float, optional
        Decay rates ``β₁``, ``β₂`` in [0, 1) of the moment estimates (default
        0.9 and 0.999).
    eps : float, optional
        ``ε`` (default 1e-8).

    Raises
    ------
    ValueError
        If ``learning_rate`` is not positive or ``beta1`` or ``beta2`` lies
        outside [0, 1).

    Examples
    --------
    Bias correction makes each early step about ``η`` long per entry:

    >>> import numpy as np
    >>> from adjoint import Adam
    >>> opt, z = Adam(0.1), np.array([1.0, -2.0])
    >>> state = opt.init_state(z.size)
    >>> for _ in range(2):
    ...     opt.step(z, np.array([0.5, 0.5]), state)
    >>> z.round(4).tolist(), state["t"]
    ([0.8, -2.2], 2)
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ):
        super().__init__(learning_rate)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= float(b) < 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1); got {b}.")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def init_state(self, n):
        return {"m": np.zeros(n), "v": np.zeros(n), "t": 0}

    def step(self, z, g, state):
        b1, b2 = self.beta1, self.beta2
        state["t"] += 1
        t = state["t"]
        m, v = state["m"], state["v"]
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        denom = np.sqrt(v / (1.0 - b2**t))
        denom += self.eps
        z -= (self.learning_rate / (1.0 - b1**t)) * m / denom


_OPTIMISERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def _as_optimiser(optimiser):
    if optimiser is None:
        return Adam()
    if isinstance(optimiser, Optimiser):
        return optimiser
    if isinstance(optimiser, str) and optimiser.lower() in _OPTIMISERS:
        return _OPTIMISERS[optimiser.lower()]()
    raise ValueError(
        f"`optimiser` must be an Optimiser (SGD, Momentum, Adam) or one of "
        f"'sgd', 'momentum', 'adam'; got {optimiser!r}. For L-BFGS call "
        "`train_lbfgs`."
    )


# ---- progress ----


class _NullProgress:
    def __call__(self, intermediate_result=None):
        pass

    def close(self):
        pass


class ProgressBar:
    """A tqdm bar showing loss and accuracy; pass it as ``progress=``.

    Callable with SciPy's ``callback(intermediate_result)`` signature: each
    call advances one epoch (or iteration) and shows the fields ``fun``,
    ``accuracy`` and ``val_accuracy`` it finds.

    Parameters
    ----------
    total : int, optional
        Number of calls expected (epochs), for the bar's length.
    desc : str, optional
        The bar's label (default ``'train'``).
    **tqdm_kwargs
        Passed to ``tqdm.tqdm`` (``file=``, ``disable=``, ...).

    Raises
    ------
    ImportError
        If tqdm is not installed.

    Examples
    --------
    Also a context manager, which closes the bar:

    >>> import io
    >>> from adjoint import Chain, Dense, ProgressBar, init_params, train
    >>> net = Chain([Dense(2, 2)])
    >>> X, y = [[0.0, 1.0], [1.0, 0.0]], [1, 0]
    >>> with ProgressBar(total=3, file=io.StringIO()) as bar:
    ...     res = train(net, init_params(net), X, y, epochs=3, progress=bar)
    >>> res.nit
    3
    """

    def __init__(self, total: int | None = None, desc: str = "train", **tqdm_kwargs):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="epoch", **tqdm_kwargs)

    def __call__(self, intermediate_result=None):
        r = intermediate_result
        post = {}
        for key, label in (
            ("fun", "loss"),
            ("accuracy", "acc"),
            ("val_accuracy", "val_acc"),
        ):
            value = getattr(r, key, None) if r is not None else None
            if value is not None and np.isfinite(value):
                post[label] = f"{float(value):.4g}"
        if post:
            self._bar.set_postfix(post, refresh=False)
        self._bar.update(1)

    def close(self):
        """Close the tqdm bar (the ``with`` statement does it on exit).

        Returns
        -------
        None
        """
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _as_progress(progress, total, desc):
    """``(callable, owned)``: the progress hook and whether we must close it."""
    if progress is None or progress is False:
        return _NullProgress(), False
    if progress is True:
        return ProgressBar(total=total, desc=desc), True
    if callable(progress):
        return progress, False
    raise TypeError(
        "`progress` must be None, True (a tqdm bar) or a callable taking an "
        f"OptimizeResult; got {type(progress).__name__}."
    )


# ---- training loops ----


def _check_data(chain, X, y, name_x="X", name_y="y"):
    X = chain._validate_x(name_x, X)
    if chain.loss is None:
        raise ValueError("`chain` has no loss (`loss=None`); training needs one.")
    y = chain.loss.validate_targets(y, chain.output_shape)
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"`{name_x}` holds {X.shape[0]} samples and `{name_y}` {y.shape[0]}; "
            "they must match."
        )
    return X, y


def _evaluate(chain, X, y, thetas):
    """Loss (without weight decay) and accuracy of the chain on ``(X, y)``."""
    out = chain.predict(X, thetas)
    loss = float(chain.loss.value(out, y))
    acc = accuracy(out, y) if y.ndim == 1 else float("nan")
    return loss, acc


def _history():
    return {
        "epoch": [],
        "loss": [],
        "accuracy": [],
        "val_loss": [],
        "val_accuracy": [],
        "time": [],
    }


def train(
    chain: Chain,
    params,
    X: ArrayLike,
    y: ArrayLike,
    *,
    optimiser=None,
    epochs: int = 20,
    batch_size: int = 64,
    seed=0,
    validation=None,
    progress=None,
    learning_rate_decay: float = 1.0,
) -> OptimizeResult:
    """Train ``chain`` by mini-batch SGD, momentum or Adam.

    Each epoch shuffles the samples (with a generator seeded by ``seed``, so
    a run is reproducible), splits them into batches of ``batch_size`` (the
    last one may be smaller) and, for each batch, runs one forward and one
    adjoint sweep of the chain and one optimiser step::

        for epoch in range(epochs):
            for batch in shuffled_batches(seed):
                J, g = value_and_grad(z, X[batch], y[batch])
                optimiser.step(z, g)

    Parameters
    ----------
    chain : Chain
        The network with its loss and weight decay; its own targets, if any,
        are not used.
    params : list of ndarray or ndarray
        Initial parameters (per layer, or flat); not modified.
    X, y : array_like
        Training inputs (n, ...) and targets.
    optimiser : Optimiser or {'sgd', 'momentum', 'adam'}, optional
        Default ``Adam()``.
    epochs, batch_size : int
    seed : int or numpy.random.Generator
        Seed of the shuffling.
    validation : (X_val, y_val), optional
        Evaluated after each epoch (loss without weight decay, accuracy).
    progress : None, True or callable, optional
        Called once per epoch with an ``OptimizeResult`` holding ``epoch``,
        ``fun`` (mean training cost of the epoch), ``accuracy`` (on the
        epoch's batches, before each update), ``val_loss``, ``val_accuracy``
        and ``x``.  ``True`` shows a tqdm bar (:class:`ProgressBar`); the
        default does nothing.  Raising ``StopIteration`` stops training.
    learning_rate_decay : float, optional
        Factor on the learning rate after each epoch (default 1: constant).

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x`` (flat parameters), ``params`` (per layer), ``fun`` (full-batch
        training cost at ``x``), ``accuracy`` (full-batch training accuracy),
        ``nit`` (epochs run), ``nfev``/``njev`` (batch sweeps), ``history``
        (per-epoch arrays ``epoch, loss, accuracy, val_loss, val_accuracy,
        time``), ``wall_time``, ``success``, ``message``.

    Raises
    ------
    SweepError
        When the cost becomes non-finite (the message names the layer);
        usually a learning rate that is too large.
    ValueError
        If the chain has no loss, ``X`` and ``y`` (or ``validation``) do not
        fit the chain or each other, ``epochs`` or ``batch_size`` is out of
        range, ``learning_rate_decay`` lies outside (0, 1], or ``optimiser``
        is unknown.
    TypeError
        If ``X``, ``y`` or ``params`` cannot be read as arrays of the right
        kind, ``seed`` is neither an int nor a Generator, or ``progress`` is
        neither None, True nor callable.

    See Also
    --------
    train_lbfgs : full-batch L-BFGS on the same gradients, often better for
        small data sets and networks.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Adam, Chain, Dense, Tanh, init_params, train
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 2))
    >>> y = (X[:, 0] * X[:, 1] > 0).astype(int)  # XOR of the signs
    >>> net = Chain([Dense(2, 16), Tanh(), Dense(16, 2)])
    >>> res = train(net, init_params(net, seed=0), X, y, optimiser=Adam(0.02),
    ...             epochs=60, batch_size=20, seed=0)
    >>> res.nit, res.accuracy > 0.9
    (60, True)
    """
    # Check the inputs once; batches are then sliced without checks
    X, y = _check_data(chain, X, y)
    epochs = _validate.nonnegative_int("epochs", epochs)
    batch_size = _validate.positive_int("batch_size", batch_size)
    optimiser = _as_optimiser(optimiser)
    decay = float(learning_rate_decay)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"`learning_rate_decay` must lie in (0, 1]; got {decay}.")
    if validation is not None:
        X_val, y_val = _check_data(chain, *validation, "validation[0]", "validation[1]")
    rng = _rng(seed)
    z = chain.flatten(chain._validate_thetas(params)).copy()
    thetas = chain.unflatten(z)
    p = np.zeros(0)
    state = optimiser.init_state(z.size)
    lr0 = optimiser.learning_rate
    progress, owned = _as_progress(progress, epochs, "train")

    # Epoch loop
    n = X.shape[0]
    history = _history()
    message, n_sweeps = f"{epochs} epochs done", 0
    start = time.perf_counter()
    try:
        for epoch in range(1, epochs + 1):
            order = rng.permutation(n)
            total, correct = 0.0, 0
            for first in range(0, n, batch_size):
                idx = order[first : first + batch_size]
                batch = chain._with_checked_targets(y[idx])
                traj = batch._forward_impl(X[idx], thetas, p)
                _, grads, _ = batch._adjoint_impl(traj, None, 1.0, need_x0_bar=False)
                n_sweeps += 1
                total += traj.J * idx.size
                if y.ndim == 1:
                    correct += int(np.sum(np.argmax(traj.xs[-1], axis=1) == y[idx]))
                optimiser.step(z, np.concatenate(grads), state)
            optimiser.learning_rate *= decay

            history["epoch"].append(epoch)
            history["loss"].append(total / n)
            history["accuracy"].append(correct / n if y.ndim == 1 else float("nan"))
            if validation is not None:
                vl, va = _evaluate(chain, X_val, y_val, thetas)
            else:
                vl = va = float("nan")
            history["val_loss"].append(vl)
            history["val_accuracy"].append(va)
            history["time"].append(time.perf_counter() - start)
            logger.debug("epoch %d: loss %.4g, val_accuracy %.4f", epoch, total / n, va)
            try:
                progress(
                    OptimizeResult(
                        x=z,
                        epoch=epoch,
                        nit=epoch,
                        fun=total / n,
                        accuracy=history["accuracy"][-1],
                        val_loss=vl,
                        val_accuracy=va,
                    )
                )
            except StopIteration:
                message = f"stopped by `progress` after epoch {epoch}"
                break
    finally:
        optimiser.learning_rate = lr0
        if owned:
            progress.close()

    # Assemble the result
    wall = time.perf_counter() - start
    final = chain._with_checked_targets(y)
    traj = final._forward_impl(X, thetas, p)
    acc = accuracy(traj.xs[-1], y) if y.ndim == 1 else float("nan")
    return OptimizeResult(
        x=z,
        params=[t.copy() for t in thetas],
        fun=traj.J,
        accuracy=acc,
        nit=len(history["epoch"]),
        nfev=n_sweeps,
        njev=n_sweeps,
        history={k: np.asarray(v, dtype=float) for k, v in history.items()},
        wall_time=wall,
        success=True,
        status=0,
        message=message,
        method=type(optimiser).__name__.lower(),
    )


def train_lbfgs(
    chain: Chain,
    params,
    X: ArrayLike,
    y: ArrayLike,
    *,
    maxiter: int = 200,
    validation=None,
    progress=None,
    options=None,
) -> OptimizeResult:
    """Train ``chain`` on the full batch with SciPy's L-BFGS-B.

    The objective is :class:`~adjoint.Objective` of the chain bound to
    ``(X, y)`` with the parameters as unknowns; ``minimize`` receives its
    ``value_and_grad`` (``jac=True``), so each evaluation is one forward and
    one adjoint sweep over the whole training set.

    Parameters
    ----------
    chain, params, X, y, validation
        As for :func:`train`.
    maxiter : int
        L-BFGS iterations (default 200).
    progress : None, True or callable
        Called once per iteration with SciPy's intermediate result, to which
        ``accuracy``, ``val_loss`` and ``val_accuracy`` are added.
    options : dict, optional
        More options for ``minimize`` (``ftol``, ``gtol``, ``maxcor``).

    Returns
    -------
    scipy.optimize.OptimizeResult
        SciPy's result plus ``params``, ``accuracy``, ``history`` (per
        iteration) and ``wall_time``.

    Raises
    ------
    SweepError
        When a cost evaluation becomes non-finite.
    ValueError
        If the chain has no loss, the data do not fit the chain or each
        other, or ``maxiter`` is below 1.
    TypeError
        If the data or parameters cannot be read as arrays of the right
        kind, or ``progress`` is neither None, True nor callable.

    See Also
    --------
    train : mini-batch SGD, momentum and Adam, for larger data sets.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import Chain, Dense, Tanh, init_params, train_lbfgs
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 2))
    >>> y = (X[:, 0] * X[:, 1] > 0).astype(int)
    >>> net = Chain([Dense(2, 8), Tanh(), Dense(8, 2)])
    >>> res = train_lbfgs(net, init_params(net, seed=0), X, y, maxiter=30)
    >>> res.nit <= 30, res.history["loss"].shape == (res.nit,)
    (True, True)
    >>> [theta.shape for theta in res.params]
    [(24,), (0,), (18,)]
    """
    X, y = _check_data(chain, X, y)
    maxiter = _validate.positive_int("maxiter", maxiter)
    if validation is not None:
        X_val, y_val = _check_data(chain, *validation, "validation[0]", "validation[1]")
    obj = Objective(chain._with_checked_targets(y), x0=X, thetas=params, wrt="theta")
    progress, owned = _as_progress(progress, maxiter, "L-BFGS")
    history = _history()
    start = time.perf_counter()

    def callback(intermediate_result):
        r = intermediate_result
        traj = obj.trajectory(r.x)
        acc = accuracy(traj.xs[-1], y) if y.ndim == 1 else float("nan")
        if validation is not None:
            vl, va = _evaluate(chain, X_val, y_val, chain.unflatten(r.x))
        else:
            vl = va = float("nan")
        history["epoch"].append(len(history["epoch"]) + 1)
        history["loss"].append(float(r.fun))
        history["accuracy"].append(acc)
        history["val_loss"].append(vl)
        history["val_accuracy"].append(va)
        history["time"].append(time.perf_counter() - start)
        r.accuracy, r.val_loss, r.val_accuracy = acc, vl, va
        progress(r)

    opts = {"maxiter": maxiter, **(options or {})}
    try:
        res = minimize(
            obj.value_and_grad,
            obj.z0,
            jac=True,
            method="L-BFGS-B",
            callback=callback,
            options=opts,
        )
    finally:
        if owned:
            progress.close()
    thetas = chain.unflatten(res.x)
    res.params = [t.copy() for t in thetas]
    traj = obj.trajectory(res.x)
    res.accuracy = accuracy(traj.xs[-1], y) if y.ndim == 1 else float("nan")
    res.history = {k: np.asarray(v, dtype=float) for k, v in history.items()}
    res.wall_time = time.perf_counter() - start
    res.method = "l-bfgs-b"
    return res


# ---- files ----

_KEY = "theta_{:04d}"


def save_params(path, params, *, chain: Chain | None = None, metadata=None) -> Path:
    """Save per-layer parameters to an ``.npz`` file, atomically.

    The arrays are written to a temporary file in the same directory, flushed
    to disk, and then moved over ``path`` with ``os.replace``; an interrupted
    save leaves an existing file untouched and no temporary file behind.

    Parameters
    ----------
    path : str or path-like
        Target file (``.npz`` is conventional; the name is used as given).
    params : list of ndarray
        One array per layer (empty for layers without parameters).
    chain : Chain, optional
        When given, its layer descriptions are stored too and the shapes are
        checked against it first.
    metadata : dict of str to str or number, optional
        Stored as ``meta_<key>`` entries (epochs, accuracy, seed, ...).

    Returns
    -------
    pathlib.Path
        ``path``, as a Path.

    Raises
    ------
    ValueError
        If ``chain`` is given and ``params`` do not fit it, or a parameter
        array is not finite.
    TypeError
        If a parameter array cannot be read as real numbers or a metadata
        value is neither a string nor numbers.
    OSError
        If the file cannot be written (an existing file is left untouched).

    See Also
    --------
    load_params

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from adjoint import Chain, Dense, Tanh, init_params, load_params, save_params
    >>> net = Chain([Dense(2, 3), Tanh(), Dense(3, 2)])
    >>> params = init_params(net, seed=0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_params(Path(tmp) / "net.npz", params, chain=net,
    ...                        metadata={"epochs": 20})
    ...     loaded = load_params(path, chain=net)
    >>> path.name, all((a == b).all() for a, b in zip(params, loaded))
    ('net.npz', True)
    """
    path = Path(path)
    if chain is not None:
        params = chain._validate_thetas(params)
    arrays = {}
    for k, theta in enumerate(params):
        arrays[_KEY.format(k)] = _validate.real_array(f"params[{k}]", theta)
    arrays["n_layers"] = np.array(len(params))
    if chain is not None:
        arrays["layers"] = np.array(chain.layer_names())
    for key, value in (metadata or {}).items():
        arrays[f"meta_{key}"] = np.asarray(value)
        if arrays[f"meta_{key}"].dtype == object:
            raise TypeError(f"`metadata[{key!r}]` must be a string or numbers.")

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def load_params(path, chain: Chain | None = None) -> list[np.ndarray]:
    """Load parameters saved by :func:`save_params`.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_params`.
    chain : Chain, optional
        When given, the number of layers and each layer's parameter count are
        checked against it (``ValueError`` naming the layer otherwise).

    Returns
    -------
    list of ndarray
        One ``float64`` parameter vector per layer, as saved.

    Raises
    ------
    ValueError
        If the file was not written by :func:`save_params`, or does not fit
        ``chain``.
    OSError
        If the file cannot be read (``FileNotFoundError`` when it is missing).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from adjoint import Chain, Dense, init_params, load_params, save_params
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_params(Path(tmp) / "p.npz", init_params(Chain([Dense(2, 3)])))
    ...     load_params(path, chain=Chain([Dense(2, 4)]))
    Traceback (most recent call last):
        ...
    ValueError: ...: layer 0 (Dense(2 → 4)) has 12 parameters, the file holds 9.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        if "n_layers" not in data:
            raise ValueError(f"{path} is not a parameter file written by save_params.")
        n = int(data["n_layers"])
        params = [np.array(data[_KEY.format(k)], dtype=np.float64) for k in range(n)]
        names = [str(s) for s in data["layers"]] if "layers" in data else None
    if chain is not None:
        if n != chain.N:
            raise ValueError(
                f"{path} holds parameters of {n} layers; the chain has {chain.N}."
            )
        for k, (theta, shape) in enumerate(zip(params, chain.theta_shapes)):
            if theta.shape != shape:
                saved = f" (saved as {names[k]})" if names else ""
                raise ValueError(
                    f"{path}: layer {k} ({chain.layers[k]!r}) has {shape[0]} "
                    f"parameters, the file holds {theta.size}{saved}."
                )
    return params
