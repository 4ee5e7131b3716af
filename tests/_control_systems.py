"""Small hand-written sequences shared by test_control.py and test_constraints.py.

A damped pendulum stepped by explicit Euler on the scaled time ``s ∈ [0, 1]``
with a free final time: ``x = (θ, ω)``, ``u`` a torque, ``p = (T, b)``,

    x_{k+1} = x_k + h f(x_k, u_k),   h = T / N,
    f(x, u) = (ω, u - b ω - sin θ),
    J = Σ_k h u_k².

The kernels are complex-safe (arithmetic and ``sin``/``cos`` only), so the
complex-step checks run through them.
"""

import functools
import math

import numpy as np

import adjoint
from adjoint.kernels import Kernel


def _step(k, x, theta, p, consts, out):
    h = p[0] * consts[0]
    out[0] = x[0] + h * x[1]
    out[1] = x[1] + h * (theta[0] - p[1] * x[1] - np.sin(x[0]))
    return 0


def _step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    ds = consts[0]
    h = p[0] * ds
    f0 = x[1]
    f1 = theta[0] - p[1] * x[1] - np.sin(x[0])
    x_bar[0] += lam[0] - h * np.cos(x[0]) * lam[1]
    x_bar[1] += h * lam[0] + (1.0 - h * p[1]) * lam[1]
    theta_bar[0] += h * lam[1]
    p_bar[0] += ds * (f0 * lam[0] + f1 * lam[1])
    p_bar[1] += -h * x[1] * lam[1]
    return 0


def _step_jvp(k, x, theta, p, consts, x_tan, theta_tan, p_tan, out):
    ds = consts[0]
    h = p[0] * ds
    f0 = x[1]
    f1 = theta[0] - p[1] * x[1] - np.sin(x[0])
    out[0] = x_tan[0] + h * x_tan[1] + ds * f0 * p_tan[0]
    out[1] = (
        x_tan[1]
        + h
        * (theta_tan[0] - p[1] * x_tan[1] - p_tan[1] * x[1] - np.cos(x[0]) * x_tan[0])
        + ds * f1 * p_tan[0]
    )
    return 0


def _cost(k, x, theta, p, consts, data):
    return p[0] * consts[0] * theta[0] * theta[0]


def _cost_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    theta_bar[0] += g_bar * 2.0 * p[0] * consts[0] * theta[0]
    p_bar[0] += g_bar * consts[0] * theta[0] * theta[0]
    return 0


@functools.cache
def _kernels():
    return (
        Kernel(_step, "step"),
        Kernel(_step_vjp, "step_vjp"),
        Kernel(_step_jvp, "step_jvp"),
        Kernel(_cost, "running_cost"),
        Kernel(_cost_vjp, "running_cost_vjp"),
    )


def pendulum_sequence(N: int) -> adjoint.Sequence:
    """The Euler pendulum over ``N`` steps of the scaled time."""
    step, step_vjp, step_jvp, cost, cost_vjp = _kernels()
    return adjoint.Sequence(
        step,
        step_vjp,
        step_jvp,
        n=2,
        N=N,
        m=1,
        n_p=2,
        consts=[1.0 / max(N, 1)],
        running_cost=cost,
        running_cost_vjp=cost_vjp,
    )


def pendulum_problem(N=20, *, T=3.0, damping=0.1, constraints=(), **kwargs):
    """A ControlProblem on the Euler pendulum with a free final time p[0]."""
    kwargs.setdefault("free_p", (0,))
    kwargs.setdefault("final_time", 0)
    return adjoint.ControlProblem(
        pendulum_sequence(N),
        [0.0, 0.0],
        p=[T, damping],
        constraints=constraints,
        **kwargs,
    )


PI = math.pi
