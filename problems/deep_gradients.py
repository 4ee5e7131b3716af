"""Vanishing gradients: plain tanh networks against residual networks.

Two families of networks of ``depth`` dense layers of width ``WIDTH`` on the
UCI 8×8 digits (see :mod:`problems.digits`), with softmax cross-entropy:

- plain:    ``x_{k+1} = tanh(W_k x_k + b_k)``, ``depth − 1`` such layers then a
  dense output layer;
- residual: a first ``tanh(W_0 x + b_0)``, then ``depth − 2`` residual blocks
  ``x_{k+1} = x_k + tanh(W_k x_k + b_k)``, then the dense output layer.

Both start from the same weight distribution, the "standard" uniform
``U(±1/√n_in)`` of Glorot & Bengio [1]_ (PyTorch's default for linear
layers), biases zero; the skip connection is the only difference.

Backpropagation multiplies the cotangent by ``diag(tanh′) W_kᵀ`` at each
plain layer.  With weights of variance ``1/(3 n)`` that shrinks it by about
``√(1/3)`` per layer, so the gradient of the first layer is smaller than the
last one's by a factor that decays exponentially with depth [1]_, [2]_.  A
residual block multiplies by ``I + diag(tanh′) W_kᵀ`` instead, whose identity
part carries the cotangent through unchanged [3]_.

The study measures ``‖∂J/∂θ_k‖`` for every dense layer at the initial
weights on a batch of ``N_SAMPLES`` training digits, at the depths
``DEPTHS``, and trains both networks at ``STUDY_DEPTH`` = 50 with Adam.

Reference (measured here, seed 0, width 32; the tests check the bounds in
``REFERENCE``): at depth 50 the first-to-last gradient-norm ratio is about
6e-11 for the plain network and about 1.2 for the residual one (at depth
100: 2e-23 and 1.4); after 15 epochs of Adam the plain network is still at
chance (loss ln 10 ≈ 2.30, test accuracy 9 %) while the residual network
reaches 95 %.

References
----------
.. [1] X. Glorot and Y. Bengio, "Understanding the difficulty of training
   deep feedforward neural networks", AISTATS 2010.
.. [2] Y. Bengio, P. Simard and P. Frasconi, "Learning long-term
   dependencies with gradient descent is difficult", IEEE Trans. Neural
   Networks 5 (1994) 157–166.
.. [3] K. He, X. Zhang, S. Ren and J. Sun, "Deep residual learning for image
   recognition", CVPR 2016.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import adjoint
from adjoint import Adam, Chain, Dense, Momentum, Residual, Tanh
from problems import digits

DESCRIPTION = "Vanishing gradients: plain tanh vs residual networks, depth 10 to 100"

WIDTH = 32  # units per hidden layer
DEPTHS = (10, 25, 50, 100)  # dense layers per network
STUDY_DEPTH = 50  # depth of the training comparison
INIT = "standard"  # U(±1/√n_in) for both families
N_SAMPLES = 512  # training digits in the gradient-norm batch
SEED = 0
KINDS = ("plain", "residual")

# Training comparison at STUDY_DEPTH
EPOCHS = 15
BATCH_SIZE = 64
METHODS = {"adam": lambda: Adam(1e-3), "momentum": lambda: Momentum(0.01, 0.9)}

REFERENCE = {
    "source": "acceptance bounds of the deep-gradients study (issue 5)",
    "depth": STUDY_DEPTH,
    # first-layer / last-layer gradient norm at STUDY_DEPTH
    "plain_ratio_below": 1e-3,
    "residual_ratio_within": (0.1, 10.0),
}


# ---- networks ----


def plain_network(depth: int, width: int = WIDTH) -> Chain:
    """``depth − 1`` layers ``tanh(W x + b)`` and a dense output layer."""
    _check_depth(depth)
    layers = [Dense(digits.N_PIXELS, width), Tanh()]
    for _ in range(depth - 2):
        layers += [Dense(width, width), Tanh()]
    return Chain(layers + [Dense(width, digits.N_CLASSES)])


def residual_network(depth: int, width: int = WIDTH) -> Chain:
    """``tanh(W x + b)``, ``depth − 2`` blocks ``x + tanh(W x + b)``, output."""
    _check_depth(depth)
    layers = [Dense(digits.N_PIXELS, width), Tanh()]
    for _ in range(depth - 2):
        layers.append(Residual([Dense(width, width), Tanh()]))
    return Chain(layers + [Dense(width, digits.N_CLASSES)])


def network(kind: str, depth: int, width: int = WIDTH) -> Chain:
    """The ``'plain'`` or ``'residual'`` network of ``depth`` layers."""
    if kind not in KINDS:
        raise ValueError(f"`kind` must be 'plain' or 'residual'; got {kind!r}.")
    return (plain_network if kind == "plain" else residual_network)(depth, width)


def _check_depth(depth):
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 2:
        raise ValueError(f"`depth` must be an integer of at least 2; got {depth!r}.")


def layer_gradient_norms(chain: Chain, params, X, y) -> np.ndarray:
    """``‖∂J/∂θ_k‖`` for each layer with parameters, input layer first.

    One forward and one adjoint sweep of ``chain`` on ``(X, y)``.
    """
    obj = adjoint.Objective(chain.with_targets(y), x0=X, thetas=params, wrt="theta")
    grads = chain.unflatten(obj.grad(obj.z0))
    return np.array(
        [np.linalg.norm(g) for g, layer in zip(grads, chain.layers) if layer.n_params]
    )


# ---- problem ----


@dataclass
class DeepGradientsProblem:
    """The digits data and the study's settings."""

    data: digits.DigitsProblem
    depths: tuple = DEPTHS
    width: int = WIDTH
    n_samples: int = N_SAMPLES

    @property
    def batch(self):
        """The gradient-norm batch: the first ``n_samples`` training digits."""
        return (
            self.data.X_train[: self.n_samples],
            self.data.y_train[: self.n_samples],
        )


def build(data=None, *, depths=DEPTHS, width: int = WIDTH) -> DeepGradientsProblem:
    """The study on the bundled digits (or the digits CSV file ``data``)."""
    depths = tuple(int(d) for d in depths)
    for d in depths:
        _check_depth(d)
    return DeepGradientsProblem(digits.build(data), depths, int(width))


def initial_guess(
    problem: DeepGradientsProblem, kind: str = "plain", depth: int = STUDY_DEPTH
) -> list:
    """The initial weights of one network (seed ``SEED``, scheme ``INIT``)."""
    return adjoint.init_params(network(kind, depth, problem.width), INIT, seed=SEED)


def gradient_norms(problem: DeepGradientsProblem) -> dict:
    """``{(kind, depth): per-layer gradient norms}`` at the initial weights."""
    X, y = problem.batch
    out = {}
    for depth in problem.depths:
        for kind in KINDS:
            net = network(kind, depth, problem.width)
            params = adjoint.init_params(net, INIT, seed=SEED)
            out[kind, depth] = layer_gradient_norms(net, params, X, y)
    return out


def solve(
    problem: DeepGradientsProblem,
    method: str | None = None,
    progress=None,
    *,
    epochs: int = EPOCHS,
    depth: int = STUDY_DEPTH,
):
    """Measure the gradient norms, then train both networks at ``depth``.

    Parameters
    ----------
    method : {'adam', 'momentum'}, optional
        Optimiser of the training comparison (default Adam, learning rate
        1e-3; momentum: 0.01, 0.9).
    progress : None, True or callable
        Passed to :func:`adjoint.train` for each of the two runs.
    epochs : int
        Epochs of each training run (default ``EPOCHS``; 0 skips training).

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``norms`` ({(kind, depth): array}), ``ratios`` ({(kind, depth):
        first / last}), ``training`` ({kind: result of adjoint.train}),
        ``x`` and ``fun`` of the residual run, ``table`` and ``to_json()``.
    """
    from scipy.optimize import OptimizeResult

    method = method or "adam"
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(map(repr, METHODS))}; got {method!r}."
        )
    _check_depth(depth)

    # Gradient norms at the initial weights
    norms = gradient_norms(problem)
    ratios = {key: float(n[0] / n[-1]) for key, n in norms.items()}

    # Training comparison at one depth
    data = problem.data
    training = {}
    for kind in KINDS:
        net = network(kind, depth, problem.width)
        params = adjoint.init_params(net, INIT, seed=SEED)
        training[kind] = adjoint.train(
            net,
            params,
            data.X_train,
            data.y_train,
            optimiser=METHODS[method](),
            epochs=epochs,
            batch_size=BATCH_SIZE,
            seed=SEED,
            validation=(data.X_test, data.y_test),
            progress=progress,
        )

    # Report
    table = []
    for d in problem.depths:
        for kind in KINDS:
            table.append(
                (f"{kind} depth {d}: |g_first| / |g_last|", ratios[kind, d], None)
            )
    for kind in KINDS:
        r = training[kind]
        acc = r.history["val_accuracy"][-1] if r.nit else float("nan")
        table.append((f"{kind} depth {depth}: test accuracy", acc, None))
        table.append((f"{kind} depth {depth}: training cost", float(r.fun), None))
    res = training["residual"]
    result = OptimizeResult(
        x=res.x,
        fun=res.fun,
        nit=sum(r.nit for r in training.values()),
        nfev=sum(r.nfev for r in training.values()),
        njev=sum(r.njev for r in training.values()),
        success=True,
        message="gradient norms measured; both networks trained",
        method=method,
        norms=norms,
        ratios=ratios,
        training=training,
        depth=depth,
        table=table,
    )
    result.to_json = lambda: {
        "ratios": {f"{k}-{d}": v for (k, d), v in ratios.items()},
        "norms": {f"{k}-{d}": v.tolist() for (k, d), v in norms.items()},
        "training": {
            k: {h: v.tolist() for h, v in r.history.items()}
            for k, r in training.items()
        },
    }
    return result


# ---- plot ----


def plot(problem: DeepGradientsProblem, result):
    """Per-layer gradient norms (log scale), their first/last ratio against
    depth, and the training curves of both networks at the study depth."""
    import matplotlib.pyplot as plt

    fig, (ax_n, ax_r, ax_t) = plt.subplots(
        1, 3, figsize=(15, 4.5), layout="constrained"
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, d in enumerate(problem.depths):
        c = colours[i % len(colours)]
        for kind, style in (("plain", "-"), ("residual", "--")):
            n = result.norms[kind, d]
            ax_n.semilogy(
                np.arange(1, n.size + 1), n, style, color=c, label=f"{kind}, depth {d}"
            )
    ax_n.set_xlabel("layer k (input side first)")
    ax_n.set_ylabel(r"$\Vert \partial J / \partial \theta_k \Vert$")
    ax_n.set_title("gradient norm per layer at initialisation")
    ax_n.legend(fontsize=7, ncol=2)

    depths = np.array(problem.depths)
    for kind, marker in (("plain", "o"), ("residual", "s")):
        ax_r.semilogy(
            depths, [result.ratios[kind, d] for d in depths], marker=marker, label=kind
        )
    ax_r.axhline(1.0, color="grey", lw=0.8)
    ax_r.set_xlabel("depth (dense layers)")
    ax_r.set_ylabel("first-layer / last-layer gradient norm")
    ax_r.set_title("vanishing with depth")
    ax_r.legend()

    for kind in KINDS:
        h = result.training[kind].history
        (line,) = ax_t.semilogy(h["epoch"], h["loss"], label=f"{kind}: training loss")
        ax_t.semilogy(
            h["epoch"],
            h["val_loss"],
            ":",
            color=line.get_color(),
            label=f"{kind}: test loss",
        )
    ax_t.set_xlabel("epoch")
    ax_t.set_ylabel("cross-entropy")
    acc = {k: result.training[k].history["val_accuracy"] for k in KINDS}
    ax_t.set_title(
        f"training at depth {result.depth}\ntest accuracy: "
        + ", ".join(f"{k} {a[-1]:.0%}" for k, a in acc.items() if a.size)
    )
    ax_t.legend(fontsize=8)
    return fig


# ---- checks ----


def check(problem: DeepGradientsProblem, *, depth: int = 10, n_samples: int = 16):
    """Gradient checks (complex step, Taylor, dot product) of both families."""
    X, y = problem.data.X_train[:n_samples], problem.data.y_train[:n_samples]
    reports = {}
    for kind in KINDS:
        net = network(kind, depth, 8)
        params = adjoint.init_params(net, INIT, seed=SEED)
        obj = adjoint.Objective(net.with_targets(y), x0=X, thetas=params, wrt="theta")
        reports[f"{kind}, depth {depth}, width 8"] = adjoint.check_gradients(
            obj, jacobian=False
        )
    return digits.CheckReport(reports)
