"""Kernels for sequences without a running or terminal cost."""


def zero_running_cost(k, x, theta, p, consts, data):
    return 0.0


def zero_running_cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    return 0


def zero_terminal_cost(x, p, consts, data):
    return 0.0


def zero_terminal_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    return 0
