"""The estimation layer on synthetic data whose true parameters are known."""

import numpy as np
import pytest

from adjoint import ODESystem, ParameterEstimation, relative_error, taylor_test
from adjoint._check import finite_difference_gradient

TRUE_RATE, TRUE_CAPACITY = 0.9, 50.0
FD_RTOL = 1e-6  # central differences of a smooth misfit, step 1e-6


def rhs_logistic(t, x, p, u, out):
    out[0] = p[0] * x[0] * (1.0 - x[0] / p[1])
    return 0


@pytest.fixture(scope="module")
def logistic():
    return ODESystem.from_rhs(rhs_logistic, n=1, n_p=2)


def _data(t, rng=None, noise=0.0):
    y = TRUE_CAPACITY / (1.0 + (TRUE_CAPACITY - 1.0) * np.exp(-TRUE_RATE * t))
    if rng is not None:
        y = y * np.exp(noise * rng.standard_normal(y.shape))
    return y


def test_recovers_known_parameters_from_exact_data(logistic):
    t = np.arange(10.0)
    est = ParameterEstimation(
        logistic, t, _data(t), x0=[1.0], p=[0.5, 30.0], steps_per_interval=40
    )
    fit = est.fit()
    np.testing.assert_allclose(fit.x, [TRUE_RATE, TRUE_CAPACITY], rtol=1e-6)


def test_fitted_noise_scale_matches_the_noise(logistic, rng):
    t = np.linspace(0, 12, 200)
    noise = 0.05
    est = ParameterEstimation(
        logistic,
        t,
        _data(t, rng, noise),
        x0=[1.0],
        p=[0.5, 30.0],
        scale="log",
        fit_noise=True,
    )
    fit = est.fit()
    sigma = fit.x[-1]
    assert abs(sigma - noise) < 4 * noise / np.sqrt(2 * t.size)
    # The noise scale's standard error is σ/√(2n).
    np.testing.assert_allclose(fit.stderr[-1], sigma / np.sqrt(2 * t.size), rtol=1e-9)
    # The rates lie within three standard errors of the truth.
    assert np.all(np.abs(fit.x[:2] - [TRUE_RATE, TRUE_CAPACITY]) < 3 * fit.stderr[:2])


@pytest.mark.parametrize("fit_noise", [False, True])
@pytest.mark.parametrize("scale", ["raw", "log"])
def test_gradient_in_z_matches_finite_differences_and_taylor(
    logistic, rng, scale, fit_noise
):
    t = np.linspace(0, 8, 9)
    est = ParameterEstimation(
        logistic,
        t,
        _data(t, rng, 0.1),
        x0=[2.0],
        p=[0.7, 40.0],
        fit_x0=True,
        scale=scale,
        fit_noise=fit_noise,
    )
    z = est.z_from_values(est.x0, est.p) + 0.05
    _, ref, adj = finite_difference_gradient(est, z)
    assert relative_error(adj, ref) < FD_RTOL
    assert taylor_test(est, z).min_order > 1.9


def test_off_grid_observations_warn_and_use_nearest_step(logistic):
    t = np.array([0.0, 1.0, 2.03, 3.0])
    with pytest.warns(UserWarning, match="nearest grid step"):
        est = ParameterEstimation(
            logistic, t, _data(t), x0=[1.0], p=[0.9, 50.0], dt=0.1
        )
    np.testing.assert_array_equal(est.obs_steps, [0, 10, 20, 30])


def test_weights_scale_the_cost(logistic):
    t = np.arange(5.0)
    y = _data(t) * 1.1
    one = ParameterEstimation(logistic, t, y, x0=[1.0], p=[0.9, 50.0])
    three = ParameterEstimation(logistic, t, y, x0=[1.0], p=[0.9, 50.0], weights=[3.0])
    z = one.z_from_values(one.x0, one.p)
    np.testing.assert_allclose(three.fun(z), 3.0 * one.fun(z), rtol=1e-14)


@pytest.mark.parametrize(
    "kwargs, exception, phrase",
    [
        ({"t_obs": [0.0, 2.0, 1.0]}, ValueError, "increase strictly"),
        ({"y_obs": [1.0, 2.0]}, ValueError, "one row per observation"),
        ({"scale": "log", "y_obs": [1.0, -2.0, 3.0]}, ValueError, "positive"),
        ({"scale": "cubic"}, ValueError, "`scale`"),
        ({"p": [0.5, -1.0]}, ValueError, "must be positive"),
        ({"p": [0.5]}, ValueError, "`p` has shape"),
        ({"observed": [3]}, ValueError, "`observed`"),
        ({"fit_p": [5]}, ValueError, "`fit_p` holds index 5"),
        ({"dt": -0.1}, ValueError, "`dt`"),
        ({"weights": [0.0]}, ValueError, "`weights`"),
    ],
)
def test_bad_input_is_named(logistic, kwargs, exception, phrase):
    args = {
        "t_obs": [0.0, 1.0, 2.0],
        "y_obs": [1.0, 2.0, 3.0],
        "x0": [1.0],
        "p": [0.5, 30.0],
    }
    args.update(kwargs)
    with pytest.raises(exception, match=phrase):
        ParameterEstimation(logistic, args.pop("t_obs"), args.pop("y_obs"), **args)


def test_more_columns_than_states_is_named(logistic):
    with pytest.raises(ValueError, match="`y_obs` has 2 columns"):
        ParameterEstimation(
            logistic, [0.0, 1.0, 2.0], np.ones((3, 2)), x0=[1.0], p=[0.5, 30.0]
        )


def test_all_missing_observations_are_refused(logistic):
    with pytest.raises(ValueError, match="cannot determine"):
        ParameterEstimation(
            logistic, [0.0, 1.0, 2.0], [np.nan] * 3, x0=[1.0], p=[0.5, 30.0]
        )


@pytest.mark.parametrize("method", ["BFGS", "Nelder-Mead"])
def test_other_methods_reach_the_same_fit(logistic, method):
    t = np.arange(10.0)
    est = ParameterEstimation(logistic, t, _data(t), x0=[1.0], p=[0.5, 30.0])
    fit = est.fit(
        method=method,
        options={"xatol": 1e-10, "fatol": 1e-14} if method == "Nelder-Mead" else None,
    )
    np.testing.assert_allclose(fit.x, [TRUE_RATE, TRUE_CAPACITY], rtol=1e-4)


def test_unknown_method_is_named(logistic):
    t = np.arange(5.0)
    est = ParameterEstimation(logistic, t, _data(t), x0=[1.0], p=[0.5, 30.0])
    with pytest.raises(ValueError, match="`method`"):
        est.fit(method="bogus")


def test_check_gradients_at_the_fit(logistic, rng):
    # Noisy data, so the misfit and its gradient are not zero at the fit.
    t = np.arange(8.0)
    est = ParameterEstimation(logistic, t, _data(t, rng, 0.1), x0=[1.0], p=[0.5, 30.0])
    fit = est.fit()
    report = est.check_gradients(fit.z)
    assert report.passed, str(report)
