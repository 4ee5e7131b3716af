"""Network layers: each rule against an independent oracle, and the kink rules.

Every layer's VJP is checked against the complex step (complex-analytic
layers) or central differences (ReLU, leaky ReLU, |x|, max-pooling) of its
own forward rule at generic points, its JVP against its VJP (dot-product
test), and its forward rule against a direct NumPy formula.  The
non-differentiable points have documented rules, tested here at exactly the
kink.
"""

import numpy as np
import pytest

from adjoint import (
    Abs,
    Conv2D,
    Dense,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Sigmoid,
    Softplus,
    Tanh,
)
from adjoint._layers import INIT_SCHEMES, ShapeError

# Complex step is exact to rounding; DESIGN.md asks for 1e-12.
COMPLEX_STEP_RTOL = 1e-12
# Central differences of a piecewise-linear map away from its kinks carry
# only rounding error ~ eps / h; the issue asks for 1e-8.
CENTRAL_RTOL = 1e-8
FD_STEP = 1e-6
DOT_RTOL = 1e-12
H = 1e-30  # complex step

B = 3  # batch size of the layer tests


# ---- reference layers: (layer, per-sample input shape) ----

ANALYTIC = {
    "dense": (Dense(5, 4), (5,)),
    "tanh": (Tanh(), (4, 3)),
    "sigmoid": (Sigmoid(), (6,)),
    "softplus": (Softplus(), (2, 3)),
    "flatten": (Flatten(), (2, 3, 4)),
    "conv-valid-3x3": (Conv2D(2, 3, 3), (2, 6, 5)),
    "conv-same-3x3": (Conv2D(2, 3, 3, padding="same"), (2, 5, 6)),
    "conv-same-2x3": (Conv2D(1, 2, (2, 3), padding="same"), (1, 4, 5)),
    "conv-valid-1x1": (Conv2D(3, 2, 1), (3, 3, 3)),
    "residual": (Residual([Dense(4, 6), Tanh(), Dense(6, 4)]), (4,)),
    "residual-conv": (
        Residual([Conv2D(2, 2, 3, padding="same"), Softplus()]),
        (2, 4, 4),
    ),
}
PIECEWISE = {
    "relu": (ReLU(), (5, 2)),
    "leaky-relu": (LeakyReLU(0.1), (7,)),
    "abs": (Abs(), (3, 3)),
    "maxpool-2": (MaxPool2D(2), (2, 4, 6)),
    "maxpool-3-cropped": (MaxPool2D(3), (1, 7, 8)),
    "residual-relu": (Residual([Dense(4, 4), ReLU()]), (4,)),
}
ALL = {**ANALYTIC, **PIECEWISE}


def _point(layer, shape, rng):
    """A generic point: inputs away from 0 (the kinks), distinct entries."""
    x = rng.uniform(0.2, 2.0, size=(B, *shape)) * rng.choice([-1.0, 1.0], (B, *shape))
    theta = rng.standard_normal(layer.n_params) * 0.5
    return x, theta


def _scalar(layer, x, theta, w):
    """``<w, F(x, θ)>``: the scalar whose gradient the VJP gives for ȳ = w."""
    y, _ = layer.forward(x, theta)
    return np.sum(w * y)


def _vjp(layer, x, theta, w):
    y, cache = layer.forward(x, theta)
    return layer.vjp(x, theta, y, cache, w)


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


# ---- reverse rules against complex step and central differences ----


@pytest.mark.parametrize("name", sorted(ANALYTIC))
def test_vjp_matches_complex_step(name, rng):
    layer, shape = ANALYTIC[name]
    x, theta = _point(layer, shape, rng)
    y, _ = layer.forward(x, theta)
    w = rng.standard_normal(y.shape)
    x_bar, theta_bar = _vjp(layer, x, theta, w)

    for _ in range(4):
        vx = rng.standard_normal(x.shape)
        vt = rng.standard_normal(theta.shape)
        ref = _scalar(layer, x + 1j * H * vx, theta + 1j * H * vt, w).imag / H
        adj = np.sum(x_bar * vx) + np.sum(theta_bar * vt)
        assert abs(adj - ref) <= COMPLEX_STEP_RTOL * max(abs(ref), 1.0)


@pytest.mark.parametrize("name", sorted(PIECEWISE))
def test_vjp_matches_central_differences(name, rng):
    layer, shape = PIECEWISE[name]
    assert not layer.complex_analytic
    x, theta = _point(layer, shape, rng)
    y, _ = layer.forward(x, theta)
    w = rng.standard_normal(y.shape)
    x_bar, theta_bar = _vjp(layer, x, theta, w)

    for _ in range(4):
        vx = rng.standard_normal(x.shape)
        vt = rng.standard_normal(theta.shape)
        plus = _scalar(layer, x + FD_STEP * vx, theta + FD_STEP * vt, w)
        minus = _scalar(layer, x - FD_STEP * vx, theta - FD_STEP * vt, w)
        ref = (plus - minus) / (2 * FD_STEP)
        adj = np.sum(x_bar * vx) + np.sum(theta_bar * vt)
        assert abs(adj - ref) <= CENTRAL_RTOL * max(abs(ref), 1.0)


@pytest.mark.parametrize("name", sorted(ALL))
def test_jvp_and_vjp_are_transposes(name, rng):
    layer, shape = ALL[name]
    x, theta = _point(layer, shape, rng)
    y, cache = layer.forward(x, theta)
    x_dot = rng.standard_normal(x.shape)
    theta_dot = rng.standard_normal(theta.shape)
    w = rng.standard_normal(y.shape)

    y_dot = layer.jvp(x, theta, y, cache, x_dot, theta_dot)
    x_bar, theta_bar = layer.vjp(x, theta, y, cache, w)

    forward = np.sum(w * y_dot)
    reverse = np.sum(x_bar * x_dot) + np.sum(theta_bar * theta_dot)
    assert y_dot.shape == y.shape
    assert abs(forward - reverse) <= DOT_RTOL * max(abs(forward), 1.0)


@pytest.mark.parametrize("name", sorted(ANALYTIC))
def test_jvp_matches_complex_step(name, rng):
    layer, shape = ANALYTIC[name]
    x, theta = _point(layer, shape, rng)
    y, cache = layer.forward(x, theta)
    x_dot = rng.standard_normal(x.shape)
    theta_dot = rng.standard_normal(theta.shape)

    y_dot = layer.jvp(x, theta, y, cache, x_dot, theta_dot)
    y_c, _ = layer.forward(x + 1j * H * x_dot, theta + 1j * H * theta_dot)

    assert _rel(y_dot, y_c.imag / H) < COMPLEX_STEP_RTOL
    assert _rel(y, y_c.real) < 1e-15


def test_vjp_without_input_cotangent_skips_it(rng):
    for layer, shape in (ANALYTIC["dense"], ANALYTIC["conv-same-3x3"]):
        x, theta = _point(layer, shape, rng)
        y, cache = layer.forward(x, theta)
        w = rng.standard_normal(y.shape)
        x_bar, theta_bar = layer.vjp(x, theta, y, cache, w, need_x_bar=False)
        assert x_bar is None
        np.testing.assert_array_equal(theta_bar, layer.vjp(x, theta, y, cache, w)[1])


# ---- forward rules against direct formulas ----


def conv_reference(x, W, b, padding):
    """Direct cross-correlation by explicit shifts (independent of im2col)."""
    kh, kw = W.shape[2:]
    if padding == "same":
        top, left = (kh - 1) // 2, (kw - 1) // 2
        x = np.pad(x, ((0, 0), (0, 0), (top, kh - 1 - top), (left, kw - 1 - left)))
    Ho, Wo = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    y = np.zeros((x.shape[0], W.shape[0], Ho, Wo), dtype=np.result_type(x, W))
    for p in range(kh):
        for q in range(kw):
            patch = x[:, :, p : p + Ho, q : q + Wo]
            y += np.einsum("oc,bcij->boij", W[:, :, p, q], patch)
    return y + b[None, :, None, None]


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("kernel", [1, 2, 3, (3, 2)])
def test_conv2d_forward_matches_direct_sum(padding, kernel, rng):
    layer = Conv2D(2, 3, kernel, padding=padding)
    x = rng.standard_normal((2, 2, 5, 6))
    theta = rng.standard_normal(layer.n_params)
    W, b = layer.unpack(theta)

    y, _ = layer.forward(x, theta)

    assert y.shape == (2, *layer.out_shape((2, 5, 6)))
    np.testing.assert_allclose(
        y, conv_reference(x, W, b, padding), rtol=1e-13, atol=1e-13
    )
    if padding == "same":
        assert y.shape[2:] == x.shape[2:]


def test_conv2d_runs_on_complex128(rng):
    layer = Conv2D(1, 2, 3, padding="same")
    x = rng.standard_normal((2, 1, 4, 4)) + 1j * rng.standard_normal((2, 1, 4, 4))
    theta = rng.standard_normal(layer.n_params) + 0j
    y, _ = layer.forward(x, theta)
    W, b = layer.unpack(theta)
    assert y.dtype == np.complex128
    np.testing.assert_allclose(y, conv_reference(x, W, b, "same"), atol=1e-13)


def test_maxpool_forward_matches_reshape_max(rng):
    x = rng.standard_normal((2, 3, 7, 9))
    y, _ = MaxPool2D(3).forward(x, np.zeros(0))
    expected = x[:, :, :6, :9].reshape(2, 3, 2, 3, 3, 3).max(axis=(3, 5))
    np.testing.assert_array_equal(y, expected)


def test_dense_forward_is_affine(rng):
    layer = Dense(3, 2)
    x = rng.standard_normal((4, 3))
    theta = rng.standard_normal(layer.n_params)
    W, b = layer.unpack(theta)
    np.testing.assert_allclose(layer.forward(x, theta)[0], x @ W.T + b, rtol=1e-15)
    assert W.shape == (2, 3) and np.shares_memory(W, theta)


def test_activations_match_formulas_and_never_overflow():
    x = np.array([[-1000.0, -30.0, -1.5, 0.0, 0.7, 30.0, 1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sp = Softplus().forward(x, None)[0]
        sg = Sigmoid().forward(x, None)[0]
    np.testing.assert_allclose(sp[0, 1:-1], np.log1p(np.exp(x[0, 1:-1])), rtol=1e-14)
    assert sp[0, 0] == 0.0 and sp[0, -1] == 1000.0
    with np.errstate(over="ignore"):
        expected = 1.0 / (1.0 + np.exp(-x))
    np.testing.assert_allclose(sg, expected, rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(ReLU().forward(x, None)[0], np.maximum(x, 0))
    np.testing.assert_array_equal(Abs().forward(x, None)[0], np.abs(x))
    np.testing.assert_allclose(
        LeakyReLU(0.2).forward(x, None)[0], np.where(x > 0, x, 0.2 * x)
    )


# ---- kinks: the documented subgradient rules ----


def _grad_at(layer, x):
    x = np.asarray(x, dtype=float)
    y, cache = layer.forward(x, np.zeros(0))
    x_bar, _ = layer.vjp(x, np.zeros(0), y, cache, np.ones_like(y))
    x_dot = layer.jvp(x, np.zeros(0), y, cache, np.ones_like(x), np.zeros(0))
    return x_bar, x_dot


@pytest.mark.parametrize(
    "layer, expected",
    [
        (ReLU(), [0.0, 0.0, 1.0]),  # default: 0 at 0 (PyTorch, JAX)
        (ReLU(at_zero=1.0), [0.0, 1.0, 1.0]),
        (ReLU(at_zero=0.5), [0.0, 0.5, 1.0]),
        (LeakyReLU(0.1), [0.1, 0.1, 1.0]),  # default: the slope (left derivative)
        (LeakyReLU(0.1, at_zero=1.0), [0.1, 1.0, 1.0]),
        (Abs(), [-1.0, 0.0, 1.0]),  # default: sign(0) = 0
        (Abs(at_zero=1.0), [-1.0, 1.0, 1.0]),
        (Abs(at_zero=-0.25), [-1.0, -0.25, 1.0]),
    ],
    ids=repr,
)
def test_subgradient_at_exactly_zero(layer, expected):
    x_bar, x_dot = _grad_at(layer, [[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(x_bar[0], expected)
    np.testing.assert_array_equal(x_dot[0], expected)  # JVP uses the same rule


@pytest.mark.parametrize(
    "layer, value",
    [(ReLU, 1.5), (ReLU, -0.1), (Abs, 2.0), (LeakyReLU, 0.0)],
)
def test_at_zero_outside_the_subdifferential_raises(layer, value):
    kwargs = {"at_zero": value}
    if layer is LeakyReLU:
        kwargs["slope"] = 0.1
    with pytest.raises(ValueError, match="`at_zero`.*subgradient at 0"):
        layer(**kwargs)


def test_maxpool_tie_goes_to_first_in_row_major_order():
    # One 2x2 window per case; the cotangent of the window is 5.
    windows = np.array(
        [
            [[1.0, 1.0], [1.0, 1.0]],  # all tied: top-left wins
            [[0.0, 2.0], [2.0, 1.0]],  # tie at (0,1) and (1,0): (0,1) wins
            [[0.0, 1.0], [3.0, 3.0]],  # tie in the bottom row: (1,0) wins
            [[4.0, 0.0], [0.0, 0.0]],  # unique maximum
        ]
    )
    x = windows[:, None]  # (4, 1, 2, 2)
    layer = MaxPool2D(2)
    y, cache = layer.forward(x, np.zeros(0))
    x_bar, _ = layer.vjp(x, np.zeros(0), y, cache, np.full(y.shape, 5.0))

    expected = np.zeros_like(x)
    expected[0, 0, 0, 0] = 5.0
    expected[1, 0, 0, 1] = 5.0
    expected[2, 0, 1, 0] = 5.0
    expected[3, 0, 0, 0] = 5.0
    np.testing.assert_array_equal(x_bar, expected)
    np.testing.assert_array_equal(y.ravel(), [1.0, 2.0, 3.0, 4.0])

    # The tangent reads the same winner
    x_dot = np.arange(16.0).reshape(x.shape)
    y_dot = layer.jvp(x, np.zeros(0), y, cache, x_dot, np.zeros(0))
    np.testing.assert_array_equal(y_dot.ravel(), [0.0, 5.0, 10.0, 12.0])


def test_maxpool_cropped_rows_get_zero_cotangent(rng):
    x = rng.standard_normal((1, 1, 5, 5))
    layer = MaxPool2D(2)
    y, cache = layer.forward(x, np.zeros(0))
    x_bar, _ = layer.vjp(x, np.zeros(0), y, cache, np.ones(y.shape))
    assert y.shape == (1, 1, 2, 2)
    assert np.all(x_bar[..., 4, :] == 0) and np.all(x_bar[..., :, 4] == 0)
    assert x_bar.sum() == 4.0


# ---- shapes, parameters and initialisation ----


def test_layer_shapes_and_parameter_counts():
    assert Dense(5, 3).n_params == 18
    assert Conv2D(2, 4, (3, 2)).n_params == 4 * 2 * 3 * 2 + 4
    assert Conv2D(1, 2, 3).out_shape((1, 8, 8)) == (2, 6, 6)
    assert Conv2D(1, 2, 3, padding="same").out_shape((1, 8, 8)) == (2, 8, 8)
    assert MaxPool2D(2).out_shape((3, 7, 8)) == (3, 3, 4)
    assert Flatten().out_shape((3, 2, 2)) == (12,)
    assert Residual([Dense(4, 4), Tanh()]).n_params == 20
    assert all(layer.n_params == 0 for layer in (Tanh(), ReLU(), Flatten()))


def test_wrong_input_shapes_raise_shape_errors():
    with pytest.raises(ShapeError):
        Dense(4, 2).out_shape((5,))
    with pytest.raises(ShapeError):
        Conv2D(3, 2, 3).out_shape((1, 8, 8))
    with pytest.raises(ShapeError):
        Conv2D(1, 2, 5).out_shape((1, 4, 4))
    with pytest.raises(ShapeError, match="keep the shape"):
        Residual([Dense(4, 3)]).out_shape((4,))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Dense(0, 3), "`n_in` must be at least 1"),
        (lambda: Dense(2.5, 3), "`n_in` must be a positive integer"),
        (lambda: Conv2D(1, 2, 3, padding="full"), "`padding` must be"),
        (lambda: MaxPool2D(0), "`size` must be at least 1"),
        (lambda: LeakyReLU(1.5), "`slope` must lie in"),
        (lambda: Residual([]), "empty"),
        (lambda: Residual([np.tanh]), "not a Layer"),
    ],
)
def test_bad_layer_arguments_raise(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_init_schemes_give_the_stated_variance(scheme):
    layer = Dense(200, 300)
    theta = layer.init(np.random.default_rng(0), scheme)
    W, b = layer.unpack(theta)
    expected = {
        "glorot": 2.0 / 500,
        "glorot_normal": 2.0 / 500,
        "he": 2.0 / 200,
        "he_uniform": 2.0 / 200,
        "lecun": 1.0 / 200,
        "standard": 1.0 / (3 * 200),
        "zeros": 0.0,
    }[scheme]
    assert np.all(b == 0)
    assert np.var(W) == pytest.approx(expected, rel=0.03, abs=1e-12)


def test_conv_init_counts_the_kernel_area_in_the_fans():
    layer = Conv2D(4, 8, 3)
    W, _ = layer.unpack(layer.init(np.random.default_rng(0), "he"))
    assert np.var(W) == pytest.approx(2.0 / (4 * 9), rel=0.1)


def test_init_scale_multiplies_weights():
    a = Dense(10, 10).init(np.random.default_rng(1), "glorot")
    b = Dense(10, 10, init_scale=0.1).init(np.random.default_rng(1), "glorot")
    np.testing.assert_allclose(b, 0.1 * a)


def test_unknown_init_scheme_raises():
    with pytest.raises(ValueError, match="`scheme` must be one of"):
        Dense(2, 2).init(np.random.default_rng(0), "xavier")


def test_decay_masks_cover_weights_not_biases():
    mask = Residual([Dense(2, 2), Tanh(), Conv2D(1, 1, 1)]).decay_mask()
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 0, 0, 1, 0])
