"""Chain: backpropagation as the adjoint sweep of a heterogeneous sequence.

Gradients of whole networks are checked through `Objective` and
`check_gradients` (complex step where every layer is complex-analytic,
central differences otherwise) and against backpropagation written out in
NumPy; the costs (cross-entropy, MSE, weight decay) against their formulas;
the input checks for the messages they promise.
"""

import numpy as np
import pytest

from adjoint import (
    Abs,
    Chain,
    Conv2D,
    Dense,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    Objective,
    ReLU,
    Residual,
    Sigmoid,
    Softplus,
    SweepError,
    Tanh,
    check_gradients,
    complex_step_gradient,
    dot_product_test,
    finite_difference_gradient,
    init_params,
    relative_error,
)
from adjoint._losses import MeanSquaredError, SoftmaxCrossEntropy, log_softmax

COMPLEX_STEP_RTOL = 1e-12  # DESIGN.md section 2
CENTRAL_RTOL = 1e-8  # the bound for layers checked by differences
FD_H = 1e-6


# ---- reference networks ----


def mlp_smooth():
    return Chain(
        [
            Dense(6, 5),
            Tanh(),
            Residual([Dense(5, 5), Sigmoid(), Dense(5, 5)]),
            Softplus(),
            Dense(5, 3),
        ],
        weight_decay=0.05,
    )


def cnn_smooth():
    return Chain(
        [
            Conv2D(2, 3, 3, padding="same"),
            Tanh(),
            Residual([Conv2D(3, 3, 3, padding="same"), Softplus()]),
            Conv2D(3, 2, (2, 3)),
            Flatten(),
            Dense(2 * 5 * 3, 4),
        ],
        input_shape=(2, 6, 5),
        weight_decay=0.01,
    )


def cnn_relu():
    return Chain(
        [
            Conv2D(2, 3, 3, padding="same"),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(3 * 3 * 2, 6),
            LeakyReLU(0.1),
            Dense(6, 6),
            Abs(),
            Dense(6, 4),
        ],
        input_shape=(2, 6, 5),
    )


def _objective(net, rng, batch=4, wrt=("x0", "theta"), scheme="glorot"):
    X = rng.standard_normal((batch, *net.input_shape))
    n_classes = net.output_shape[0]
    y = rng.integers(0, n_classes, batch)
    params = init_params(net, scheme, seed=1)
    # Non-zero biases make the point generic
    params = [t + 0.1 * rng.standard_normal(t.shape) for t in params]
    return Objective(net.with_targets(y), x0=X, thetas=params, wrt=wrt)


# ---- gradients of whole chains ----


@pytest.mark.parametrize("make", [mlp_smooth, cnn_smooth], ids=["mlp", "cnn"])
def test_chain_passes_every_gradient_check(make, rng):
    obj = _objective(make(), rng)
    report = check_gradients(obj)
    assert report.passed, str(report)
    assert report.value("complex step vs adjoint (rel.)") < COMPLEX_STEP_RTOL


@pytest.mark.parametrize("make", [mlp_smooth, cnn_smooth], ids=["mlp", "cnn"])
def test_gradient_matches_complex_step_in_every_unit_direction(make, rng):
    obj = _objective(make(), rng, batch=2)
    _, ref, adj = complex_step_gradient(obj, obj.z0, max_directions=10**6)
    assert relative_error(adj, ref) < COMPLEX_STEP_RTOL


def test_piecewise_chain_matches_central_differences(rng):
    obj = _objective(cnn_relu(), rng, scheme="he")
    with pytest.raises(NotImplementedError, match="not complex-analytic"):
        complex_step_gradient(obj, obj.z0)
    _, ref, adj = finite_difference_gradient(obj, obj.z0, h=FD_H, max_directions=40)
    assert relative_error(adj, ref) < CENTRAL_RTOL
    dot = dot_product_test(obj, obj.z0)
    assert dot.relative_error < 1e-12


def test_piecewise_chain_report_skips_complex_step(rng):
    report = check_gradients(_objective(cnn_relu(), rng, scheme="he"))
    names = [line[0] for line in report.lines]
    assert "complex step vs adjoint (rel.)" not in names
    assert report.value("central differences vs adjoint") < 1e-8


def numpy_backprop(Ws, bs, X, y, alpha):
    """Cost and gradients of Dense-tanh-Dense-tanh-Dense, written out."""
    hs = [X]
    for W, b in zip(Ws[:-1], bs[:-1]):
        hs.append(np.tanh(hs[-1] @ W.T + b))
    z = hs[-1] @ Ws[-1].T + bs[-1]
    B = len(y)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    J = -np.mean(np.log(p[np.arange(B), y])) + 0.5 * alpha * sum(
        np.sum(W * W) for W in Ws
    )
    delta = p
    delta[np.arange(B), y] -= 1.0
    delta /= B
    grads = []
    for k in range(len(Ws) - 1, -1, -1):
        grads.append((delta.T @ hs[k] + alpha * Ws[k], delta.sum(axis=0)))
        delta = delta @ Ws[k]
        if k > 0:
            delta *= 1.0 - hs[k] ** 2
    return J, grads[::-1], delta


def test_gradient_equals_numpy_backprop(rng):
    alpha = 0.03
    net = Chain(
        [Dense(7, 6), Tanh(), Dense(6, 5), Tanh(), Dense(5, 4)], weight_decay=alpha
    )
    X = rng.standard_normal((9, 7))
    y = rng.integers(0, 4, 9)
    params = init_params(net, seed=3)
    obj = Objective(net.with_targets(y), x0=X, thetas=params, wrt=("x0", "theta"))

    J, g = obj.value_and_grad(obj.z0)

    dense = net.layers[::2]
    Ws = [d.unpack(t)[0] for d, t in zip(dense, params[::2])]
    bs = [d.unpack(t)[1] for d, t in zip(dense, params[::2])]
    J_ref, grads, x_bar = numpy_backprop(Ws, bs, X, y, alpha)
    g_ref = np.concatenate(
        [x_bar.ravel()] + [np.concatenate([gW.ravel(), gb]) for gW, gb in grads]
    )
    assert J == pytest.approx(J_ref, rel=1e-14)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-15)


def test_weight_decay_is_a_running_cost_on_weights_only(rng):
    net0 = Chain([Dense(3, 4), Tanh(), Dense(4, 2)])
    net1 = Chain([Dense(3, 4), Tanh(), Dense(4, 2)], weight_decay=0.7)
    X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    params = [t + 0.2 for t in init_params(net0, seed=0)]
    o0 = Objective(net0.with_targets(y), x0=X, thetas=params, wrt="theta")
    o1 = Objective(net1.with_targets(y), x0=X, thetas=params, wrt="theta")

    J0, g0 = o0.value_and_grad(o0.z0)
    J1, g1 = o1.value_and_grad(o1.z0)

    mask = np.concatenate([layer.decay_mask() for layer in net0.layers])
    assert J1 - J0 == pytest.approx(0.35 * np.sum(mask * o0.z0**2), rel=1e-13)
    np.testing.assert_allclose(g1 - g0, 0.7 * mask * o0.z0, atol=1e-14)


def test_jacobian_forward_equals_reverse(rng):
    obj = _objective(Chain([Dense(3, 4), Tanh(), Dense(4, 2)]), rng, batch=2)
    jf = obj.jacobian(obj.z0, mode="forward")
    jr = obj.jacobian(obj.z0, mode="reverse")
    assert jf.shape == (2 * 2, obj.size)
    np.testing.assert_allclose(jf, jr, rtol=1e-12, atol=1e-15)


def test_jacobian_of_intermediate_states(rng):
    obj = _objective(mlp_smooth(), rng, batch=2, wrt="x0")
    steps = [1, 3, 5]
    jf = obj.jacobian(obj.z0, steps=steps, mode="forward")
    jr = obj.jacobian(obj.z0, steps=steps, mode="reverse")
    assert jf.shape == (2 * (5 + 5 + 3), 2 * 6)
    np.testing.assert_allclose(jf, jr, rtol=1e-12, atol=1e-15)


# ---- losses ----


def test_cross_entropy_matches_formula_and_is_stable():
    loss = SoftmaxCrossEntropy()
    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = np.array([1, 2])
    ref = -np.mean(np.log(np.exp(z[[0, 1], t]) / np.exp(z).sum(axis=1)))
    assert loss.value(z, t) == pytest.approx(ref, rel=1e-15)

    huge = np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss.value(huge, np.array([0, 2]))
        grad = loss.grad(huge, np.array([0, 2]))
    assert value == pytest.approx((0.0 + 5e3 + np.log(2.0)) / 2, rel=1e-15)
    np.testing.assert_allclose(grad, [[0, 0, 0], [0.25, 0.25, -0.5]], atol=1e-15)


def test_cross_entropy_complex_step_uses_real_shift():
    z = np.array([[800.0, 790.0, -5.0]])
    t = np.array([1])
    loss = SoftmaxCrossEntropy()
    v = np.array([[0.3, -1.2, 2.0]])
    cs = loss.value(z + 1e-30j * v, t).imag / 1e-30
    assert cs == pytest.approx(np.sum(loss.grad(z, t) * v), rel=1e-14)
    np.testing.assert_allclose(np.exp(log_softmax(z)).sum(), 1.0)


def test_mse_matches_formula(rng):
    z, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss = MeanSquaredError()
    assert loss.value(z, t) == pytest.approx(np.mean((z - t) ** 2), rel=1e-15)
    np.testing.assert_allclose(loss.grad(z, t), 2 * (z - t) / 12)


def test_mse_chain_gradient(rng):
    net = Chain([Dense(3, 5), Softplus(), Dense(5, 2)], loss="mse", weight_decay=0.1)
    X, T = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    obj = Objective(net.with_targets(T), x0=X, thetas=init_params(net), wrt="theta")
    _, ref, adj = complex_step_gradient(obj, obj.z0 + 0.1)
    assert relative_error(adj, ref) < COMPLEX_STEP_RTOL


def test_chain_without_loss_has_only_weight_decay(rng):
    net = Chain([Dense(3, 2), Tanh()], loss=None, weight_decay=2.0, batch_size=4)
    params = init_params(net, seed=0)
    obj = Objective(net, x0=rng.standard_normal((4, 3)), thetas=params, wrt="theta")
    W, _ = net.layers[0].unpack(params[0])
    assert obj.fun(obj.z0) == pytest.approx(np.sum(W * W), rel=1e-14)
    assert dot_product_test(obj, obj.z0).relative_error < 1e-12


# ---- bookkeeping ----


def test_thetas_as_list_or_flat_vector_agree(rng):
    net = mlp_smooth()
    X, y = rng.standard_normal((3, 6)), rng.integers(0, 3, 3)
    params = init_params(net, seed=2)
    a = Objective(net.with_targets(y), x0=X, thetas=params, wrt="theta")
    b = Objective(net.with_targets(y), x0=X, thetas=net.flatten(params), wrt="theta")
    np.testing.assert_array_equal(a.z0, b.z0)
    assert a.fun(a.z0) == b.fun(b.z0)
    assert [t.shape for t in net.unflatten(a.z0)] == net.theta_shapes


def test_with_targets_copies_and_shares_layers(rng):
    net = mlp_smooth()
    bound = net.with_targets([0, 1, 2])
    assert net.targets is None and net.batch_size is None
    assert bound.batch_size == 3 and bound.layers is net.layers
    assert bound.x0_shape == (3, 6)


def test_predict_equals_final_state(rng):
    net = cnn_smooth()
    obj = _objective(net, rng, batch=5)
    traj = obj.trajectory(obj.z0)
    X, thetas, _ = obj.unpack(obj.z0)
    np.testing.assert_allclose(net.predict(X, thetas, batch_size=2), traj.xs[-1])


def test_states_have_the_layer_shapes(rng):
    net = cnn_relu()
    obj = _objective(net, rng, batch=3, scheme="he")
    traj = obj.trajectory(obj.z0)
    assert [x.shape[1:] for x in traj.xs] == net.shapes
    assert obj.seq._n_outputs(traj, range(net.N + 1)) == sum(x.size for x in traj.xs)


# ---- errors ----


def test_dense_of_wrong_width_names_layer_and_shapes():
    with pytest.raises(ValueError) as info:
        Chain([Dense(64, 32), Tanh(), Dense(30, 10)])
    message = str(info.value)
    assert "Layer 2 (Dense(30 → 10))" in message
    assert "(B, 30)" in message and "layer 1 (Tanh())" in message
    assert "(B, 32)" in message


def test_dense_after_conv_suggests_flatten():
    with pytest.raises(ValueError, match=r"insert Flatten\(\) before it"):
        Chain([Conv2D(1, 2, 3), Dense(72, 10)], input_shape=(1, 8, 8))


def test_residual_that_changes_shape_names_the_layer():
    with pytest.raises(ValueError, match=r"Layer 1 \(Residual.*keep the shape"):
        Chain([Dense(4, 4), Residual([Dense(4, 3)])])


def test_conv_first_layer_needs_input_shape():
    with pytest.raises(ValueError, match="`input_shape` is required"):
        Chain([Conv2D(1, 2, 3)])


def test_x0_of_wrong_shape_raises(rng):
    net = Chain([Dense(4, 3)]).with_targets([0, 1])
    with pytest.raises(ValueError, match=r"`x0` has shape \(2, 5\).*\(B, 4\)"):
        Objective(net, x0=np.zeros((2, 5)), wrt="theta")
    with pytest.raises(ValueError, match="holds 3 samples but the chain's targets"):
        Objective(net, x0=np.zeros((3, 4)), wrt="theta")


def test_thetas_of_wrong_size_name_the_layer():
    net = Chain([Dense(4, 3), Tanh(), Dense(3, 2)]).with_targets([0])
    params = init_params(net)
    params[2] = np.zeros(7)
    with pytest.raises(
        ValueError,
        match=r"`thetas\[2\]`.*layer 2 \(Dense\(3 → 2\)\)",
    ):
        Objective(net, x0=np.zeros((1, 4)), thetas=params, wrt="theta")
    with pytest.raises(ValueError, match="holds 2 arrays; the chain has 3 layers"):
        Objective(net, x0=np.zeros((1, 4)), thetas=params[:2], wrt="theta")


@pytest.mark.parametrize(
    "targets, error, message",
    [
        ([0, 3], ValueError, r"`targets\[1\]` is 3.*0 … 2"),
        ([0.5, 1], ValueError, "not whole numbers"),
        ([[0, 1]], ValueError, "shape \\(B,\\)"),
        (["a", "b"], TypeError, "integer class labels"),
    ],
)
def test_bad_targets_raise(targets, error, message):
    with pytest.raises(error, match=message):
        Chain([Dense(2, 3)]).with_targets(targets)


def test_loss_needs_targets(rng):
    with pytest.raises(ValueError, match=r"needs targets; call `chain.with_targets"):
        Objective(Chain([Dense(2, 3)]), x0=np.zeros((2, 2)), wrt="theta")


def test_chain_without_batch_size_cannot_build_an_objective():
    net = Chain([Dense(2, 3)], loss=None)
    with pytest.raises(ValueError, match="no fixed batch size; bind targets"):
        Objective(net, x0=np.zeros((2, 2)), wrt="theta")
    with pytest.raises(ValueError, match="`targets` have no use"):
        net.with_targets([0, 1])


def test_bad_chain_arguments_raise():
    with pytest.raises(ValueError, match="`layers` is empty"):
        Chain([])
    with pytest.raises(ValueError, match="`weight_decay` must be"):
        Chain([Dense(2, 3)], weight_decay=-1.0)
    with pytest.raises(ValueError, match="`loss` must be one of"):
        Chain([Dense(2, 3)], loss="hinge")
    with pytest.raises(ValueError, match="n_classes >= 2"):
        Chain([Dense(2, 1)])
    with pytest.raises(TypeError, match="not a Layer"):
        Chain([Dense(2, 3), np.tanh])


def test_overflow_raises_sweep_error_naming_the_layer():
    net = Chain([Dense(2, 2), Dense(2, 2)]).with_targets([0])
    params = [np.full(6, 1e200), np.full(6, 1e200)]  # 3e200, then 6e400
    obj = Objective(net, x0=np.ones((1, 2)), thetas=params, wrt="theta")
    with (
        pytest.raises(SweepError, match=r"output of layer 1 \(Dense"),
        np.errstate(over="ignore", invalid="ignore"),
    ):
        obj.fun(obj.z0)
