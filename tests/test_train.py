"""Training: update rules, reproducible mini-batch loops, L-BFGS, parameter files."""

import os

import numpy as np
import pytest

import adjoint
from adjoint import (
    SGD,
    Adam,
    Chain,
    Dense,
    Momentum,
    Objective,
    ProgressBar,
    SweepError,
    Tanh,
    init_params,
    load_params,
    save_params,
    train,
    train_lbfgs,
)

# ---- a small separable problem ----


def blobs(rng, n=120):
    """Three Gaussian blobs in 2-D with labels 0, 1, 2."""
    centres = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    y = rng.integers(0, 3, n)
    X = centres[y] + 0.5 * rng.standard_normal((n, 2))
    return X, y


def small_net(weight_decay=1e-3):
    return Chain([Dense(2, 8), Tanh(), Dense(8, 3)], weight_decay=weight_decay)


# ---- initialisation ----


def test_init_params_is_reproducible_and_seeded():
    net = small_net()
    a = init_params(net, "glorot", seed=5)
    b = init_params(net, "glorot", seed=5)
    c = init_params(net, "glorot", seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert [t.shape for t in a] == net.theta_shapes
    assert a[1].size == 0  # Tanh has no parameters


def test_init_params_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="`scheme` must be one of"):
        init_params(small_net(), "kaiming")


# ---- update rules, one step by hand ----


def test_sgd_step():
    z, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    opt = SGD(0.1)
    opt.step(z, g, opt.init_state(2))
    np.testing.assert_allclose(z, [0.95, -2.025])


def test_momentum_steps():
    z, g = np.zeros(1), np.ones(1)
    opt = Momentum(0.1, 0.9)
    state = opt.init_state(1)
    opt.step(z, g, state)  # v = 1
    opt.step(z, g, state)  # v = 1.9
    np.testing.assert_allclose(z, [-(0.1 + 0.19)])
    z = np.zeros(1)
    nesterov = Momentum(0.1, 0.9, nesterov=True)
    nesterov.step(z, g, nesterov.init_state(1))  # z -= 0.1 (g + 0.9 v), v = 1
    np.testing.assert_allclose(z, [-0.19])


def test_adam_first_step_has_learning_rate_size():
    z = np.zeros(3)
    opt = Adam(0.01)
    opt.step(z, np.array([1e-6, -3.0, 400.0]), opt.init_state(3))
    # Bias-corrected first step is η · sign(g) (up to ε)
    np.testing.assert_allclose(z, [-0.01 * 1e-6 / (1e-6 + 1e-8), 0.01, -0.01])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SGD(0.0), "`learning_rate` must be a positive"),
        (lambda: Momentum(0.1, 1.0), "`momentum` must lie in"),
        (lambda: Adam(beta2=1.0), "`beta2` must lie in"),
    ],
)
def test_bad_optimiser_settings_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---- mini-batch training ----


@pytest.mark.parametrize(
    "optimiser", [SGD(0.3), Momentum(0.05), Adam(0.03), "adam"], ids=repr
)
def test_train_reduces_the_loss(optimiser, rng):
    X, y = blobs(rng)
    net = small_net()
    params = init_params(net, seed=0)
    J0 = Objective(net.with_targets(y), x0=X, thetas=params, wrt="theta").fun(
        net.flatten(params)
    )

    res = train(net, params, X, y, optimiser=optimiser, epochs=15, batch_size=16)

    assert res.fun < 0.5 * J0
    assert res.accuracy > 0.9
    assert res.nit == 15 and res.nfev == 15 * 8
    assert res.history["loss"].shape == (15,)
    assert all(np.array_equal(a, b) for a, b in zip(res.params, net.unflatten(res.x)))


def test_train_is_reproducible_with_a_seed(rng):
    X, y = blobs(rng)
    net = small_net()
    params = init_params(net, seed=0)
    a = train(net, params, X, y, epochs=3, batch_size=10, seed=4)
    b = train(net, params, X, y, epochs=3, batch_size=10, seed=4)
    c = train(net, params, X, y, epochs=3, batch_size=10, seed=5)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    np.testing.assert_array_equal(params[0], init_params(net, seed=0)[0])  # untouched


def test_train_loss_is_the_objective_at_the_result(rng):
    X, y = blobs(rng)
    net = small_net()
    res = train(net, init_params(net), X, y, epochs=2)
    obj = Objective(net.with_targets(y), x0=X, thetas=res.params, wrt="theta")
    assert res.fun == pytest.approx(obj.fun(obj.z0), rel=1e-14)


def test_progress_is_called_once_per_epoch_with_loss_and_accuracy(rng):
    X, y = blobs(rng)
    seen = []
    train(
        small_net(),
        init_params(small_net()),
        X,
        y,
        epochs=4,
        validation=(X[:20], y[:20]),
        progress=seen.append,
    )
    assert [r.epoch for r in seen] == [1, 2, 3, 4]
    assert all(
        np.isfinite([r.fun, r.accuracy, r.val_loss, r.val_accuracy]).all() for r in seen
    )


def test_progress_can_stop_training(rng):
    X, y = blobs(rng)

    def stop_after_two(result):
        if result.epoch == 2:
            raise StopIteration

    res = train(
        small_net(), init_params(small_net()), X, y, epochs=10, progress=stop_after_two
    )
    assert res.nit == 2 and "stopped" in res.message


def test_progress_bar_shows_loss_and_accuracy(rng, capsys):
    X, y = blobs(rng)
    train(small_net(), init_params(small_net()), X, y, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "acc=" in err and "2/2" in err


def test_progress_bar_accepts_scipy_callbacks(capsys):
    from scipy.optimize import OptimizeResult

    with ProgressBar(total=1, desc="demo") as bar:
        bar(OptimizeResult(fun=0.5))
    assert "loss=0.5" in capsys.readouterr().err


def test_learning_rate_decay_is_applied_and_restored(rng):
    X, y = blobs(rng)
    opt = SGD(0.2)
    a = train(
        small_net(),
        init_params(small_net()),
        X,
        y,
        optimiser=opt,
        epochs=3,
        learning_rate_decay=0.5,
    )
    assert opt.learning_rate == 0.2
    b = train(small_net(), init_params(small_net()), X, y, optimiser=opt, epochs=3)
    assert not np.array_equal(a.x, b.x)


def test_divergence_raises_sweep_error(rng):
    X, y = blobs(rng)
    net = Chain([Dense(2, 8), Dense(8, 3)])
    with pytest.raises(SweepError, match="not finite"), np.errstate(all="ignore"):
        train(net, init_params(net), 1e150 * X, y, optimiser=SGD(1e150), epochs=3)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"optimiser": "rmsprop"}, ValueError, "`optimiser` must be"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be at least 1"),
        ({"learning_rate_decay": 1.5}, ValueError, "`learning_rate_decay`"),
        ({"progress": 3}, TypeError, "`progress` must be"),
    ],
)
def test_bad_train_arguments_raise(kwargs, error, message, rng):
    X, y = blobs(rng)
    with pytest.raises(error, match=message):
        train(small_net(), init_params(small_net()), X, y, epochs=1, **kwargs)


def test_mismatched_data_raise(rng):
    X, y = blobs(rng)
    with pytest.raises(ValueError, match="`X` holds 120 samples and `y` 119"):
        train(small_net(), init_params(small_net()), X, y[:-1])
    with pytest.raises(ValueError, match=r"`X` has shape \(120, 3\)"):
        train(small_net(), init_params(small_net()), np.ones((120, 3)), y)


# ---- L-BFGS on the same gradients ----


def test_lbfgs_converges_on_full_batch(rng):
    X, y = blobs(rng)
    net = small_net(weight_decay=1e-2)
    calls = []
    res = train_lbfgs(net, init_params(net), X, y, maxiter=200, progress=calls.append)
    obj = Objective(net.with_targets(y), x0=X, thetas=res.params, wrt="theta")
    _, g = obj.value_and_grad(obj.z0)
    assert res.success
    assert np.max(np.abs(g)) < 1e-4
    assert res.accuracy > 0.95
    assert len(calls) == res.nit == res.history["loss"].size


# ---- saving and loading ----


def test_save_and_load_round_trip(tmp_path):
    net = small_net()
    params = init_params(net, seed=3)
    path = save_params(
        tmp_path / "p.npz", params, chain=net, metadata={"epochs": 7, "note": "test"}
    )
    loaded = load_params(path, chain=net)
    assert all(np.array_equal(a, b) for a, b in zip(params, loaded))
    with np.load(path) as data:
        assert int(data["meta_epochs"]) == 7 and str(data["meta_note"]) == "test"
        assert list(data["layers"]) == net.layer_names()


def test_load_checks_the_chain(tmp_path):
    path = save_params(tmp_path / "p.npz", init_params(small_net()))
    other = Chain([Dense(2, 8), Tanh(), Dense(8, 4)])
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(8 → 4\)\) has 36"):
        load_params(path, chain=other)
    with pytest.raises(ValueError, match="holds parameters of 3 layers"):
        load_params(path, chain=Chain([Dense(2, 3)]))


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "params.npz"
    good = init_params(small_net(), seed=1)
    save_params(path, good)
    before = path.read_bytes()

    def fail_half_way(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(adjoint._train.np, "savez", fail_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_params(path, init_params(small_net(), seed=2))

    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["params.npz"]  # no temporary file left
    assert all(np.array_equal(a, b) for a, b in zip(good, load_params(path)))
