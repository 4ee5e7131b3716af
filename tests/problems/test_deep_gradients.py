"""The vanishing-gradient study: plain tanh against residual networks (issue 5).

Acceptance: at depth 50 the plain network's first-layer gradient norm is
orders of magnitude below its last layer's, while the residual network's
stays within one order.  The measured ratios (seed 0, width 32) are about
6e-11 and 1.2; the bounds below leave room for other BLAS summation orders.
"""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from adjoint import Dense, Residual
from problems import deep_gradients as dg

# At least three orders of magnitude for the plain network (measured: ten)
PLAIN_RATIO_BELOW = dg.REFERENCE["plain_ratio_below"]
RESIDUAL_LOW, RESIDUAL_HIGH = dg.REFERENCE["residual_ratio_within"]


@pytest.fixture(scope="module")
def problem():
    return dg.build()


@pytest.fixture(scope="module")
def norms(problem):
    return dg.gradient_norms(problem)


def test_networks_have_depth_dense_layers():
    for depth in (2, 10, 50):
        for kind in dg.KINDS:
            net = dg.network(kind, depth)
            dense = [
                layer
                for layer in net.layers
                for layer in (layer.layers if isinstance(layer, Residual) else [layer])
                if isinstance(layer, Dense)
            ]
            assert len(dense) == depth
    assert sum(isinstance(la, Residual) for la in dg.residual_network(50).layers) == 48


def test_gradient_norm_ratios_at_depth_50(norms):
    plain = norms["plain", 50]
    residual = norms["residual", 50]
    assert plain.size == residual.size == 50

    plain_ratio = plain[0] / plain[-1]
    residual_ratio = residual[0] / residual[-1]
    print(f"depth 50: plain {plain_ratio:.2e}, residual {residual_ratio:.2f}")
    assert plain_ratio < PLAIN_RATIO_BELOW
    assert plain_ratio < 1e-8  # measured 6e-11: about ten orders of magnitude
    assert RESIDUAL_LOW < residual_ratio < RESIDUAL_HIGH
    # Within one order across every layer of the residual network
    assert residual.max() / residual.min() < 10.0


def test_plain_ratio_falls_with_depth_residual_does_not(norms, problem):
    plain = [norms["plain", d][0] / norms["plain", d][-1] for d in problem.depths]
    residual = [
        norms["residual", d][0] / norms["residual", d][-1] for d in problem.depths
    ]
    assert np.all(np.diff(np.log10(plain)) < -1.0)  # more than an order per step
    assert plain[-1] < 1e-20  # depth 100
    assert all(RESIDUAL_LOW < r < RESIDUAL_HIGH for r in residual)


def test_norms_match_objective_gradient(problem):
    import adjoint

    net = dg.plain_network(5)
    params = adjoint.init_params(net, dg.INIT, seed=0)
    X, y = problem.batch
    obj = adjoint.Objective(net.with_targets(y), x0=X, thetas=params, wrt="theta")
    grads = net.unflatten(obj.grad(obj.z0))
    expected = [np.linalg.norm(g) for g in grads if g.size]
    np.testing.assert_allclose(dg.layer_gradient_norms(net, params, X, y), expected)


def test_gradient_checks_pass(problem):
    report = dg.check(problem)
    assert report.passed, str(report)


def test_bad_depth_raises():
    with pytest.raises(ValueError, match="`depth` must be an integer of at least 2"):
        dg.plain_network(1)
    with pytest.raises(ValueError, match="`kind` must be"):
        dg.network("dense", 10)


@pytest.mark.slow
def test_training_at_depth_50_plain_stalls_residual_learns(problem):
    result = dg.solve(problem, epochs=8)
    plain, residual = result.training["plain"], result.training["residual"]

    # The plain network stays at chance: loss ln 10, accuracy about 1/10
    assert plain.history["loss"][-1] > 2.2
    assert plain.history["val_accuracy"][-1] < 0.2
    # The residual network learns
    assert residual.history["loss"][-1] < 0.3
    assert residual.history["val_accuracy"][-1] > 0.9
    assert result.ratios["plain", 50] < PLAIN_RATIO_BELOW

    fig = dg.plot(problem, result)
    ax_norms, ax_ratio, ax_train = fig.get_axes()
    assert ax_norms.get_yscale() == "log" and len(ax_norms.get_lines()) == 8
    assert len(ax_ratio.get_lines()) == 3  # two families and the line at 1
    assert len(ax_train.get_lines()) == 4
    plt.close(fig)
