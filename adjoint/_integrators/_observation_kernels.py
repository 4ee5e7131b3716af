"""Least-squares observation cost kernels (complex-safe).

The data row handed to these kernels holds, for ``q`` observed quantities,
``[y_1 … y_q, w_1 … w_q, j_1 … j_q]``: observed values, weights (0 where
nothing is observed at this step) and the state component each one observes
(as floats).  The misfit is ``g = ½ Σ_i w_i (x[j_i] − y_i)²``, or with the log
variants ``g = ½ Σ_i w_i (log x[j_i] − log y_i)²``.  Branches read only the
data row, so the kernels run on complex128 states.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def _misfit(x, data, log):
    q = data.shape[0] // 3
    g = 0.0
    for i in range(q):
        w = data[q + i]
        if w != 0.0:
            j = int(data[2 * q + i])
            if log:
                r = np.log(x[j]) - np.log(data[i])
            else:
                r = x[j] - data[i]
            g += 0.5 * w * r * r
    return g


@njit(cache=True)
def _misfit_vjp(x, data, log, g_bar, x_bar):
    q = data.shape[0] // 3
    for i in range(q):
        w = data[q + i]
        if w != 0.0:
            j = int(data[2 * q + i])
            if log:
                x_bar[j] += g_bar * w * (np.log(x[j]) - np.log(data[i])) / x[j]
            else:
                x_bar[j] += g_bar * w * (x[j] - data[i])
    return 0


def observation_running_cost(k, x, theta, p, consts, data):
    return _misfit(x, data, False)


def observation_running_cost_vjp(
    k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar
):
    return _misfit_vjp(x, data, False, g_bar, x_bar)


def observation_terminal_cost(x, p, consts, data):
    return _misfit(x, data, False)


def observation_terminal_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    return _misfit_vjp(x, data, False, phi_bar, x_bar)


def log_observation_running_cost(k, x, theta, p, consts, data):
    return _misfit(x, data, True)


def log_observation_running_cost_vjp(
    k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar
):
    return _misfit_vjp(x, data, True, g_bar, x_bar)


def log_observation_terminal_cost(x, p, consts, data):
    return _misfit(x, data, True)


def log_observation_terminal_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    return _misfit_vjp(x, data, True, phi_bar, x_bar)
