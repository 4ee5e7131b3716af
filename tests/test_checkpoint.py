"""Checkpointing: schedules against the closed-form optimum, gradients against
store-all, the per-call choice and its report, errors.

Reference problem (kernels at module level so Numba caches them): a ring of
``n`` states with a step that depends on the step index (a forcing
``θ_k cos(ω t_k)``, ``t_k = k dt``), a data misfit at most steps (NaN rows of
``data`` skip a step) and a terminal cost that depends on ``p``.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from adjoint import (
    Checkpointing,
    Objective,
    Sequence,
    SequenceBase,
    SweepError,
    _checkpoint,
    binomial_forward_steps,
    checkpointed_gradient,
    complex_step_gradient,
    relative_error,
)
from adjoint._checkpoint import (
    Advance,
    Reverse,
    Store,
    Turn,
    binomial_actions,
    binomial_beta,
    checkpointed_value,
    periodic_actions,
    store_all_actions,
)

# Every schedule runs the backward sweep's arithmetic in the store-all order,
# so the gradients agree to the last bit; the issue asks for 1e-13.
GRADIENT_RTOL = 1e-13
COMPLEX_STEP_RTOL = 1e-12
OMEGA = 0.7  # forcing frequency of the reference problem


def step_ring(k, x, theta, p, consts, out):
    n = x.shape[0]
    dt = consts[0]
    forcing = theta[0] * np.cos(OMEGA * k * dt)
    for i in range(n):
        out[i] = x[i] + dt * (p[0] * np.sin(x[(i + 1) % n]) - p[1] * x[i] + forcing)
    return 0


def step_ring_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    n = x.shape[0]
    dt = consts[0]
    c = np.cos(OMEGA * k * dt)
    for i in range(n):
        j = (i + 1) % n
        x_bar[i] += lam[i] * (1.0 - dt * p[1])
        x_bar[j] += lam[i] * dt * p[0] * np.cos(x[j])
        p_bar[0] += lam[i] * dt * np.sin(x[j])
        p_bar[1] -= lam[i] * dt * x[i]
        theta_bar[0] += lam[i] * dt * c
    return 0


def misfit(k, x, theta, p, consts, data):
    if np.isnan(data[0]):
        return 0.0 * x[0]
    return 0.5 * (x[0] - data[0]) ** 2 + 0.5 * consts[1] * theta[0] ** 2


def misfit_vjp(k, x, theta, p, consts, data, g_bar, x_bar, theta_bar, p_bar):
    if np.isnan(data[0]):
        return 0
    x_bar[0] += g_bar * (x[0] - data[0])
    theta_bar[0] += g_bar * consts[1] * theta[0]
    return 0


def final_cost(x, p, consts, data):
    return 0.5 * x[1] * x[1] + p[0] * x[2]


def final_cost_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    x_bar[1] += phi_bar * x[1]
    x_bar[2] += phi_bar * p[0]
    p_bar[0] += phi_bar * x[2]
    return 0


@functools.cache
def ring(N, n=4, running=True, terminal=True):
    """The reference sequence with ``N`` steps, its inputs and objective."""
    rng = np.random.default_rng(N)
    data = rng.standard_normal((N + 1, 1))
    data[rng.random(N + 1) < 0.3] = np.nan
    costs = {}
    if running:
        costs.update(running_cost=misfit, running_cost_vjp=misfit_vjp)
    if terminal:
        costs.update(terminal_cost=final_cost, terminal_cost_vjp=final_cost_vjp)
    seq = Sequence(
        step_ring,
        step_ring_vjp,
        n=n,
        N=N,
        m=1,
        n_p=2,
        consts=[0.05, 0.1],
        data=data,
        **costs,
    )
    x0 = np.linspace(-0.5, 0.5, n)
    thetas = np.sin(np.arange(N) / 7.0)[:, None]
    p = np.array([1.1, 0.4])
    return seq, x0, thetas, p


def store_all_gradient(N, **kw):
    seq, x0, thetas, p = ring(N, **kw)
    obj = Objective(seq, x0, thetas, p, wrt=("x0", "theta", "p"))
    return obj.value_and_grad(obj.z0)


def count(actions):
    """Steps run and the most states held by a list of actions (no sweeps)."""
    steps, top, peak = 0, 1, 1
    for action in actions:
        if isinstance(action, Advance):
            steps += action.stop - action.start
            top += 1
        elif isinstance(action, Store):
            steps += action.stop - action.start
            top += action.stop - action.start
        elif isinstance(action, Turn):
            steps += 1
        else:
            top -= action.stop - action.start
        peak = max(peak, top)
    return steps, peak


@functools.cache
def optimum_by_recursion(n_steps, s):
    """Fewest forward steps, by the recursion the closed form solves: split
    at ``m``, reverse the right part with one snapshot fewer, then the left."""
    if n_steps == 1:
        return 0
    if s == 0:
        return float("inf")
    return min(
        m + optimum_by_recursion(n_steps - m, s - 1) + optimum_by_recursion(m, s)
        for m in range(1, n_steps)
    )


# ---- closed form ----


def test_closed_form_special_cases():
    # One snapshot: advance N-1, N-2, …, 1 steps.
    for N in (1, 2, 10, 77):
        assert binomial_forward_steps(N, 1) == N * (N - 1) // 2
    # Snapshots to spare: the first sweep to x_{N-1} and nothing more.
    for N in (1, 5, 40):
        assert binomial_forward_steps(N, N - 1 or 1) == N - 1
        assert binomial_forward_steps(N, 10 * N) == N - 1
    # At N = β(s, r) every step is run r times except the β(s+1, r-1) saved.
    for s in (2, 3, 5):
        for r in (1, 2, 4):
            N = binomial_beta(s, r)
            assert binomial_forward_steps(N, s) == r * N - binomial_beta(s + 1, r - 1)


def test_closed_form_equals_the_optimal_recursion():
    for N in range(1, 41):
        for s in range(1, 7):
            assert binomial_forward_steps(N, s) == optimum_by_recursion(N, s), (N, s)


# ---- the binomial schedule reaches the optimum ----

SCHEDULE_CASES = [
    (1, 1),
    (2, 1),
    (3, 1),
    (10, 1),
    (10, 2),
    (10, 3),
    (64, 4),
    (100, 3),
    (1000, 5),
    (1000, 999),
    (5000, 10),
    (12345, 3),
    (100_000, 50),
    (100_000, 2000),
]


@pytest.mark.parametrize(("N", "s"), SCHEDULE_CASES)
def test_binomial_schedule_runs_the_fewest_steps(N, s):
    steps, peak = count(binomial_actions(N, s))

    # t(N, s) counts the first sweep to x_{N-1}; the turn adds the step to x_N.
    assert steps == binomial_forward_steps(N, s) + 1
    assert peak <= min(s, N - 1) + 1  # s snapshots and the state worked on


def test_binomial_schedule_is_optimal_for_every_small_case():
    for N in range(1, 60):
        for s in range(1, 12):
            steps, peak = count(binomial_actions(N, s))
            assert steps == binomial_forward_steps(N, s) + 1, (N, s)
            assert peak <= s + 1


@pytest.mark.parametrize(
    ("N", "s"),
    [(1, 1), (7, 1), (7, 3), (50, 2), (50, 4), (300, 3), (300, 12), (300, 299)],
)
def test_driver_recomputes_the_optimum(N, s):
    seq, x0, thetas, p = ring(N)

    stats = checkpointed_gradient(
        seq, x0, thetas, p, checkpoint=Checkpointing(n_snapshots=s)
    ).stats

    optimum = binomial_forward_steps(N, s) + 1 - N
    assert stats.recomputed_steps == optimum
    assert stats.optimal_recomputed_steps == optimum
    assert stats.forward_steps == N + optimum
    assert stats.snapshots <= s
    assert stats.peak_bytes == (stats.snapshots + 1) * x0.nbytes


def test_schedules_hold_no_more_than_they_plan():
    # store-all: N states; periodic: c snapshots + K - 1 states of an interval.
    assert count(store_all_actions(30)) == (30, 30)
    steps, peak = count(periodic_actions(100, 20))
    assert peak <= 21
    assert steps == 100 + 9 * 9  # K = 10: (c - 1)(K - 1) recomputed


# ---- gradients equal store-all ----

CHECKPOINTS = [
    Checkpointing("store_all"),
    Checkpointing("binomial", n_snapshots=1),
    Checkpointing("binomial", n_snapshots=2),
    Checkpointing("binomial", n_snapshots=5),
    Checkpointing("binomial", n_snapshots=10_000),
    Checkpointing("binomial", memory=6 * 4 * 8),
    Checkpointing("periodic", n_snapshots=40),
    Checkpointing("binomial", n_snapshots=3, storage="disk"),
]


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=repr)
@pytest.mark.parametrize("N", [1, 2, 13, 200])
def test_gradient_equals_store_all(N, checkpoint):
    if checkpoint.schedule == "periodic" and N > 100:
        checkpoint = Checkpointing("periodic", n_snapshots=4 * int(np.sqrt(N)))
    seq, x0, thetas, p = ring(N)
    J_ref, g_ref = store_all_gradient(N)
    obj = Objective(seq, x0, thetas, p, wrt=("x0", "theta", "p"), checkpoint=checkpoint)

    J, g = obj.value_and_grad(obj.z0)

    assert relative_error(g, g_ref) <= GRADIENT_RTOL
    assert J == pytest.approx(J_ref, rel=GRADIENT_RTOL)
    assert obj.last_checkpoint_stats.schedule == checkpoint.schedule


@pytest.mark.parametrize(("running", "terminal"), [(True, False), (False, True)])
def test_gradient_equals_store_all_with_one_kind_of_cost(running, terminal):
    J_ref, g_ref = store_all_gradient(120, running=running, terminal=terminal)
    seq, x0, thetas, p = ring(120, running=running, terminal=terminal)
    obj = Objective(
        seq,
        x0,
        thetas,
        p,
        wrt=("x0", "theta", "p"),
        checkpoint=Checkpointing(n_snapshots=3),
    )

    J, g = obj.value_and_grad(obj.z0)

    assert relative_error(g, g_ref) <= GRADIENT_RTOL
    assert J == pytest.approx(J_ref, rel=GRADIENT_RTOL)


def test_cost_sums_in_store_all_order():
    # The first sweep's segments carry one running sum, so J is bit for bit
    # the cost of one store-all sweep.
    seq, x0, thetas, p = ring(200)
    J_ref, _ = store_all_gradient(200)

    res = checkpointed_gradient(
        seq, x0, thetas, p, checkpoint=Checkpointing(n_snapshots=4)
    )

    assert res.J == J_ref
    assert checkpointed_value(seq, x0, thetas, p) == J_ref


def test_checkpointed_gradient_matches_complex_step():
    seq, x0, thetas, p = ring(60)
    obj = Objective(
        seq, x0, thetas, p, wrt=("x0", "p"), checkpoint=Checkpointing(n_snapshots=2)
    )

    _, reference, adjoint = complex_step_gradient(obj, obj.z0)

    assert relative_error(adjoint, reference) < COMPLEX_STEP_RTOL
    assert obj.last_checkpoint_stats.schedule == "binomial"


# ---- the per-call choice and its report ----


def test_objective_reports_store_all_by_default():
    seq, x0, thetas, p = ring(50)
    obj = Objective(seq, x0, thetas, p, wrt="p")

    obj.value_and_grad(obj.z0)

    stats = obj.last_checkpoint_stats
    assert stats.schedule == "store_all"
    assert stats.recomputed_steps == 0
    assert stats.peak_bytes == 51 * x0.nbytes


def test_value_and_grad_takes_a_checkpoint_for_one_call():
    seq, x0, thetas, p = ring(50)
    obj = Objective(seq, x0, thetas, p, wrt="p")
    _, g_ref = obj.value_and_grad(obj.z0)

    _, g = obj.value_and_grad(obj.z0, checkpoint=Checkpointing(n_snapshots=2))
    stats = obj.last_checkpoint_stats

    assert relative_error(g, g_ref) <= GRADIENT_RTOL
    assert (stats.schedule, stats.n_snapshots) == ("binomial", 2)
    assert stats.recomputed_steps == binomial_forward_steps(50, 2) + 1 - 50
    obj.value_and_grad(obj.z0)
    assert obj.last_checkpoint_stats.schedule == "store_all"
    assert "recomputed" in str(stats)


def test_memory_budget_sets_the_snapshots():
    seq, x0, thetas, p = ring(500)
    budget = 10 * x0.nbytes + 5  # ten states fit, not eleven

    stats = checkpointed_gradient(
        seq, x0, thetas, p, checkpoint=Checkpointing(memory=budget)
    ).stats

    assert stats.n_snapshots == 9
    assert stats.peak_bytes <= budget
    assert stats.recomputed_steps == binomial_forward_steps(500, 9) + 1 - 500


def test_memory_budget_reads_units():
    assert Checkpointing(memory="100 MB").memory == 100_000_000
    assert Checkpointing(memory="2GiB").memory == 2 * 2**30
    assert Checkpointing(memory=1.5e3).memory == 1500


def test_large_budget_recomputes_nothing():
    seq, x0, thetas, p = ring(200)

    stats = checkpointed_gradient(
        seq, x0, thetas, p, checkpoint=Checkpointing(memory="1 MB")
    ).stats

    assert stats.recomputed_steps == 0
    assert stats.snapshots == 199


def test_disk_snapshots_are_removed(tmp_path):
    seq, x0, thetas, p = ring(100)
    _, g_ref = store_all_gradient(100)
    checkpoint = Checkpointing(n_snapshots=4, storage="disk", directory=tmp_path)

    res = checkpointed_gradient(seq, x0, thetas, p, checkpoint=checkpoint)

    g = np.concatenate([res.grad_x0, res.grad_thetas.ravel(), res.grad_p])
    assert relative_error(g, g_ref) <= GRADIENT_RTOL
    assert res.stats.storage == "disk"
    assert os.listdir(tmp_path) == []


def test_fun_keeps_two_states_under_checkpointing():
    seq, x0, thetas, p = ring(100)
    obj = Objective(
        seq, x0, thetas, p, wrt="p", checkpoint=Checkpointing(n_snapshots=3)
    )
    J_ref, _ = store_all_gradient(100)

    assert obj.fun(obj.z0) == J_ref
    assert obj._last is None  # no stored trajectory


@pytest.mark.parametrize("checkpoint", CHECKPOINTS[1:], ids=repr)
@pytest.mark.parametrize("N", [1, 13, 200])
def test_compiled_and_generic_drivers_agree(N, checkpoint, monkeypatch):
    # Sequence runs the actions in compiled batches; every other kind through
    # the segment hooks one by one.  Both must do the same thing.
    if checkpoint.schedule == "periodic" and N > 100:
        checkpoint = Checkpointing("periodic", n_snapshots=60)
    seq, x0, thetas, p = ring(N)
    fast = checkpointed_gradient(seq, x0, thetas, p, checkpoint=checkpoint)
    monkeypatch.setattr(_checkpoint, "USE_COMPILED_DRIVER", False)

    slow = checkpointed_gradient(seq, x0, thetas, p, checkpoint=checkpoint)

    assert slow.J == fast.J
    for a, b in zip(
        (slow.grad_x0, slow.grad_thetas, slow.grad_p),
        (fast.grad_x0, fast.grad_thetas, fast.grad_p),
    ):
        np.testing.assert_array_equal(a, b)
    for name in ("snapshots", "forward_steps", "recomputed_steps", "peak_bytes"):
        assert getattr(slow.stats, name) == getattr(fast.stats, name)


@pytest.mark.parametrize("compiled", [True, False])
def test_a_failing_step_names_it_on_both_paths(compiled, monkeypatch):
    monkeypatch.setattr(_checkpoint, "USE_COMPILED_DRIVER", compiled)
    seq, x0, thetas, p = ring(40)
    with pytest.raises(SweepError, match="non-finite at step"):
        checkpointed_gradient(
            seq,
            x0,
            thetas,
            np.array([1.1, -1e306]),
            checkpoint=Checkpointing(n_snapshots=3),
        )


def test_a_schedule_of_ones_own():
    def every_tenth(N, s):
        yield from periodic_actions(N, max(s, 2 * int(np.sqrt(N))))

    seq, x0, thetas, p = ring(100)
    _, g_ref = store_all_gradient(100)

    res = checkpointed_gradient(
        seq, x0, thetas, p, checkpoint=Checkpointing(every_tenth, n_snapshots=30)
    )

    g = np.concatenate([res.grad_x0, res.grad_thetas.ravel(), res.grad_p])
    assert relative_error(g, g_ref) <= GRADIENT_RTOL
    assert res.stats.schedule == "every_tenth"


def test_a_broken_schedule_is_reported_as_a_bug():
    def skips_a_step(N, s):
        yield Store(0, N - 1)
        yield Turn()
        yield Reverse(1, N)

    seq, x0, thetas, p = ring(10)
    with pytest.raises(AssertionError, match="bug in the checkpointing schedule"):
        checkpointed_gradient(
            seq, x0, thetas, p, checkpoint=Checkpointing(skips_a_step, n_snapshots=20)
        )


# ---- errors ----


def test_zero_snapshots_points_to_store_all():
    with pytest.raises(ValueError, match="`n_snapshots` must be at least 1.*store_all"):
        Checkpointing(n_snapshots=0)


@pytest.mark.parametrize("kwargs", [{}, {"n_snapshots": 3, "memory": 10**6}])
def test_binomial_needs_snapshots_or_memory(kwargs):
    with pytest.raises(ValueError, match="needs `n_snapshots` or `memory`"):
        Checkpointing("binomial", **kwargs)


def test_store_all_takes_no_budget():
    with pytest.raises(ValueError, match="takes neither"):
        Checkpointing("store_all", memory=10**6)


@pytest.mark.parametrize("memory", ["lots", "10 parsecs", -5, 0])
def test_bad_memory_is_refused(memory):
    with pytest.raises(ValueError, match="`memory`"):
        Checkpointing(memory=memory)


def test_too_small_a_budget_says_how_many_states_fit():
    seq, x0, thetas, p = ring(10)
    with pytest.raises(ValueError, match="holds 1 state"):
        checkpointed_gradient(
            seq, x0, thetas, p, checkpoint=Checkpointing(memory=x0.nbytes + 1)
        )


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        Checkpointing("revolve-ish", n_snapshots=3)


def test_periodic_needs_enough_snapshots():
    seq, x0, thetas, p = ring(200)
    with pytest.raises(ValueError, match="periodic schedule needs at least"):
        checkpointed_gradient(
            seq, x0, thetas, p, checkpoint=Checkpointing("periodic", n_snapshots=5)
        )


def test_checkpoint_must_be_a_checkpointing():
    seq, x0, thetas, p = ring(10)
    with pytest.raises(TypeError, match="`checkpoint` must be None or"):
        Objective(seq, x0, thetas, p, checkpoint=5)


class _NoSegments(SequenceBase):
    """A sequence kind without segment hooks."""

    N = 3
    x0_shape = (1,)
    theta_shape = (3, 0)
    p_shape = (0,)

    def _validate_inputs(self, x0, thetas, p):
        return np.asarray(x0, float), np.zeros((3, 0)), np.zeros(0)

    def _forward_impl(self, x0, thetas, p):
        raise AssertionError

    def _adjoint_impl(self, traj, xs_bar, cost_weight):
        raise AssertionError

    def _tangent_impl(self, traj, x0_tan, thetas_tan, p_tan):
        raise AssertionError


def test_sequence_without_segments_says_to_store_all():
    with pytest.raises(NotImplementedError, match="checkpoint=None"):
        checkpointed_gradient(
            _NoSegments(), [1.0], checkpoint=Checkpointing(n_snapshots=2)
        )


@pytest.mark.slow
def test_benchmark_quick_mode_runs(tmp_path):
    # benchmarks/bench_checkpoint.py at N = 10^4: the rows it reports.
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(root))
    subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "bench_checkpoint.py"),
            "--quick",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=600,
    )
    rows = json.loads(out.read_text())
    assert [r["schedule"] for r in rows] == ["binomial", "store_all"]
    assert rows[0]["recomputed"] == rows[0]["optimum"]
    assert rows[0]["state_peak_mb"] <= 0.2
