"""ODE systems defined three ways: symbolic, hand-written kernels, rhs only.

The three constructors must produce the same right-hand side, Jacobian
products and gradients (to 1e-10, DESIGN.md section 5); hand-written kernels
are checked against complex step on request; bad kernels get clear errors.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import ode_systems as systems
from adjoint import (
    Objective,
    ODESequence,
    ODESystem,
    complex_step_gradient,
    costs_from_sympy,
    observation_cost,
    relative_error,
)
from adjoint._integrators import _kernels as ik
from adjoint._systems_codegen import cache_dir

# DESIGN.md section 5: the three ways agree to 1e-10.
THREE_WAYS_RTOL = 1e-10
WAYS = ("kernels", "sympy", "rhs")

MODELS = {
    "lotka_volterra": (systems.lotka_volterra, 2, 4, 1),
    "van_der_pol": (systems.van_der_pol, 2, 1, 1),
    "lorenz96": (lambda way: systems.lorenz96(8, way), 8, 1, 0),
}


@pytest.fixture(scope="module")
def three_ways():
    return {
        name: {way: make(way) for way in WAYS}
        for name, (make, *_sizes) in MODELS.items()
    }


# ---- the three ways agree ----


@pytest.mark.parametrize("model", list(MODELS))
def test_three_ways_give_the_same_products(three_ways, model, rng):
    _, n, n_p, n_u = MODELS[model]
    t = 0.7
    x, p, u = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n_p), rng.normal(size=n_u)
    f_bar = rng.normal(size=n)
    tans = rng.normal(size=n), rng.normal(size=n_p), rng.normal(size=n_u)
    ref = three_ways[model]["kernels"]
    for way in ("sympy", "rhs"):
        system = three_ways[model][way]
        assert relative_error(system.f(t, x, p, u), ref.f(t, x, p, u)) < 1e-14
        for got, want in zip(system.vjp(t, x, p, u, f_bar), ref.vjp(t, x, p, u, f_bar)):
            assert relative_error(got, want) < THREE_WAYS_RTOL
        assert (
            relative_error(system.jvp(t, x, p, u, *tans), ref.jvp(t, x, p, u, *tans))
            < THREE_WAYS_RTOL
        )
        assert (
            relative_error(system.jacobian_x(t, x, p, u), ref.jacobian_x(t, x, p, u))
            < THREE_WAYS_RTOL
        )


@pytest.mark.parametrize("scheme", ["rk4", "backward_euler", "implicit_midpoint"])
@pytest.mark.parametrize("model", ["lotka_volterra", "van_der_pol"])
def test_three_ways_give_the_same_gradient(three_ways, model, scheme):
    _, n, n_p, n_u = MODELS[model]
    N = 16
    obs = observation_cost([8, 16], [[1.0, 0.5], [0.9, 0.6]], N=N)
    results = {}
    for way in WAYS:
        seq = ODESequence(
            three_ways[model][way], scheme=scheme, dt=0.1, N=N, observations=obs
        )
        us = 0.1 * np.cos(np.arange(N))[:, None]
        obj = Objective(
            seq,
            x0=[1.2, 0.4],
            thetas=us,
            p=np.linspace(0.8, 1.1, n_p),
            wrt=("x0", "theta", "p"),
        )
        results[way] = obj.value_and_grad(obj.z0)
    J_ref, g_ref = results["kernels"]
    for way in ("sympy", "rhs"):
        J, g = results[way]
        assert J == pytest.approx(J_ref, rel=THREE_WAYS_RTOL)
        assert relative_error(g, g_ref) < THREE_WAYS_RTOL


def test_lorenz96_three_ways_give_the_same_gradient(three_ways):
    grads = []
    for way in WAYS:
        seq = ODESequence(
            three_ways["lorenz96"][way],
            scheme="dopri5",
            dt=0.01,
            N=30,
            observations=observation_cost([30], [np.ones(8)], N=30),
        )
        x0 = 8.0 + np.sin(np.arange(8.0))
        obj = Objective(seq, x0=x0, p=[8.0], wrt=("x0", "p"))
        grads.append(obj.grad(obj.z0))
    assert relative_error(grads[1], grads[0]) < THREE_WAYS_RTOL
    assert relative_error(grads[2], grads[0]) < THREE_WAYS_RTOL


def test_products_from_vjp_rows_match_the_kernels(rng):
    """Robertson has no JVP kernel: its JVP comes from rows of the VJP."""
    system = systems.robertson()
    assert system.modes[1] == ik.MODE_VIA_VJP and system.modes[2] == ik.MODE_KERNEL
    x, p = np.array([0.9, 3e-5, 0.1]), np.array([0.04, 3e7, 1e4])
    jx, jp, _ = system.jacobians(0.0, x, p)
    v, w = rng.normal(size=3), rng.normal(size=3)
    assert relative_error(system.jvp(0.0, x, p, None, v, w), jx @ v + jp @ w) < 1e-14
    assert system.check_kernels(0.0, x, p)["rhs_jac_x"] < 1e-12


# ---- hand-written kernels checked on first use ----


def vjp_van_der_pol_wrong(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    x_bar[0] += f_bar[1] * (-2.0 * p[0] * x[0] * x[1] + 1.0)  # sign slip: -1.0
    x_bar[1] += f_bar[0] + f_bar[1] * p[0] * (1.0 - x[0] * x[0])
    p_bar[0] += f_bar[1] * (1.0 - x[0] * x[0]) * x[1]
    u_bar[0] += f_bar[1]
    return 0


def rhs_not_generic(t, x, p, u, out):
    out[0] = math.exp(-p[0] * x[0])
    return 0


def rhs_writes_outside(t, x, p, u, out):
    out[0] = x[0]
    out[1] = x[1]
    out[2] = 0.0
    return 0


def rhs_leaves_a_gap(t, x, p, u, out):
    out[0] = p[0] * x[1]
    return 0


def test_check_on_first_use_names_the_wrong_component():
    system = ODESystem.from_kernels(
        systems.rhs_van_der_pol, vjp_van_der_pol_wrong, n=2, n_p=1, n_u=1, check=True
    )
    seq = ODESequence(system, scheme="rk4", dt=0.1, N=3)
    obj = Objective(seq, x0=[1.0, 0.5], p=[1.0])
    with pytest.raises(ValueError, match=r"rhs_vjp kernel .* x_bar\[0\]"):
        obj.fun(obj.z0)


def test_check_kernels_passes_for_correct_kernels(three_ways):
    errors = three_ways["lotka_volterra"]["kernels"].check_kernels(
        0.3, [1.0, 0.5], [1.0, 0.8, 0.6, 0.9], [0.1]
    )
    assert set(errors) == {"rhs_vjp", "rhs_jvp", "rhs_jac_x"}
    assert max(errors.values()) < 1e-13


def test_check_needs_a_generic_rhs():
    system = ODESystem.from_kernels(
        rhs_not_generic, vjp_van_der_pol_wrong, n=1, n_p=1, n_u=1
    )
    with pytest.raises(TypeError, match="generically"):
        system.check_kernels(0.0, [1.0], [1.0], [0.0])


def test_rhs_only_needs_a_generic_rhs():
    with pytest.raises(TypeError, match="rhs_complex.*complex128"):
        ODESystem.from_rhs(rhs_not_generic, n=1, n_p=1)


@pytest.mark.parametrize(
    "rhs, match",
    [
        (rhs_writes_outside, "indexed outside its arrays"),
        (rhs_leaves_a_gap, r"left out\[1\] unwritten"),
    ],
)
def test_rhs_writing_the_wrong_shape_raises(rhs, match):
    system = ODESystem.from_rhs(rhs, n=2, n_p=1)
    seq = ODESequence(system, dt=0.1, N=2)
    with pytest.raises(ValueError, match=match):
        Objective(seq, x0=[1.0, 1.0], p=[1.0]).fun(np.array([1.0]))


def test_system_needs_a_vjp():
    with pytest.raises(ValueError, match="from_rhs"):
        ODESystem.from_kernels(systems.rhs_van_der_pol, None, n=2, n_p=1, n_u=1)


def test_system_evaluation_checks_shapes(three_ways):
    system = three_ways["van_der_pol"]["kernels"]
    with pytest.raises(ValueError, match=r"`x` has shape \(3,\); the system has n = 2"):
        system.f(0.0, [1.0, 2.0, 3.0], [1.0], [0.0])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"bandwidth": (1,)}, TypeError, "pair"),
        ({"bandwidth": (-1, 1)}, ValueError, "non-negative"),
        ({"jac_sparsity": np.ones((3, 3))}, ValueError, r"must have shape \(2, 2\)"),
        (
            {"bandwidth": (1, 1), "jac_sparsity": np.ones((2, 2))},
            ValueError,
            "not both",
        ),
    ],
)
def test_bad_sparsity_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        ODESystem.from_rhs(systems.rhs_van_der_pol, n=2, n_p=1, n_u=1, **kwargs)


# ---- symbolic systems and costs ----


def test_sympy_source_is_cached_on_disk(three_ways):
    system = three_ways["van_der_pol"]["sympy"]
    path = Path(system.source_path)
    assert path.parent == cache_dir()
    text = path.read_text()
    for kind in ("rhs", "rhs_vjp", "rhs_jvp", "rhs_jac_x"):
        assert f"def {kind}(" in text


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ADJOINT_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path


def rhs_powers(t, x, p, u, out):
    out[0] = p[0] * x[0] * (1.0 - x[0] / (p[1] * p[1])) - x[1] ** 3 / x[0] ** 2
    out[1] = x[0] / (1.0 + x[1] * x[1]) - p[0] / x[1] ** 3
    return 0


def test_sympy_prints_powers_in_quotients_correctly(rng):
    # Regression: x/K**2 was once printed as x/K*K.
    x1, x2, r, K = sp.symbols("x1 x2 r K")
    f = [r * x1 * (1 - x1 / K**2) - x2**3 / x1**2, x1 / (1 + x2**2) - r / x2**3]
    symbolic = ODESystem.from_sympy(f, [x1, x2], [r, K])
    reference = ODESystem.from_rhs(rhs_powers, n=2, n_p=2)
    x, p = rng.uniform(0.5, 1.5, 2), rng.uniform(0.5, 1.5, 2)
    assert relative_error(symbolic.f(0.0, x, p), reference.f(0.0, x, p)) < 1e-14
    for got, want in zip(symbolic.jacobians(0.0, x, p), reference.jacobians(0.0, x, p)):
        assert relative_error(got, want) < THREE_WAYS_RTOL


def test_sympy_wrong_count_raises():
    x, y, a = sp.symbols("x y a")
    with pytest.raises(ValueError, match="one expression per state"):
        ODESystem.from_sympy([a * x], [x, y], [a])


def test_sympy_undeclared_symbol_raises():
    x, a, b = sp.symbols("x a b")
    with pytest.raises(ValueError, match="uses symbol.* b"):
        ODESystem.from_sympy([a * x + b], [x], [a])


def test_sympy_costs_give_their_cost_and_an_exact_gradient(three_ways):
    x1, x2, a, b, c, d, h, y1, y2 = sp.symbols("x1 x2 a b c d h y1 y2")
    misfit = ((x1 - y1) ** 2 + (x2 - y2) ** 2) / 2
    costs = costs_from_sympy(
        [x1, x2],
        [a, b, c, d],
        [h],
        data=[y1, y2],
        running=misfit + h**2 / 10,
        terminal=misfit,
    )
    N = 10
    data = np.zeros((N + 1, 2))
    data[5], data[N] = [0.9, 0.6], [1.1, 0.5]
    system = three_ways["lotka_volterra"]["kernels"]
    us = 0.1 + 0.01 * np.arange(N)[:, None]
    seq = ODESequence(system, scheme="heun", dt=0.1, N=N, data=data, **costs)
    obj = Objective(
        seq, x0=[1.0, 0.5], thetas=us, p=[1.0, 0.8, 0.6, 0.9], wrt=("x0", "theta", "p")
    )
    J, g = obj.value_and_grad(obj.z0)
    _, ref, adj = complex_step_gradient(obj, obj.z0, max_directions=8)
    assert relative_error(adj, ref) < 1e-12
    # The misfit at every step (data rows are zero off 5 and N) plus ∑ u²/10.
    traj = obj.trajectory(obj.z0)
    expected = 0.5 * np.sum((traj.xs - data) ** 2) + np.sum(us**2) / 10
    assert J == pytest.approx(expected, rel=1e-13)


def test_sympy_costs_need_a_cost():
    x = sp.Symbol("x")
    with pytest.raises(ValueError, match="running"):
        costs_from_sympy([x], [])


# ---- a second process does not compile again ----

CACHE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {tests!r})
    start = time.perf_counter()
    import numpy as np
    import ode_systems as systems
    from adjoint import ODESequence, Objective, observation_cost
    from adjoint._integrators import _kernels as ik
    obs = observation_cost([5, 10], [[1.0, 0.5], [0.9, 0.6]], N=10)
    compiled = 0
    for way in ("kernels", "sympy", "rhs"):
        system = systems.lotka_volterra(way)
        for kernel in (system.rhs, system.rhs_vjp, system.rhs_jvp,
                       system.rhs_jac_x, system.rhs_complex):
            if kernel is not None:
                compiled += kernel.cfunc.cache_hits == 0
        for scheme in ("rk4", "backward_euler"):
            seq = ODESequence(system, scheme=scheme, dt=0.1, N=10, observations=obs)
            obj = Objective(seq, x0=[1.0, 0.5], thetas=np.zeros((10, 1)),
                            p=[1.0, 0.8, 0.6, 0.9], wrt=("x0", "theta", "p"))
            obj.value_and_grad(obj.z0)
            obj.jvp(obj.z0, np.ones(obj.size))
    for sweep in (ik.rk_forward, ik.rk_adjoint, ik.rk_tangent, ik.implicit_forward,
                  ik.implicit_adjoint, ik.implicit_tangent):
        compiled += sum(sweep.stats.cache_misses.values())
    print(json.dumps({{"compiled": int(compiled),
                       "seconds": time.perf_counter() - start}}))
    """
)


@pytest.mark.slow
def test_second_process_does_not_recompile(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(CACHE_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=600,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[1]["compiled"] == 0, runs
