"""Adaptive-step integration with an exact discrete adjoint of the accepted steps.

:class:`AdaptiveODESequence` integrates an :class:`~adjoint.ODESystem` with an
embedded Runge–Kutta pair (Dormand–Prince 5(4) or Bogacki–Shampine 3(2)) and
a standard step-size controller, from one output time to the next.  The
sequence's steps are the output intervals; inside each, the integrator takes
as many accepted steps as the tolerance asks for, and records them.  The
backward sweep is the exact adjoint of those recorded steps with their sizes
held fixed.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
from numba.core.errors import TypingError

from .. import _validate
from .._errors import SweepError
from .._homogeneous import _cost_pair, _zero_kernels
from .._kernel_types import STATUS_NONFINITE
from .._sequence import SequenceBase, Trajectory
from .._systems import ODESystem
from . import _adaptive_kernels as ak
from ._observations import ObservationCost
from ._ode_sequence import _rk_step_complex
from ._tableaus import Tableau

__all__ = ["AdaptiveODESequence", "EmbeddedPair", "StepRecord", "PAIRS"]

# Controller constants (Hairer, Nørsett & Wanner I, II.4; SciPy's RK45 uses
# the same): safety factor and the bounds on one change of the step.
SAFETY = 0.9
FAC_MIN = 0.2
FAC_MAX = 10.0
MAX_STEPS = 1_000_000
RTOL_FLOOR = 100 * np.finfo(np.float64).eps  # below this, rounding dominates


# ---- the embedded pairs ----


@dataclass(frozen=True, eq=False)
class EmbeddedPair:
    """An explicit Runge–Kutta pair: ``A``, ``c``, propagating weights ``b`` of
    order ``order`` and embedded weights ``b_hat`` of order ``err_order``.

    The error estimate of a step is ``h Σ (b_i − b̂_i) K_i``; the solution is
    propagated with ``b`` (local extrapolation).  The built-in pairs are
    ``'dopri5'`` and ``'bs32'``; pass one of these names to
    :class:`~adjoint.AdaptiveODESequence` unless you need another pair.

    Parameters
    ----------
    name : str
        Shown in reprs and messages.
    A : ndarray, shape (s, s)
        Stage coefficients, strictly lower triangular (explicit).
    b : ndarray, shape (s,)
        Propagating weights, of order ``order``.
    b_hat : ndarray, shape (s,)
        Embedded weights, of order ``err_order``.
    c : ndarray, shape (s,)
        Stage times as fractions of the step.
    order, err_order : int
        Orders of ``b`` and ``b_hat``; the controller scales steps by the
        error to the power ``−1/(err_order + 1)``.

    Examples
    --------
    The Heun–Euler 2(1) pair:

    >>> import numpy as np
    >>> from adjoint import EmbeddedPair
    >>> pair = EmbeddedPair("heun_euler", A=np.array([[0.0, 0.0], [1.0, 0.0]]),
    ...                     b=np.array([0.5, 0.5]), b_hat=np.array([1.0, 0.0]),
    ...                     c=np.array([0.0, 1.0]), order=2, err_order=1)
    >>> pair.n_stages, pair.tableau
    (2, Tableau('heun_euler', 2 stages, order 2))
    """

    name: str
    A: np.ndarray
    b: np.ndarray
    b_hat: np.ndarray
    c: np.ndarray
    order: int
    err_order: int

    @property
    def n_stages(self) -> int:
        """Number of stages ``s``, the error-estimate stage included."""
        return int(self.b.shape[0])

    @property
    def tableau(self) -> Tableau:
        """The propagating method, without trailing stages it gives no weight
        (the first-same-as-last stage feeds only the error estimate)."""
        s = int(np.flatnonzero(self.b)[-1]) + 1
        return Tableau(
            self.A[:s, :s], self.b[:s], self.c[:s], name=self.name, order=self.order
        )


def _pair(name, A, b, b_hat, c, order, err_order):
    s = len(b)
    full = np.zeros((s, s))
    for i, row in enumerate(A):
        full[i, : len(row)] = row
    return EmbeddedPair(
        name,
        full,
        np.array(b, float),
        np.array(b_hat, float),
        np.array(c, float),
        order,
        err_order,
    )


# Dormand & Prince (1980), with the FSAL seventh stage for the error estimate.
DOPRI5 = _pair(
    "dopri5",
    [
        [],
        [1 / 5],
        [3 / 40, 9 / 40],
        [44 / 45, -56 / 15, 32 / 9],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
        [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
    ],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0],
    [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40],
    [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0],
    5,
    4,
)

# Bogacki & Shampine (1989), FSAL fourth stage for the error estimate.
BS32 = _pair(
    "bs32",
    [[], [1 / 2], [0.0, 3 / 4], [2 / 9, 1 / 3, 4 / 9]],
    [2 / 9, 1 / 3, 4 / 9, 0.0],
    [7 / 24, 1 / 4, 1 / 3, 1 / 8],
    [0.0, 1 / 2, 3 / 4, 1.0],
    3,
    2,
)

PAIRS = {"dopri5": DOPRI5, "bs32": BS32}


@dataclass(frozen=True)
class StepRecord:
    """The accepted steps of one adaptive forward sweep.

    Attributes
    ----------
    ts, hs : ndarray, shape (M,)
        Start time and size of each accepted step.
    starts : ndarray of int, shape (N + 1,)
        Output interval ``k`` holds steps ``starts[k] … starts[k+1]-1``.
    n_rejected : int
        Steps the controller rejected on the way.

    Parameters
    ----------
    ts, hs, starts, n_rejected
        The attributes above; records normally come from
        :meth:`AdaptiveODESequence.step_record`, and a record passed back as
        ``steps=`` (what :meth:`AdaptiveODESequence.freeze` does) replays
        those steps.

    Examples
    --------
    Two output intervals, the first of two steps and the second of one:

    >>> import numpy as np
    >>> from adjoint import StepRecord
    >>> record = StepRecord(ts=np.array([0.0, 0.4, 1.0]),
    ...                     hs=np.array([0.4, 0.6, 1.0]),
    ...                     starts=np.array([0, 2, 3]))
    >>> record.n_steps, np.diff(record.starts).tolist()
    (3, [2, 1])
    """

    ts: np.ndarray
    hs: np.ndarray
    starts: np.ndarray
    n_rejected: int = 0

    @property
    def n_steps(self) -> int:
        """Number of accepted steps ``M``."""
        return int(self.hs.shape[0])


# ---- the sequence ----


class AdaptiveODESequence(SequenceBase):
    """An ODE integrated with adaptive steps, as a sequence with an exact adjoint.

    Step ``k`` of the sequence integrates ``dx/dt = f(t, x, p, u_k)`` from the
    output time ``t_out[k]`` to ``t_out[k+1]`` with an embedded Runge–Kutta
    pair, as many accepted steps as the tolerances need, steps clipped to land
    on the output times; the cost ``J = Φ(x_N, p) + Σ_k g_k(x_k, u_k, p)``
    reads the states at the output times.  As a plain Python loop::

        x = x0
        for k in range(N):
            J += running_cost(k, x, us[k], p, consts, data[k])
            t, h = t_out[k], h
            while t < t_out[k + 1]:
                h = min(h, t_out[k + 1] - t)
                x_new, err = pair_step(f, t, h, x, p, us[k])
                if norm(err) <= 1:           # accept, record (t, h)
                    t, x = t + h, x_new
                h = h * controller(norm(err))
        J += terminal_cost(x, p, consts, data[N])

    **Which derivative.**  The gradient (:meth:`Objective.value_and_grad`) is
    the exact derivative of ``J`` through the accepted steps *with their
    sizes and times held fixed* at the values the forward sweep chose.  The
    step sizes do depend on ``x0``, ``p`` and the controls, through the
    controller (smoothly between the points where a step is added or
    dropped, where ``J`` jumps by about the tolerance); that dependence is
    not differentiated.  This is the usual "frozen step" discrete adjoint:
    the neglected part multiplies the sensitivity of the local error to the
    step size, so it is of the order of the tolerance, and as the tolerance
    tightens the gradient approaches the derivative of the exact ODE
    solution.  Checks must perturb with the steps frozen to test this very
    derivative: the complex-step check does so automatically (it reuses the
    steps of the real sweep), and :meth:`freeze` gives the sequence with the
    steps fixed for Taylor and finite-difference tests.

    Parameters
    ----------
    system : ODESystem
    pair : {'dopri5', 'bs32'} or EmbeddedPair
        Dormand–Prince 5(4) (default; 6 right-hand sides per accepted step,
        7 with the error estimate) or the cheaper Bogacki–Shampine 3(2)
        (3 and 4), for loose tolerances.
    t_out : array_like, shape (N + 1,)
        Output times, strictly increasing; ``t_out[0]`` is the initial time.
    rtol, atol : float
        Tolerances of the error controller (RMS norm, SciPy's convention).
    consts, data, running_cost, running_cost_vjp, terminal_cost,
    terminal_cost_vjp, observations :
        Costs as for :class:`~adjoint.ODESequence`, at the output times.

    Other Parameters
    ----------------
    first_step : float, optional
        The first trial step (default: Hairer's estimate).
    max_step : float, optional
        Upper bound on a step (default: none).
    max_steps : int, optional
        Most accepted steps in one sweep (default 10^6).
    steps : StepRecord, optional
        Fixed steps to run instead of the controller (what :meth:`freeze`
        sets).

    Raises
    ------
    TypeError
        If ``system`` is not an :class:`~adjoint.ODESystem`, ``pair`` is
        neither a name nor an :class:`EmbeddedPair`, or ``observations`` is
        not an :class:`~adjoint.ObservationCost`.
    ValueError
        For an unknown pair name, output times that do not increase, bad
        tolerances or step bounds, ``data`` or ``steps`` that do not fit the
        output times.
    SweepError
        From a sweep when the controller's step falls below rounding of ``t``
        (the problem is probably stiff: use an implicit scheme of
        :class:`~adjoint.ODESequence`), when a state becomes non-finite or
        when more than ``max_steps`` steps are needed.

    Warns
    -----
    UserWarning
        When ``rtol`` is below ``100 ε``, where rounding dominates the error
        estimate; it is raised to that floor.

    Notes
    -----
    Cost: the forward sweep evaluates ``f`` at every stage of every tried
    step; the backward sweep recomputes the stages of each accepted step
    (no stage storage) and takes one VJP per propagating stage.  Memory:
    the states at the start of every accepted step.  Checkpointing
    (:class:`~adjoint.Checkpointing`) is not available for this sequence
    kind; :class:`~adjoint.ODESequence` has it.

    When *not* to use it: for stiff problems (the explicit pairs then take
    tiny steps), and when a fixed grid is wanted anyway (data on a grid,
    checkpointing): :class:`~adjoint.ODESequence` is simpler and faster.

    References
    ----------
    .. [1] J. R. Dormand and P. J. Prince, "A family of embedded Runge-Kutta
       formulae", J. Comput. Appl. Math. 6 (1980) 19-26.
    .. [2] P. Bogacki and L. F. Shampine, "A 3(2) pair of Runge-Kutta
       formulas", Appl. Math. Lett. 2 (1989) 321-325.
    .. [3] E. Hairer, S. P. Nørsett and G. Wanner, Solving Ordinary
       Differential Equations I, 2nd ed., Springer, 1993, section II.4.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint import AdaptiveODESequence, ODESystem, Objective
    >>> def decay(t, x, p, u, out):
    ...     out[0] = -p[0] * x[0]
    ...     return 0
    >>> def phi(x, p, consts, data):
    ...     return x[0]
    >>> def phi_vjp(x, p, consts, data, phi_bar, x_bar, p_bar):
    ...     x_bar[0] += phi_bar
    ...     return 0
    >>> seq = AdaptiveODESequence(
    ...     ODESystem.from_rhs(decay, n=1, n_p=1), t_out=[0.0, 2.0], rtol=1e-10,
    ...     atol=1e-12, terminal_cost=phi, terminal_cost_vjp=phi_vjp)
    >>> obj = Objective(seq, x0=[1.0], p=[0.5], wrt="p")
    >>> J, grad = obj.value_and_grad(obj.z0)  # dJ/dp = -2 e^{-1}
    >>> round(float(grad[0]), 8) == round(float(-2 * np.exp(-1.0)), 8)
    True
    """

    def __init__(
        self,
        system: ODESystem,
        *,
        pair="dopri5",
        t_out,
        rtol: float = 1e-6,
        atol: float = 1e-9,
        consts=(),
        data=None,
        running_cost=None,
        running_cost_vjp=None,
        terminal_cost=None,
        terminal_cost_vjp=None,
        observations: ObservationCost | None = None,
        first_step: float | None = None,
        max_step: float = np.inf,
        max_steps: int = MAX_STEPS,
        steps: StepRecord | None = None,
    ):
        # ---- system, pair and output times ----
        if not isinstance(system, ODESystem):
            raise TypeError(
                f"`system` must be an ODESystem, got {type(system).__name__}; build "
                "one with ODESystem.from_sympy, from_kernels or from_rhs."
            )
        self.system = system
        self.n, self.m, self.n_p = system.n, system.n_u, system.n_p
        if isinstance(pair, str):
            _validate.choice("pair", pair, tuple(PAIRS))
            pair = PAIRS[pair]
        if not isinstance(pair, EmbeddedPair):
            raise TypeError(
                f"`pair` must be a pair name or an EmbeddedPair, got "
                f"{type(pair).__name__}."
            )
        self.pair = pair
        self.tableau = pair.tableau
        t_out = _validate.real_array("t_out", np.ravel(t_out))
        if t_out.shape[0] < 2 or np.any(np.diff(t_out) <= 0):
            raise ValueError(
                "`t_out` must hold at least two strictly increasing times (the "
                "initial time first); got "
                f"{t_out if t_out.size < 8 else str(t_out[:8]) + ' …'}."
            )
        self.t_out = t_out
        self.N = t_out.shape[0] - 1
        self.x0_shape = (self.n,)
        self.theta_shape = (self.N, self.m)
        self.p_shape = (self.n_p,)

        # ---- controller ----
        self.rtol = _validate.positive_float("rtol", rtol)
        if self.rtol < RTOL_FLOOR:
            warnings.warn(
                f"`rtol` = {rtol:g} is below {RTOL_FLOOR:.1e}, where rounding "
                f"dominates the error estimate; using {RTOL_FLOOR:.1e}.",
                UserWarning,
                stacklevel=2,
            )
            self.rtol = RTOL_FLOOR
        self.atol = _validate.positive_float("atol", atol)
        self.first_step = (
            None
            if first_step is None
            else _validate.positive_float("first_step", first_step)
        )
        self.max_step = (
            np.inf
            if max_step == np.inf
            else _validate.positive_float("max_step", max_step)
        )
        self.max_steps = _validate.positive_int("max_steps", max_steps)
        if steps is not None and (
            steps.starts.shape != (self.N + 1,) or steps.starts[-1] != steps.n_steps
        ):
            raise ValueError(
                f"`steps` records {steps.starts.shape[0] - 1} output intervals and "
                f"{steps.n_steps} steps; the sequence has N = {self.N} intervals."
            )
        self.steps = steps
        self._capacity = 16 * self.N

        # ---- costs and data ----
        if observations is not None:
            if not isinstance(observations, ObservationCost):
                raise TypeError(
                    "`observations` must come from adjoint.observation_cost, got "
                    f"{type(observations).__name__}."
                )
            observations.check_fits(self.n, self.N)
            (running_cost, running_cost_vjp, terminal_cost, terminal_cost_vjp, data) = (
                observations
            )
        self.observations = observations
        self.consts = _validate.real_array("consts", np.atleast_1d(consts)).ravel()
        if data is None:
            data = np.zeros((self.N + 1, 0))
        data = np.array(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] != self.N + 1:
            raise ValueError(
                f"`data` has shape {data.shape}; there are N + 1 = {self.N + 1} "
                "output times, so `data` must have shape "
                f"({self.N + 1}, q), one row per output time."
            )
        self.data = np.ascontiguousarray(data)
        zero = _zero_kernels()
        self.running_cost, self.running_cost_vjp = _cost_pair(
            "running_cost", running_cost, running_cost_vjp, zero[0], zero[1]
        )
        self.terminal_cost, self.terminal_cost_vjp = _cost_pair(
            "terminal_cost", terminal_cost, terminal_cost_vjp, zero[2], zero[3]
        )

    def __repr__(self) -> str:
        mode = (
            "frozen steps"
            if self.steps is not None
            else (f"rtol={self.rtol:g}, atol={self.atol:g}")
        )
        return (
            f"<AdaptiveODESequence {self.system.name}, pair={self.pair.name!r}, "
            f"N={self.N} outputs, {mode}>"
        )

    def _costs(self):
        return (
            self.running_cost.cfunc,
            self.running_cost_vjp.cfunc,
            self.terminal_cost.cfunc,
            self.terminal_cost_vjp.cfunc,
        )

    # ---- validation ----

    def _validate_inputs(self, x0, thetas, p):
        x0 = _validate.real_array(
            "x0", x0, self.x0_shape, what=f"the system has n = {self.n}"
        )
        if thetas is None:
            thetas = np.zeros(self.theta_shape)
        thetas = _validate.real_array(
            "thetas",
            thetas,
            self.theta_shape,
            what=(
                f"there are N = {self.N} output intervals with n_u = {self.m} "
                "controls each"
            ),
        )
        if p is None:
            p = np.zeros(self.p_shape)
        p = _validate.real_array(
            "p",
            np.atleast_1d(p) if np.ndim(p) == 0 else p,
            self.p_shape,
            what=f"the system has n_p = {self.n_p}",
        )
        return x0, thetas, p

    # ---- frozen steps ----

    def step_record(self, x0, thetas=None, p=None) -> StepRecord:
        """The steps the forward sweep takes from these inputs.

        Parameters
        ----------
        x0 : array_like, shape (n,)
        thetas : array_like, shape (N, n_u), optional
            Controls per output interval (default zeros).
        p : array_like, shape (n_p,), optional
            Parameters (default zeros).

        Returns
        -------
        StepRecord

        Raises
        ------
        ValueError
            If an input has the wrong shape or a non-finite entry.
        SweepError
            If the forward sweep fails.

        Examples
        --------
        >>> from adjoint import AdaptiveODESequence, ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = AdaptiveODESequence(ODESystem.from_rhs(decay, n=1, n_p=1),
        ...                           t_out=[0.0, 1.0, 2.0], rtol=1e-8)
        >>> record = seq.step_record([1.0], p=[0.5])
        >>> record.starts.shape, bool(record.n_steps > 2)
        ((3,), True)
        """
        x0, thetas, p = self._validate_inputs(x0, thetas, p)
        return self._forward_impl(x0, thetas, p).extra["steps"]

    def freeze(self, x0, thetas=None, p=None) -> AdaptiveODESequence:
        """A copy whose forward sweep runs the steps chosen at these inputs.

        Its cost is a smooth function of ``x0``, ``thetas`` and ``p`` (the
        steps no longer move), with the same value and gradient here as this
        sequence: run Taylor and finite-difference checks on it.

        Parameters
        ----------
        x0, thetas, p : array_like
            The inputs whose steps are kept, as for :meth:`step_record`.

        Returns
        -------
        AdaptiveODESequence
            A shallow copy with ``steps`` set.

        Raises
        ------
        ValueError
            If an input has the wrong shape or a non-finite entry.
        SweepError
            If the forward sweep fails.

        Examples
        --------
        >>> from adjoint import AdaptiveODESequence, ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = AdaptiveODESequence(ODESystem.from_rhs(decay, n=1, n_p=1),
        ...                           t_out=[0.0, 1.0, 2.0], rtol=1e-8)
        >>> frozen = seq.freeze([1.0], p=[0.5])
        >>> frozen.steps.n_steps == seq.step_record([1.0], p=[0.5]).n_steps
        True
        """
        frozen = copy.copy(self)
        frozen.steps = self.step_record(x0, thetas, p)
        return frozen

    # ---- sweeps ----

    def _forward_impl(self, x0, thetas, p) -> Trajectory:
        self.system._first_use(self.t_out[0], x0, p, thetas[0])
        fns, costs, tab = self.system.kernel_tuple(), self._costs(), self.tableau
        info = np.zeros(4, dtype=np.intp)
        if self.steps is not None:
            rec = self.steps
            ys = np.empty((rec.n_steps + 1, self.n))
            J = ak.frozen_forward(
                fns,
                costs,
                tab.A,
                tab.b,
                tab.c,
                rec.ts,
                rec.hs,
                rec.starts,
                x0,
                thetas,
                p,
                self.consts,
                self.data,
                ys,
                info,
            )
            self._raise_for_status(info, "forward", rec.ts, rec.hs)
        else:
            rec, ys, J = self._controlled_forward(fns, costs, x0, thetas, p)
        if not np.isfinite(J):
            raise SweepError(
                f"The cost is not finite (J = {J}); the states stayed finite, so "
                "look at the cost kernels and `data`."
            )
        xs = ys[rec.starts]
        return Trajectory(x0, thetas, p, xs, float(J), {"ys": ys, "steps": rec})

    def _controlled_forward(self, fns, costs, x0, thetas, p):
        pair = self.pair
        e = pair.b - pair.b_hat
        h0 = self.first_step
        if h0 is None:
            h0 = ak.initial_step(
                fns[0],
                self.t_out[0],
                self.t_out[-1],
                x0,
                p,
                thetas[0],
                pair.err_order,
                self.rtol,
                self.atol,
            )
            if not h0 > 0:
                raise SweepError(
                    f"The right-hand side of `{self.system.name}` failed at the "
                    f"initial time t = {self.t_out[0]:g}."
                )
        while True:  # grow the step arrays until one sweep fits
            cap = self._capacity
            ts, hs = np.empty(cap), np.empty(cap)
            starts = np.empty(self.N + 1, dtype=np.intp)
            ys = np.empty((cap + 1, self.n))
            info = np.zeros(4, dtype=np.intp)
            J = ak.adaptive_forward(
                fns,
                costs,
                pair.A,
                pair.b,
                e,
                pair.c,
                pair.err_order,
                self.t_out,
                x0,
                thetas,
                p,
                self.consts,
                self.data,
                self.rtol,
                self.atol,
                h0,
                self.max_step,
                SAFETY,
                FAC_MIN,
                FAC_MAX,
                self.max_steps,
                ts,
                hs,
                starts,
                ys,
                info,
            )
            if info[0] != ak.STATUS_FULL:
                break
            self._capacity = 2 * cap
        self._raise_for_status(info, "forward", ts, hs)
        M = int(info[2])
        rec = StepRecord(ts[:M].copy(), hs[:M].copy(), starts, int(info[3]))
        return rec, ys[: M + 1].copy(), J

    def _adjoint_impl(self, traj, xs_bar, cost_weight):
        if xs_bar is None:
            xs_bar = np.zeros_like(traj.xs)
        xs_bar = np.ascontiguousarray(xs_bar, dtype=np.float64)
        rec, tab = traj.extra["steps"], self.tableau
        lams = np.empty_like(traj.xs)
        grad_us = np.empty(self.theta_shape)
        grad_p = np.zeros(self.p_shape)
        info = np.zeros(4, dtype=np.intp)
        ak.adaptive_adjoint(
            self.system.kernel_tuple(),
            self.system.modes,
            self._costs(),
            tab.A,
            tab.b,
            tab.c,
            rec.ts,
            rec.hs,
            rec.starts,
            traj.extra["ys"],
            traj.thetas,
            traj.p,
            self.consts,
            self.data,
            xs_bar,
            float(cost_weight),
            lams,
            grad_us,
            grad_p,
            info,
        )
        self._raise_for_status(info, "adjoint", rec.ts, rec.hs)
        traj.extra["lams"] = lams
        return lams[0].copy(), grad_us, grad_p

    def _tangent_impl(self, traj, x0_tan, thetas_tan, p_tan):
        rec, tab = traj.extra["steps"], self.tableau
        xs_tan = np.empty_like(traj.xs)
        info = np.zeros(4, dtype=np.intp)
        J_tan = ak.adaptive_tangent(
            self.system.kernel_tuple(),
            self.system.modes,
            self._costs(),
            tab.A,
            tab.b,
            tab.c,
            rec.ts,
            rec.hs,
            rec.starts,
            traj.extra["ys"],
            traj.thetas,
            traj.p,
            self.consts,
            self.data,
            np.ascontiguousarray(x0_tan, dtype=np.float64),
            np.ascontiguousarray(thetas_tan, dtype=np.float64),
            np.ascontiguousarray(p_tan, dtype=np.float64),
            xs_tan,
            info,
        )
        self._raise_for_status(info, "tangent", rec.ts, rec.hs)
        return xs_tan, float(J_tan)

    def _forward_complex_impl(self, x0, thetas, p):
        # The steps of the real sweep at the real parts: the complex step then
        # differentiates with the step sizes frozen, as the adjoint does.
        rec = self.steps or self.step_record(
            x0.real.copy(), thetas.real.copy(), p.real.copy()
        )
        x0, thetas, p = (np.asarray(a, dtype=np.complex128) for a in (x0, thetas, p))
        rhs = self.system.rhs.jit
        xs = np.empty((self.N + 1, self.n), dtype=np.complex128)
        y = x0.copy()
        J = 0.0 + 0.0j
        try:
            for k in range(self.N):
                xs[k] = y
                J += self.running_cost(k, y, thetas[k], p, self.consts, self.data[k])
                for m in range(rec.starts[k], rec.starts[k + 1]):
                    y = _rk_step_complex(
                        rhs, self.tableau, rec.ts[m], rec.hs[m], y, p, thetas[k]
                    )
            xs[self.N] = y
            J += self.terminal_cost(y, p, self.consts, self.data[self.N])
        except TypingError as err:
            raise NotImplementedError(
                f"The kernels of `{self.system.name}` do not compile for complex128 "
                "input, so the complex-step check cannot run; write them "
                "generically or check with finite differences."
            ) from err
        return xs, J

    # ---- errors ----

    def _raise_for_status(self, info, sweep, ts, hs):
        status, k = int(info[0]), int(info[1])
        if status == 0:
            return
        where = (
            f"output interval {k} (t = {self.t_out[min(k, self.N)]:g} … "
            f"{self.t_out[min(k + 1, self.N)]:g})"
        )
        if status == ak.STATUS_TINY_STEP:
            raise SweepError(
                f"The step size fell below rounding of t in {where}: the problem "
                "is probably stiff there. Use an implicit scheme of ODESequence "
                "(scheme='backward_euler' or 'crank_nicolson'), or loosen "
                "`rtol`/`atol`."
            )
        if status == ak.STATUS_TOO_MANY:
            raise SweepError(
                f"More than `max_steps` = {self.max_steps} accepted steps were needed "
                f"(stopped in {where}); raise `max_steps` or loosen `rtol`/`atol`."
            )
        if status == STATUS_NONFINITE:
            raise SweepError(
                f"The {sweep} sweep produced a non-finite value in {where}. Check "
                "`p`, the controls and the system's kernels."
            )
        raise SweepError(
            f"The {sweep} sweep stopped in {where}: a kernel of system "
            f"`{self.system.name}` (or a cost kernel) returned status {status}."
        )
