"""Homogeneous sequences: one step kernel repeated ``N`` times in a compiled loop.

This is the sequence kind for anything whose state keeps its width from step
to step (an integrator, a recurrent map, a control problem).  The user brings
kernels (see :mod:`adjoint.kernels`); this module validates inputs, allocates,
calls the compiled sweeps of :mod:`adjoint._sweeps_kernels` and turns their
status codes into errors that name the step.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _sweeps_kernels as sk
from . import _validate
from ._errors import SweepError
from ._fastcall import fast
from ._kernel_types import STATUS_NONFINITE
from ._sequence import SequenceBase, Trajectory
from ._zero_kernels import (
    zero_running_cost,
    zero_running_cost_vjp,
    zero_terminal_cost,
    zero_terminal_cost_vjp,
)
from .kernels import Kernel, as_kernel

# Sweeps called through their compiled entry points after the first call of
# each argument kind (see adjoint._fastcall).
_forward_sweep = fast(sk.forward_sweep)
_adjoint_sweep = fast(sk.adjoint_sweep)
_tangent_sweep = fast(sk.tangent_sweep)


@functools.cache
def _zero_kernels():
    return (
        Kernel(zero_running_cost, "running_cost"),
        Kernel(zero_running_cost_vjp, "running_cost_vjp"),
        Kernel(zero_terminal_cost, "terminal_cost"),
        Kernel(zero_terminal_cost_vjp, "terminal_cost_vjp"),
    )


class Sequence(SequenceBase):
    """A homogeneous state-transition sequence built from user kernels.

    The sequence is ``x_{k+1} = F(k, x_k, θ_k, p)`` for ``k = 0 … N-1`` with cost
    ``J = Φ(x_N, p) + Σ_k g(k, x_k, θ_k, p)``.  As a plain Python loop, a
    forward sweep is::

        xs[0] = x0
        J = 0
        for k in range(N):
            J += running_cost(k, xs[k], thetas[k], p, consts, data[k])
            step(k, xs[k], thetas[k], p, consts, xs[k + 1])
        J += terminal_cost(xs[N], p, consts, data[N])

    Parameters
    ----------
    step, step_vjp : Kernel or function
        ``F`` and its vector-Jacobian product (see :mod:`adjoint.kernels` for
        the argument conventions).  Plain functions are compiled.
    step_jvp : Kernel or function, optional
        The tangent of ``F``; needed for forward mode only.
    n : int
        State size.
    N : int
        Number of steps.
    m : int, optional
        Size of each per-step parameter ``θ_k`` (default 0).
    n_p : int, optional
        Size of the shared parameter ``p`` (default 0).
    consts : array_like, optional
        Constants handed to every kernel (a step size, say); not unknowns.
    data : array_like, shape (N + 1, q), optional
        Per-step data handed to the cost kernels (row ``k`` at step ``k``, row
        ``N`` to the terminal cost), e.g. observations.
    running_cost, running_cost_vjp, terminal_cost, terminal_cost_vjp : optional
        Cost kernels; a missing pair means that part of the cost is zero.
    probe : bool, optional
        Run each kernel once in plain Python on the first sweep, with
        bounds-checked arrays, so that a kernel writing outside its output or
        leaving part of it unwritten gets a clear error (default True).
    store_lams : bool, optional
        Keep every adjoint state ``λ_k`` in ``trajectory.extra['lams']`` after
        an adjoint sweep (default False: only ``λ_0`` is kept, which saves an
        ``(N + 1, n)`` array per gradient).

    Raises
    ------
    ValueError
        For sizes that do not fit together (the message names the argument).
    TypeError
        For a kernel that does not compile with its signature.

    Examples
    --------
    A logistic map with its parameter as the unknown:

    >>> import numpy as np
    >>> from adjoint import Sequence, Objective
    >>> def step(k, x, theta, p, consts, out):
    ...     out[0] = p[0] * x[0] * (1.0 - x[0])
    ...     return 0
    >>> def step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    ...     x_bar[0] += p[0] * (1.0 - 2.0 * x[0]) * lam[0]
    ...     p_bar[0] += x[0] * (1.0 - x[0]) * lam[0]
    ...     return 0
    >>> def phi(x, p, consts, data):
    ...     return x[0]
    >>> def phi_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    ...     x_bar[0] += phi_bar
    ...     return 0
    >>> seq = Sequence(step, step_vjp, n=1, N=3, n_p=1,
    ...                terminal_cost=phi, terminal_cost_vjp=phi_vjp)
    >>> obj = Objective(seq, x0=[0.2], p=[2.5], wrt="p")
    >>> J, grad = obj.value_and_grad(obj.z0)
    >>> round(J, 6), round(float(grad[0]), 6)
    (0.6, 0.08)
    """

    def __init__(
        self,
        step,
        step_vjp,
        step_jvp=None,
        *,
        n: int,
        N: int,
        m: int = 0,
        n_p: int = 0,
        consts=(),
        data=None,
        running_cost=None,
        running_cost_vjp=None,
        terminal_cost=None,
        terminal_cost_vjp=None,
        probe: bool = True,
        store_lams: bool = False,
    ):
        self.n = _validate.positive_int("n", n)
        self.N = _validate.positive_int("N", N)
        self.m = _validate.nonnegative_int("m", m)
        self.n_p = _validate.nonnegative_int("n_p", n_p)
        self.x0_shape = (self.n,)
        self.theta_shape = (self.N, self.m)
        self.p_shape = (self.n_p,)
        self.consts = _validate.real_array("consts", np.atleast_1d(consts)).ravel()
        if data is None:
            data = np.zeros((self.N + 1, 0))
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] != self.N + 1:
            raise ValueError(
                f"`data` has shape {data.shape}; the sequence has N = {self.N} "
                f"steps, so `data` must have shape ({self.N + 1}, q), one row per "
                "state."
            )
        # Data may hold NaN as a "no observation" marker a cost kernel skips,
        # so only infinities are refused here.
        if np.isinf(data).any():
            row, col = np.argwhere(np.isinf(data))[0]
            raise ValueError(
                f"`data` holds an infinite value at row {row}, column {col}."
            )
        self.data = np.ascontiguousarray(data)

        self.step = as_kernel(step, "step")
        self.step_vjp = as_kernel(step_vjp, "step_vjp")
        self.step_jvp = None if step_jvp is None else as_kernel(step_jvp, "step_jvp")
        zero = _zero_kernels()
        self.running_cost, self.running_cost_vjp = _cost_pair(
            "running_cost", running_cost, running_cost_vjp, zero[0], zero[1]
        )
        self.terminal_cost, self.terminal_cost_vjp = _cost_pair(
            "terminal_cost", terminal_cost, terminal_cost_vjp, zero[2], zero[3]
        )
        self._probe_pending = bool(probe)
        # Skip the running-cost calls of a sequence that has none.
        self._has_running_cost = self.running_cost is not zero[0]
        self.store_lams = bool(store_lams)

    # ---- validation ----

    def _validate_inputs(self, x0, thetas, p):
        x0 = _validate.real_array(
            "x0", x0, self.x0_shape, what=f"the sequence has n = {self.n}"
        )
        if thetas is None:
            thetas = np.zeros(self.theta_shape)
        thetas = _validate.real_array(
            "thetas",
            thetas,
            self.theta_shape,
            what=f"the sequence has N = {self.N} steps of m = {self.m} parameters",
        )
        if p is None:
            p = np.zeros(self.p_shape)
        p = _validate.real_array(
            "p",
            np.atleast_1d(p) if np.ndim(p) == 0 else p,
            self.p_shape,
            what=f"the sequence has n_p = {self.n_p}",
        )
        return x0, thetas, p

    # ---- sweeps ----

    def _forward_impl(self, x0, thetas, p) -> Trajectory:
        if self._probe_pending:
            self._probe(x0, thetas, p)
        xs = np.empty((self.N + 1, self.n))
        info = np.zeros(2, dtype=np.intp)
        J = _forward_sweep(
            self.step.cfunc,
            self.running_cost.cfunc,
            self.terminal_cost.cfunc,
            x0,
            thetas,
            p,
            self.consts,
            self.data,
            0,
            xs,
            info,
            self._has_running_cost,
        )
        if info[0] == 0 and not np.isfinite(xs).all():
            # The loop checks every few steps; a state can overflow and come
            # back (1/(1 + inf) = 0) in between, so one vectorised pass over
            # all states makes the check complete.
            info[0], info[1] = STATUS_NONFINITE, self.N - 1
        self._raise_for_status(info, "forward", xs)
        if not np.isfinite(J):
            raise SweepError(
                f"The cost is not finite (J = {J}); the states stayed finite, so "
                "look at the cost kernels and `data`."
            )
        return Trajectory(x0, thetas, p, xs, float(J))

    def _adjoint_impl(self, traj, xs_bar, cost_weight):
        if xs_bar is None:
            xs_bar = np.empty((0, self.n))  # no state cotangents
        # Every λ_k only when asked for; otherwise the sweep rolls two vectors.
        lams = np.empty((self.N + 1 if self.store_lams else 1, self.n))
        grad_thetas = np.empty(self.theta_shape)
        grad_p = np.empty(self.p_shape)
        info = self._run_adjoint(traj, xs_bar, cost_weight, lams, grad_thetas, grad_p)
        if info[0] == STATUS_NONFINITE:
            self._locate_nonfinite_adjoint(traj, xs_bar, cost_weight, info)
        self._raise_for_status(info, "adjoint", lams)
        if self.store_lams:
            traj.extra["lams"] = lams
        return lams[0].copy(), grad_thetas, grad_p

    def _run_adjoint(self, traj, xs_bar, cost_weight, lams, grad_thetas, grad_p):
        """The compiled adjoint sweep into the given outputs; returns ``info``."""
        info = np.zeros(2, dtype=np.intp)
        _adjoint_sweep(
            self.step_vjp.cfunc,
            self.running_cost_vjp.cfunc,
            self.terminal_cost_vjp.cfunc,
            traj.xs,
            traj.thetas,
            traj.p,
            self.consts,
            self.data,
            xs_bar,
            float(cost_weight),
            lams,
            grad_thetas,
            grad_p,
            info,
            self._has_running_cost,
        )
        return info

    def _locate_nonfinite_adjoint(self, traj, xs_bar, cost_weight, info):
        """Rerun a failed adjoint sweep keeping every λ_k, to name the step
        where it first became non-finite (the sweep checks periodically)."""
        lams = np.empty((self.N + 1, self.n))
        info_all = self._run_adjoint(
            traj,
            xs_bar,
            cost_weight,
            lams,
            np.empty(self.theta_shape),
            np.empty(self.p_shape),
        )
        # Rows above the detection step were written; the highest non-finite
        # λ_k is where the sweep went wrong (it runs from k = N down).
        k_detected = int(info_all[1])
        bad = ~np.isfinite(lams[k_detected + 1 :]).all(axis=1)
        if bad.any():
            info[1] = k_detected + 1 + int(np.flatnonzero(bad).max())
        else:
            info[1] = k_detected

    def _tangent_impl(self, traj, x0_tan, thetas_tan, p_tan):
        if self.step_jvp is None:
            raise NotImplementedError(
                "This sequence has no `step_jvp` kernel, so forward mode is not "
                "available; pass `step_jvp=` or use reverse mode (`mode='reverse'`)."
            )
        xs_tan = np.empty_like(traj.xs)
        info = np.zeros(2, dtype=np.intp)
        J_tan = _tangent_sweep(
            self.step_jvp.cfunc,
            self.running_cost_vjp.cfunc,
            self.terminal_cost_vjp.cfunc,
            traj.xs,
            traj.thetas,
            traj.p,
            self.consts,
            self.data,
            x0_tan,
            thetas_tan,
            p_tan,
            xs_tan,
            info,
        )
        self._raise_for_status(info, "tangent", xs_tan)
        return xs_tan, float(J_tan)

    # ---- segments, for checkpointed gradients (see SequenceBase) ----

    def _forward_segment(self, x_a, thetas, p, k_a, k_b, xs_out, J0=None):
        if self._probe_pending:
            self._probe(x_a, thetas, p)
        info = np.zeros(2, dtype=np.intp)
        J = sk.forward_segment(
            self.step.cfunc,
            self.running_cost.cfunc,
            x_a,
            thetas,
            p,
            self.consts,
            self.data,
            k_a,
            k_b,
            J0 is not None,
            0.0 if J0 is None else float(J0),
            xs_out,
            info,
        )
        if info[0] != 0:
            k = int(info[1])
            rows = xs_out.shape[0]
            local = xs_out[[(k - k_a) % rows, (k - k_a + 1) % rows]]
            self._raise_for_status(info, "forward", {k: local[0], k + 1: local[1]})
        return None if J0 is None else float(J)

    def _adjoint_segment(
        self, xs, thetas, p, k_a, lam, grad_thetas, grad_p, cost_weight, x_end
    ):
        info = np.zeros(2, dtype=np.intp)
        sk.adjoint_segment(
            self.step_vjp.cfunc,
            self.running_cost_vjp.cfunc,
            xs,
            thetas,
            p,
            self.consts,
            self.data,
            k_a,
            float(cost_weight),
            lam,
            grad_thetas,
            grad_p,
            info,
        )
        self._raise_for_status(info, "adjoint", None)

    def _terminal_segment(self, x_N, p, cost_weight, lam_out, grad_p):
        info = np.zeros(2, dtype=np.intp)
        phi = sk.terminal_segment(
            self.terminal_cost.cfunc,
            self.terminal_cost_vjp.cfunc,
            x_N,
            p,
            self.consts,
            self.data[self.N],
            float(cost_weight),
            lam_out,
            grad_p,
            info,
        )
        if info[0] != 0:
            info[1] = self.N
            self._raise_for_status(info, "adjoint", None)
        if not np.isfinite(phi):
            raise SweepError(
                f"The terminal cost is not finite (Φ = {phi}); look at the "
                "terminal cost kernel and `data`."
            )
        return float(phi)

    def _run_actions(
        self,
        actions,
        pool,
        held,
        scratch,
        lam,
        x_end,
        thetas,
        p,
        grad_thetas,
        grad_p,
        cost_weight,
        state,
        J_acc,
    ):
        """Optional fast path of the checkpointing driver: a batch of encoded
        actions in one compiled call (:func:`_sweeps_kernels.run_actions`).
        Returns ``info``; the driver turns failures into errors."""
        if self._probe_pending:
            self._probe(pool[0], thetas, p)
        info = np.zeros(2, dtype=np.intp)
        sk.run_actions(
            self.step.cfunc,
            self.step_vjp.cfunc,
            self.running_cost.cfunc,
            self.running_cost_vjp.cfunc,
            self.terminal_cost.cfunc,
            self.terminal_cost_vjp.cfunc,
            thetas,
            p,
            self.consts,
            self.data,
            float(cost_weight),
            actions,
            pool,
            held,
            scratch,
            lam,
            x_end,
            grad_thetas,
            grad_p,
            state,
            J_acc,
            info,
        )
        return info

    def _forward_complex_impl(self, x0, thetas, p):
        # Plain Python loop over the generic kernels: slow, used by checks only.
        xs = np.empty((self.N + 1, self.n), dtype=np.complex128)
        xs[0] = x0
        J = 0.0 + 0.0j
        for k in range(self.N):
            J += self.running_cost(k, xs[k], thetas[k], p, self.consts, self.data[k])
            self.step(k, xs[k], thetas[k], p, self.consts, xs[k + 1])
        J += self.terminal_cost(xs[self.N], p, self.consts, self.data[self.N])
        return xs, J

    def _gradient_complex_impl(self, x0, thetas, p):
        # The compiled sweeps are typed generically, so handing them the
        # complex128 cfuncs compiles (once, cached) complex specialisations.
        kernels = [
            k.cfunc_complex
            for k in (
                self.step,
                self.running_cost,
                self.terminal_cost,
                self.step_vjp,
                self.running_cost_vjp,
                self.terminal_cost_vjp,
            )
        ]
        xs = np.empty((self.N + 1, self.n), dtype=np.complex128)
        info = np.zeros(2, dtype=np.intp)
        J = _forward_sweep(
            kernels[0],
            kernels[1],
            kernels[2],
            x0,
            thetas,
            p,
            self.consts,
            self.data,
            0,
            xs,
            info,
        )
        self._raise_for_status(info, "forward", xs)
        lams = np.empty_like(xs)
        grad_thetas = np.empty(self.theta_shape, dtype=np.complex128)
        grad_p = np.empty(self.p_shape, dtype=np.complex128)
        _adjoint_sweep(
            kernels[3],
            kernels[4],
            kernels[5],
            xs,
            thetas,
            p,
            self.consts,
            self.data,
            np.empty((0, self.n)),
            1.0,
            lams,
            grad_thetas,
            grad_p,
            info,
        )
        self._raise_for_status(info, "adjoint", lams)
        return xs, complex(J), lams[0].copy(), grad_thetas, grad_p

    # ---- errors ----

    def _raise_for_status(self, info, sweep, arrays):
        status, k = int(info[0]), int(info[1])
        if status == 0:
            return
        if status == STATUS_NONFINITE:
            if sweep == "forward":
                # The sweep checks periodically; find where the state first
                # became non-finite.
                if isinstance(arrays, np.ndarray) and arrays.ndim == 2:
                    bad = ~np.isfinite(arrays[: k + 2]).all(axis=1)
                    if bad.any():
                        k = int(np.argmax(bad)) - 1
                raise SweepError(
                    f"The state became non-finite at step {k}: x_{k + 1} = "
                    f"{arrays[k + 1]} from x_{k} = {arrays[k]}. Check `p` and "
                    "`thetas`, or take smaller steps."
                )
            raise SweepError(
                f"The {sweep} sweep produced a non-finite value at step {k}. "
                "The forward states were all finite; check the VJP and JVP kernels "
                "(`step_vjp`, `step_jvp`, the cost VJPs)."
            )
        kernel = {
            "forward": self.step,
            "adjoint": self.step_vjp,
            "tangent": self.step_jvp,
        }[sweep]
        raise SweepError(
            f"The {sweep} sweep stopped at step {k}: kernel `{kernel.name}` (or "
            f"a cost kernel) returned status {status}."
        )

    def _probe(self, x0, thetas, p):
        """Run each kernel once in plain Python with bounds-checked arrays."""
        self._probe_pending = False
        k, x, theta = 0, x0, thetas[0]
        rng = np.random.default_rng(0)
        out = np.full(self.n, np.nan)
        _probe_call(self.step, "out", out, k, x, theta, p, self.consts, out)
        lam = rng.standard_normal(self.n)
        bars = (np.zeros(self.n), np.zeros(self.m), np.zeros(self.n_p))
        _probe_call(
            self.step_vjp,
            "x_bar, theta_bar, p_bar",
            None,
            k,
            x,
            theta,
            p,
            self.consts,
            lam,
            *bars,
        )
        if self.step_jvp is not None:
            out = np.full(self.n, np.nan)
            _probe_call(
                self.step_jvp,
                "out",
                out,
                k,
                x,
                theta,
                p,
                self.consts,
                lam,
                np.zeros(self.m),
                np.zeros(self.n_p),
                out,
            )


def _cost_pair(name, cost, cost_vjp, zero, zero_vjp):
    if cost is None and cost_vjp is None:
        return zero, zero_vjp
    if cost is None or cost_vjp is None:
        missing = f"{name}_vjp" if cost_vjp is None else name
        raise ValueError(
            f"`{name}` and `{name}_vjp` come as a pair; `{missing}` is missing."
        )
    return as_kernel(cost, name), as_kernel(cost_vjp, f"{name}_vjp")


def _probe_call(kernel, outputs, out, *args):
    try:
        # Overflow in plain Python is the sweeps' business (they report the
        # non-finite state with its step), not the probe's.
        with np.errstate(all="ignore"):
            status = kernel.py_func(*args)
    except IndexError as err:
        raise ValueError(
            f"The {kernel.kind} kernel `{kernel.name}` indexed outside its arrays "
            f"({err}); its outputs ({outputs}) have the shapes of x, theta and p."
        ) from err
    except Exception:
        # Kernels may use Numba-only features that do not run as Python; the
        # probe is a courtesy, not a requirement.
        return
    if out is not None and np.isnan(out).any():
        j = int(np.flatnonzero(np.isnan(out))[0])
        raise ValueError(
            f"The {kernel.kind} kernel `{kernel.name}` left out[{j}] unwritten (or "
            f"wrote NaN); `out` has shape {out.shape} and every entry must be set."
        )
    if status is not None and not isinstance(status, (int, np.integer)):
        raise TypeError(
            f"The {kernel.kind} kernel `{kernel.name}` returned {status!r}; it "
            "must return an integer status (0 for success)."
        )
