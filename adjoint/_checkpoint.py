"""Checkpointing: gradients of long sequences in bounded memory.

Store-all keeps every state ``x_0 … x_N`` for the backward sweep, ``O(N)``
memory.  A checkpointing schedule keeps ``s`` snapshots and recomputes the
rest from the nearest one.  This module holds

- the schedules, plain Python generators of :ref:`actions <actions>`
  (:func:`binomial_actions`, the optimal one of Griewank and Walther [1]_;
  :func:`periodic_actions`; :func:`store_all_actions`);
- the closed-form optimum :func:`binomial_forward_steps` they are tested
  against;
- :class:`Checkpointing`, the per-call choice of schedule and memory;
- a driver, :func:`checkpointed_gradient`, that runs any schedule on any
  sequence with the segment hooks of :class:`adjoint.SequenceBase`
  (``_forward_segment``, ``_adjoint_segment``, ``_terminal_segment``), and
  reports what it did in :class:`CheckpointStats`.

The schedules know nothing of sequences and the sweeps nothing of schedules:
adding a schedule means writing one generator and one line in
``SCHEDULES``.

.. _actions:

Actions
-------
The driver keeps the snapshots on a stack (binomial and periodic schedules
free them in last-in, first-out order), whose top is the state worked on:

- ``Advance(a, b)``: from ``x_a`` on top, run steps ``a … b-1`` keeping no
  intermediate state, and push ``x_b``;
- ``Store(a, b)``: from ``x_a`` on top, run steps ``a … b-1`` and push every
  state ``x_{a+1} … x_b``;
- ``Turn()``: from ``x_{N-1}`` on top, run the last step into a scratch
  array, evaluate the terminal cost and set ``λ_N = ∂Φ/∂x_N``;
- ``Reverse(a, b)``: the states ``x_a … x_{b-1}`` are the top ``b - a``
  entries; run the backward sweep from ``λ_b`` to ``λ_a`` over them and pop
  them.

A step's running cost is added to ``J`` the first time the step is run.

References
----------
.. [1] A. Griewank and A. Walther, "Algorithm 799: Revolve: an implementation
   of checkpointing for the reverse or adjoint mode of computational
   differentiation", ACM Trans. Math. Softw. 26(1), 19-45, 2000.
.. [2] A. Griewank, "Achieving logarithmic growth of temporal and spatial
   complexity in reverse automatic differentiation", Optim. Methods Softw.
   1(1), 35-54, 1992.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _sweeps_kernels as sk
from . import _validate
from ._errors import SweepError
from ._sequence import SequenceBase

logger = logging.getLogger(__name__)

__all__ = [
    "Advance",
    "CheckpointResult",
    "CheckpointStats",
    "Checkpointing",
    "Reverse",
    "Store",
    "Turn",
    "binomial_actions",
    "binomial_forward_steps",
    "checkpointed_gradient",
    "checkpointed_value",
    "periodic_actions",
    "store_all_actions",
]


# ---- actions ----


class Advance(NamedTuple):
    """Run steps ``start … stop-1`` from the top state; push ``x_stop`` only."""

    start: int
    stop: int


class Store(NamedTuple):
    """Run steps ``start … stop-1`` from the top state; push every new state."""

    start: int
    stop: int


class Turn(NamedTuple):
    """Run the last step, evaluate ``Φ`` and set ``λ_N``: forward turns back."""


class Reverse(NamedTuple):
    """Backward sweep over steps ``stop-1 … start`` on the top ``stop - start``
    states; pop them."""

    start: int
    stop: int


# ---- closed form (Griewank 1992; Griewank & Walther 2000) ----


def binomial_beta(s: int, r: int) -> int:
    """``β(s, r) = C(s + r, s)``: the most steps that ``s`` snapshots reverse
    with every step run at most ``r`` times (0 when ``s`` or ``r`` < 0)."""
    if s < 0 or r < 0:
        return 0
    return math.comb(s + r, s)


def _repetitions(n_steps: int, s: int) -> int:
    """Smallest ``r`` with ``β(s, r) ≥ n_steps``."""
    r, beta = 0, 1
    while beta < n_steps:
        r += 1
        beta = beta * (s + r) // r  # β(s, r) from β(s, r - 1), exactly
    return r


def binomial_forward_steps(n_steps: int, n_snapshots: int) -> int:
    """Fewest step evaluations that reverse ``n_steps`` steps with ``n_snapshots``
    snapshots, in the count of Griewank and Walther [1]_.

    ``t(N, s) = r N - β(s + 1, r - 1)`` with ``r`` the smallest integer for
    which ``β(s, r) = C(s + r, s) ≥ N``.

    Convention (theirs, and this module's): the ``s`` snapshots include the
    one holding ``x_0``; the state being worked on is not a snapshot; reversing
    step ``k`` needs ``x_k`` and costs no forward step.  ``t`` therefore counts
    the first sweep only up to ``x_{N-1}``.  The driver here also needs
    ``x_N`` for the terminal cost, one more step, so an optimal schedule runs
    ``t(N, s) + 1`` steps in all and recomputes ``t(N, s) + 1 - N`` of them
    (:attr:`CheckpointStats.optimal_recomputed_steps`).

    Parameters
    ----------
    n_steps : int
        ``N``, the number of steps, at least 1.
    n_snapshots : int
        ``s``, the number of snapshots, at least 1.

    Returns
    -------
    int
        ``t(N, s)``; ``N - 1`` when ``s ≥ N - 1`` (nothing recomputed).

    Raises
    ------
    TypeError
        If an argument is not an integer.
    ValueError
        If an argument is below 1.

    See Also
    --------
    Checkpointing : the binomial schedule reaches this count.

    Examples
    --------
    >>> binomial_forward_steps(10, 1)  # one snapshot: 9 + 8 + ... + 1
    45
    >>> binomial_forward_steps(10, 9)  # enough snapshots: one sweep to x_9
    9
    """
    N = _validate.positive_int("n_steps", n_steps)
    s = _validate.positive_int("n_snapshots", n_snapshots)
    r = _repetitions(N, s)
    return r * N - binomial_beta(s + 1, r - 1)


def _binomial_split(n_steps: int, s: int) -> int:
    """Steps to advance before the next snapshot, as Revolve chooses them [1]_.

    ``s`` counts the snapshots of this sub-range including the one at its
    start.  The choice keeps the total at :func:`binomial_forward_steps`.
    """
    r = _repetitions(n_steps, s)
    top = binomial_beta(s, r)
    b1 = binomial_beta(s, r - 1)
    b2 = binomial_beta(s - 1, r - 1)
    b3 = binomial_beta(s - 2, r - 1)
    b4 = binomial_beta(s, r - 2)
    b5 = binomial_beta(s - 3, r)
    if n_steps <= b1 + b3:
        m = b4
    elif n_steps >= top - b5:
        m = b1
    else:
        m = n_steps - b2 - b3
    return max(int(m), 1)


# ---- schedules: plain Python, one generator each ----


def store_all_actions(n_steps: int) -> Iterator:
    """Keep every state: one sweep forward, one backward (``N`` rows)."""
    N = n_steps
    if N > 1:
        yield Store(0, N - 1)
    yield Turn()
    yield Reverse(0, N)


def binomial_actions(n_steps: int, n_snapshots: int) -> Iterator:
    """The binomial (Revolve) schedule: fewest recomputed steps for ``s`` snapshots.

    Recursive binomial partition [2]_: a range that fits in the free
    snapshots is stored and reversed at once; a longer one is split where
    Revolve [1]_ would place its next snapshot, its right part reversed with
    one snapshot fewer, then its left part.  The recursion is kept on an
    explicit stack, so the generator holds ``O(s)`` items whatever ``N``.

    The total number of steps run is ``binomial_forward_steps(N, s) + 1``
    (see there for the convention); at most ``s + 1`` states are held, the
    ``s`` snapshots and the state worked on.
    """
    N = _validate.positive_int("n_steps", n_steps)
    s = _validate.positive_int("n_snapshots", n_snapshots)
    tasks = [(0, N, s)]  # (start, stop, snapshots available incl. x_start's)
    while tasks:
        a, b, c = tasks.pop()
        length = b - a
        if length <= c + 1:  # fits: store the range and reverse it
            if b - 1 > a:
                yield Store(a, b - 1)
            if b == N:
                yield Turn()
            yield Reverse(a, b)
            continue
        assert c >= 1, "binomial schedule split a range with no snapshot left"
        m = a + _binomial_split(length, c)
        yield Advance(a, m)
        tasks.append((a, m, c))
        tasks.append((m, b, c - 1))


def _periodic_interval(n_steps: int, n_snapshots: int) -> int:
    """Interval ``K`` of fewest recomputations with ``ceil(N/K) + K - 2 ≤ s``."""
    N, s = n_steps, n_snapshots
    if s >= N - 1:
        return N
    best = None
    for K in range(1, min(N, s + 1) + 1):
        c = -(-N // K)
        if c + K - 2 <= s:
            cost = (c - 1) * (K - 1)
            if best is None or cost < best[0]:
                best = (cost, K)
    if best is None:
        need = min(-(-N // K) + K - 2 for K in range(1, N + 1))
        raise ValueError(
            f"The periodic schedule needs at least {need} snapshots for "
            f"N = {N} steps, got `n_snapshots` = {s}; use the binomial schedule, "
            "which works with any number of snapshots."
        )
    return best[1]


def periodic_actions(n_steps: int, n_snapshots: int) -> Iterator:
    """Snapshots every ``K`` steps in the first sweep, each interval then stored
    and reversed: the two-level scheme many codes use.

    ``K`` is the interval with the fewest recomputations, ``(c - 1)(K - 1)``
    for ``c = ceil(N / K)`` intervals, among those that fit in ``s``
    snapshots (``c + K - 2 ≤ s``).  Simple and predictable, but it
    recomputes more than :func:`binomial_actions` with the same memory and
    needs ``s`` of order ``2 √N``; it is here mainly for comparison.
    """
    N = _validate.positive_int("n_steps", n_steps)
    s = _validate.positive_int("n_snapshots", n_snapshots)
    K = _periodic_interval(N, s)
    starts = list(range(0, N, K))
    for a, b in zip(starts[:-1], starts[1:]):
        yield Advance(a, b)
    for i in range(len(starts) - 1, -1, -1):
        a = starts[i]
        b = min(a + K, N)
        if b - 1 > a:
            yield Store(a, b - 1)
        if b == N:
            yield Turn()
        yield Reverse(a, b)


def _periodic_rows(n_steps, n_snapshots):
    K = _periodic_interval(n_steps, n_snapshots)
    return -(-n_steps // K) + K - 1


# name -> (actions(N, s), rows(N, s) of the snapshot stack)
SCHEDULES: dict[str, tuple[Callable, Callable]] = {
    "binomial": (binomial_actions, lambda N, s: min(s, N - 1) + 1),
    "periodic": (periodic_actions, _periodic_rows),
    "store_all": (lambda N, s: store_all_actions(N), lambda N, s: N),
}


# ---- the per-call choice ----

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


_SIZE = r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*"


def _parse_bytes(name, value) -> int:
    if isinstance(value, str):
        match = re.fullmatch(_SIZE, value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"`{name}` = {value!r} is not a size; write a number of bytes or "
                "a string such as '100 MB' or '2 GiB'."
            )
        value = float(match.group(1)) * _UNITS[unit]
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"`{name}` must be a number of bytes, got {value!r}.")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a positive number of bytes, got {value}.")
    return int(value)


class Checkpointing:
    """How the backward sweep gets its states: a schedule and its memory.

    Pass one to :class:`adjoint.Objective` (``checkpoint=``, the default for
    every gradient it computes), to ``Objective.value_and_grad(z,
    checkpoint=...)`` for one call, or to :func:`checkpointed_gradient`.

    Parameters
    ----------
    schedule : {'binomial', 'store_all', 'periodic'} or callable
        ``'binomial'`` (default): Revolve [1]_, the fewest recomputed steps
        for the snapshots given.  ``'store_all'``: every state kept, nothing
        recomputed, ``(N + 1) n`` floats.  ``'periodic'``: a snapshot every
        ``K`` steps, for comparison.  A callable ``f(N, s)`` returning an
        iterable of actions (see the module docstring) adds a schedule of
        one's own; it may hold at most ``s + 1`` states at once.
    n_snapshots : int, optional
        ``s``, the number of snapshots (the one holding ``x_0`` included, the
        state being worked on not, as Griewank and Walther count them).
    memory : int or str, optional
        A budget for the stored states in bytes (``100_000_000``, ``'100 MB'``,
        ``'2 GiB'``); ``s`` is the largest number whose ``s + 1`` states fit.
        Give ``n_snapshots`` or ``memory``, not both.
    storage : {'memory', 'disk'}
        ``'disk'`` keeps the snapshots in a memory-mapped file (removed
        afterwards) in ``directory`` (default: the system's temporary
        directory), for sequences whose snapshots outgrow the memory.  The
        operating system pages the file; ``memory`` then bounds the file.
    directory : str or os.PathLike, optional
        Where ``storage='disk'`` puts its file.

    Raises
    ------
    ValueError
        For an unknown ``schedule`` or ``storage``; when a binomial or
        periodic schedule gets both or neither of ``n_snapshots`` and
        ``memory``, or ``'store_all'`` gets either; for ``n_snapshots`` below
        1 or a ``memory`` that is not a positive size.
    TypeError
        For an ``n_snapshots`` that is not an integer or a ``memory`` that is
        neither a number nor a string.

    See Also
    --------
    checkpointed_gradient : run a schedule directly.
    binomial_forward_steps : the count the binomial schedule reaches.

    Notes
    -----
    The gradient is the same with every schedule: the backward sweep does the
    same arithmetic in the same order, only on recomputed states, so it
    agrees with store-all to the last bit (:class:`~adjoint.Sequence` and
    :class:`~adjoint.ODESequence`, explicit and implicit; tested to 1e-13).
    The cost ``J`` is bit for bit the same for ``Sequence``; an
    ``ODESequence`` sums it per segment, equal to rounding.  With
    ``'store_all'``, :class:`~adjoint.Objective` uses the sequence's own
    sweeps, so every sequence kind accepts it.

    Besides the stored states the driver keeps a working set that does not
    grow with ``N`` or ``s``: two states for advancing, ``x_N``, the state
    ending the segment being reversed and two adjoint vectors (an
    ``ODESequence`` adds chunk buffers of at most 3 MB).

    Time: each recomputed step costs one forward step.  ``Sequence`` runs a
    schedule's actions in compiled batches; other kinds call their segment
    hooks once per action, whose fixed cost (tens of microseconds, more for
    kernels passed as tuples) dominates when the segments are short, that is
    when ``s`` is a sizeable fraction of ``N``.

    When *not* to use it: when store-all fits in memory it is the fastest
    route.  A binomial budget of ``N`` states or more recomputes nothing, but
    still runs through the driver.

    Examples
    --------
    >>> Checkpointing("binomial", n_snapshots=20)
    Checkpointing('binomial', n_snapshots=20)
    >>> Checkpointing(memory="100 MB")
    Checkpointing('binomial', memory=100000000)
    >>> Checkpointing("store_all").stores_all
    True
    """

    def __init__(
        self,
        schedule: str | Callable = "binomial",
        *,
        n_snapshots: int | None = None,
        memory: int | str | None = None,
        storage: str = "memory",
        directory: str | os.PathLike | None = None,
    ):
        if callable(schedule):
            self.schedule = getattr(schedule, "__name__", "custom")
            self._actions = schedule
            self._rows = lambda N, s: min(s, N - 1) + 1
        else:
            _validate.choice("schedule", schedule, tuple(SCHEDULES))
            self.schedule = schedule
            self._actions, self._rows = SCHEDULES[schedule]
        self.storage = _validate.choice("storage", storage, ("memory", "disk"))
        self.directory = directory
        if self.schedule == "store_all":
            if n_snapshots is not None or memory is not None:
                raise ValueError(
                    "The 'store_all' schedule keeps every state, so it takes "
                    "neither `n_snapshots` nor `memory`; pass "
                    "`Checkpointing('binomial', memory=...)` to bound the memory."
                )
        elif (n_snapshots is None) == (memory is None):
            raise ValueError(
                f"The {self.schedule!r} schedule needs `n_snapshots` or `memory` "
                f"(one of them); got "
                f"{'both' if n_snapshots is not None else 'neither'}."
            )
        if n_snapshots is not None:
            if isinstance(n_snapshots, (int, np.integer)) and n_snapshots < 1:
                raise ValueError(
                    f"`n_snapshots` must be at least 1, got {n_snapshots}; pass "
                    "`schedule='store_all'` to keep every state."
                )
            n_snapshots = _validate.positive_int("n_snapshots", n_snapshots)
        self.n_snapshots = n_snapshots
        self.memory = None if memory is None else _parse_bytes("memory", memory)

    def __repr__(self) -> str:
        args = [repr(self.schedule)]
        if self.n_snapshots is not None:
            args.append(f"n_snapshots={self.n_snapshots}")
        if self.memory is not None:
            args.append(f"memory={self.memory}")
        if self.storage != "memory":
            args.append(f"storage={self.storage!r}")
        return f"Checkpointing({', '.join(args)})"

    @property
    def stores_all(self) -> bool:
        """True for the ``'store_all'`` schedule (nothing recomputed)."""
        return self.schedule == "store_all"

    def snapshots_for(self, seq: SequenceBase) -> int:
        """``s`` for this sequence (from ``memory`` and the size of a state)."""
        if self.stores_all:
            return seq.N
        if self.n_snapshots is not None:
            return self.n_snapshots
        state_bytes = _state_nbytes(seq)
        rows = self.memory // state_bytes
        if rows < 2:
            raise ValueError(
                f"`memory` = {self.memory} bytes holds {rows} state(s) of "
                f"{state_bytes} bytes; checkpointing needs room for at least two "
                "(one snapshot and the state worked on). Raise `memory`."
            )
        return int(rows - 1)


def as_checkpointing(value) -> Checkpointing | None:
    """``None`` (store-all through the sequence's own sweeps) or a
    :class:`Checkpointing`; the string ``'store_all'`` is accepted."""
    if value is None or isinstance(value, Checkpointing):
        return value
    if value == "store_all":
        return Checkpointing("store_all")
    raise TypeError(
        f"`checkpoint` must be None or a Checkpointing, got {value!r}; for example "
        "`Checkpointing('binomial', n_snapshots=50)`."
    )


# ---- what a checkpointed sweep reports ----


@dataclass(frozen=True)
class CheckpointStats:
    """What one gradient computation did with memory and recomputation.

    Attributes
    ----------
    schedule : str
        ``'store_all'``, ``'binomial'``, ``'periodic'`` or a custom name.
    n_steps : int
        ``N``.
    n_snapshots : int
        The snapshot budget ``s`` (``N`` for store-all).
    snapshots : int
        The most snapshots held at once; the state worked on is not counted
        (store-all holds ``x_0 … x_{N-1}`` besides it).
    forward_steps : int
        Steps run in all, the first sweep included.
    recomputed_steps : int
        ``forward_steps - N``: steps run again for the backward sweep.
    optimal_recomputed_steps : int or None
        For the binomial schedule, the closed-form fewest recomputations,
        ``binomial_forward_steps(N, s) + 1 - N``.
    peak_bytes : int
        The most bytes of stored states held at once (snapshots and the state
        worked on); the fixed working set of the driver is not counted.
    storage : str
        ``'memory'`` or ``'disk'``.
    seconds : float
        Wall time of the forward and backward sweeps.

    See Also
    --------
    checkpointed_gradient, CheckpointResult

    Examples
    --------
    :func:`checkpointed_gradient` fills one in; ``str`` gives one line.  The
    binomial schedule on ``N = 10`` steps with ``s = 3`` snapshots:

    >>> from adjoint import CheckpointStats, binomial_forward_steps
    >>> optimum = binomial_forward_steps(10, 3) + 1 - 10
    >>> stats = CheckpointStats("binomial", n_steps=10, n_snapshots=3,
    ...                         snapshots=3, forward_steps=16,
    ...                         recomputed_steps=6,
    ...                         optimal_recomputed_steps=optimum, peak_bytes=32)
    >>> print(stats)  # doctest: +ELLIPSIS
    binomial: N = 10, 3 snapshots held (of 3), 6 steps recomputed (optimum 6), ...
    """

    schedule: str
    n_steps: int
    n_snapshots: int
    snapshots: int
    forward_steps: int
    recomputed_steps: int
    optimal_recomputed_steps: int | None
    peak_bytes: int
    storage: str = "memory"
    seconds: float = 0.0

    def __str__(self) -> str:
        opt = (
            ""
            if self.optimal_recomputed_steps is None
            else f" (optimum {self.optimal_recomputed_steps})"
        )
        return (
            f"{self.schedule}: N = {self.n_steps}, {self.snapshots} snapshots held "
            f"(of {self.n_snapshots}), {self.recomputed_steps} steps recomputed"
            f"{opt}, peak {self.peak_bytes / 1e6:.3g} MB of states "
            f"({self.storage}), {self.seconds:.3g} s"
        )


@dataclass
class CheckpointResult:
    """Cost and gradient of a checkpointed sweep, with its statistics.

    Returned by :func:`checkpointed_gradient`.

    Attributes
    ----------
    J : float
        The cost.
    grad_x0 : ndarray, shape of ``x0``
        ``cost_weight · dJ/dx0``.
    grad_thetas : ndarray, shape of ``thetas``
        ``cost_weight · dJ/dθ``.
    grad_p : ndarray, shape of ``p``
        ``cost_weight · dJ/dp``.
    stats : CheckpointStats
        Memory and recomputation of the run.

    Examples
    --------
    The logistic map ``x_{k+1} = p x_k (1 - x_k)`` over ten steps with cost
    ``J = x_N``:

    >>> import adjoint
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
    >>> seq = adjoint.Sequence(step, step_vjp, n=1, N=10, n_p=1,
    ...                        terminal_cost=phi, terminal_cost_vjp=phi_vjp)
    >>> res = adjoint.checkpointed_gradient(
    ...     seq, [0.2], p=[2.5], checkpoint=adjoint.Checkpointing(n_snapshots=3))
    >>> round(res.J, 6), res.grad_p.round(6).tolist(), res.grad_thetas.shape
    (0.6, [0.160625], (10, 0))
    >>> res.stats.recomputed_steps
    6
    """

    J: float
    grad_x0: np.ndarray
    grad_thetas: np.ndarray
    grad_p: np.ndarray
    stats: CheckpointStats


def store_all_stats(seq: SequenceBase, xs, seconds: float = 0.0) -> CheckpointStats:
    """Statistics of a store-all sweep that kept the states ``xs``."""
    nbytes = (
        int(xs.nbytes)
        if isinstance(xs, np.ndarray)
        else int(sum(np.asarray(x).nbytes for x in xs))
    )
    return CheckpointStats(
        "store_all", seq.N, seq.N, seq.N, seq.N, 0, 0, nbytes, "memory", seconds
    )


# ---- the driver ----


def _state_shape(seq) -> tuple:
    return tuple(seq.x0_shape)


def _state_nbytes(seq) -> int:
    return int(np.prod(_state_shape(seq))) * np.dtype(np.float64).itemsize


def checkpointed_value(seq: SequenceBase, x0, thetas=None, p=None) -> float:
    """The cost ``J`` from one forward sweep that keeps two states only."""
    x0, thetas, p = seq._validate_inputs(x0, thetas, p)
    return _value(seq, x0, thetas, p)


def _value(seq, x0, thetas, p):
    scratch = np.empty((2,) + _state_shape(seq))
    J = seq._forward_segment(x0, thetas, p, 0, seq.N, scratch, 0.0)
    lam = np.empty(_state_shape(seq))
    return J + seq._terminal_segment(
        scratch[seq.N % 2], p, 0.0, lam, np.zeros(seq.p_shape)
    )


def checkpointed_gradient(
    seq: SequenceBase,
    x0,
    thetas=None,
    p=None,
    *,
    checkpoint: Checkpointing,
    cost_weight: float = 1.0,
) -> CheckpointResult:
    """Cost and gradient of a sequence with the states of a checkpointing schedule.

    Runs the actions of ``checkpoint``'s schedule with the sequence's segment
    hooks.  As a plain loop, for the binomial schedule with enough snapshots::

        xs = forward(x0)                 # Store(0, N-1), Turn()
        lam = dPhi/dx(xs[N])
        for k in N-1 … 0:                # Reverse(0, N)
            lam = dg_k/dx + (dF_k/dx)^T lam

    and with fewer snapshots the same backward loop, fed with states
    recomputed from the snapshots.

    Parameters
    ----------
    seq : SequenceBase
        A sequence with segment hooks (:class:`adjoint.Sequence` and the ODE
        sequences have them).
    x0, thetas, p : array_like
        As for the forward sweep.
    checkpoint : Checkpointing
        The schedule and its memory.
    cost_weight : float
        Weight of ``J`` in the backward sweep (1 for the gradient of ``J``).

    Returns
    -------
    CheckpointResult
        ``J``, the gradients with respect to ``x0``, ``thetas`` and ``p``, and
        :class:`CheckpointStats`.

    Raises
    ------
    TypeError
        If ``checkpoint`` is not a :class:`Checkpointing`.
    ValueError
        For inputs of the wrong shape, or a ``memory`` budget too small for
        two states.
    NotImplementedError
        If the sequence kind has no segment hooks.
    SweepError
        If a sweep fails, as for store-all.

    See Also
    --------
    Checkpointing : usually passed to :class:`Objective` instead, which then
        uses it for every gradient.

    Notes
    -----
    The gradient is bit for bit the one of store-all (same arithmetic on
    recomputed states); memory is at most ``s + 1`` states plus a fixed
    working set, time ``N`` plus the recomputed steps (``stats``).

    Examples
    --------
    The logistic map ``x_{k+1} = p x_k (1 - x_k)`` over ten steps with cost
    ``J = x_N``, reversed with three snapshots; the gradient equals
    store-all's and the recomputation is the binomial optimum:

    >>> import adjoint
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
    >>> seq = adjoint.Sequence(step, step_vjp, n=1, N=10, n_p=1,
    ...                        terminal_cost=phi, terminal_cost_vjp=phi_vjp)
    >>> res = adjoint.checkpointed_gradient(
    ...     seq, [0.2], p=[2.5], checkpoint=adjoint.Checkpointing(n_snapshots=3))
    >>> full = adjoint.checkpointed_gradient(
    ...     seq, [0.2], p=[2.5], checkpoint=adjoint.Checkpointing("store_all"))
    >>> bool((res.grad_p == full.grad_p).all()), res.grad_p.round(6).tolist()
    (True, [0.160625])
    >>> res.stats.snapshots, res.stats.recomputed_steps
    (3, 6)
    >>> res.stats.optimal_recomputed_steps
    6
    """
    if not isinstance(checkpoint, Checkpointing):
        raise TypeError(f"`checkpoint` must be a Checkpointing, got {checkpoint!r}.")
    x0, thetas, p = seq._validate_inputs(x0, thetas, p)
    N = seq.N
    s = checkpoint.snapshots_for(seq)
    actions = (
        checkpoint._actions(N, s) if not checkpoint.stores_all else store_all_actions(N)
    )
    rows = int(checkpoint._rows(N, s))
    start = time.perf_counter()
    with _snapshot_pool(rows, _state_shape(seq), checkpoint) as pool:
        out = _execute(seq, x0, thetas, p, actions, pool, cost_weight)
    J, grad_x0, grad_thetas, grad_p, forward_steps, peak_rows = out
    optimal = (
        binomial_forward_steps(N, min(s, N)) + 1 - N
        if checkpoint.schedule == "binomial"
        else None
    )
    stats = CheckpointStats(
        schedule=checkpoint.schedule,
        n_steps=N,
        n_snapshots=s,
        snapshots=peak_rows - 1,
        forward_steps=forward_steps,
        recomputed_steps=forward_steps - N,
        optimal_recomputed_steps=optimal,
        peak_bytes=peak_rows * _state_nbytes(seq),
        storage=checkpoint.storage,
        seconds=time.perf_counter() - start,
    )
    logger.info("checkpointed gradient: %s", stats)
    return CheckpointResult(J, grad_x0, grad_thetas, grad_p, stats)


class _snapshot_pool:
    """The snapshot stack's storage: an array in memory or a mapped file."""

    def __init__(self, rows, shape, checkpoint):
        self.rows, self.shape, self.checkpoint = rows, shape, checkpoint
        self._dir = None

    def __enter__(self):
        shape = (self.rows,) + self.shape
        if self.checkpoint.storage == "memory":
            return np.empty(shape)  # pages are touched only when rows are used
        self._dir = tempfile.TemporaryDirectory(
            prefix="adjoint-snapshots-", dir=self.checkpoint.directory
        )
        path = os.path.join(self._dir.name, "snapshots.f64")
        self._map = np.memmap(path, dtype=np.float64, mode="w+", shape=shape)
        return self._map.view(np.ndarray)

    def __exit__(self, *exc):
        if self._dir is not None:
            self._map._mmap.close()
            del self._map
            self._dir.cleanup()
        return False


class _ScheduleBug(AssertionError):
    pass


def _bug(message):
    return _ScheduleBug(
        f"{message}. This is a bug in the checkpointing schedule; please report "
        "it with N and the snapshot count."
    )


# Actions per compiled batch on the fast path: the arrays are small (24 bytes
# an action) and one call per batch costs tens of microseconds.
BATCH = 4096
# Set to False to run every sequence through the generic hooks (tests do, to
# compare the two paths).
USE_COMPILED_DRIVER = True


def _execute(seq, x0, thetas, p, actions: Iterable, pool, cost_weight):
    """Run a schedule's actions; return J, the gradients, steps run, peak rows.

    Sequences with a compiled executor (``_run_actions``) run the actions in
    batches there, which saves the per-call overhead of the hooks (tens of
    microseconds, the cost of a short segment); every other kind runs them
    one by one through its segment hooks.
    """
    if USE_COMPILED_DRIVER and getattr(seq, "_run_actions", None) is not None:
        return _execute_compiled(seq, x0, thetas, p, actions, pool, cost_weight)
    return _execute_hooks(seq, x0, thetas, p, actions, pool, cost_weight)


def _encode(actions, N, size):
    """Batches of actions as int rows ``(code, a, b)``."""
    codes = {
        Advance: sk.ACTION_ADVANCE,
        Store: sk.ACTION_STORE,
        Reverse: sk.ACTION_REVERSE,
    }
    rows = []
    for action in actions:
        kind = type(action)
        if kind is Turn:
            rows.append((sk.ACTION_TURN, N - 1, N))
        elif kind in codes:
            rows.append((codes[kind], action[0], action[1]))
        else:
            raise TypeError(f"A schedule yielded {action!r}, which is no action.")
        if len(rows) == size:
            yield np.array(rows, dtype=np.intp)
            rows = []
    if rows:
        yield np.array(rows, dtype=np.intp)


def _execute_compiled(seq, x0, thetas, p, actions, pool, cost_weight):
    N = seq.N
    rows = pool.shape[0]
    state_shape = pool.shape[1:]
    pool[0] = x0
    held = np.empty(rows, dtype=np.intp)
    held[0] = 0
    scratch = np.empty((2,) + state_shape)
    lam = np.zeros(state_shape)
    x_end = np.empty(state_shape)
    grad_thetas = np.zeros_like(thetas)
    grad_p = np.zeros(np.shape(p))
    # rows in use, first-sweep front, step of λ (-1: before the turn), steps
    # run, peak rows, failing action
    state = np.array([1, 0, -1, 0, 1, -1], dtype=np.intp)
    J_acc = np.zeros(1)
    for batch in _encode(actions, N, BATCH):
        info = seq._run_actions(
            batch,
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
        )
        if info[0] == sk.STATUS_SCHEDULE:
            a = batch[info[1]]
            raise _bug(
                f"action (code {a[0]}, {a[1]}, {a[2]}) does not fit the "
                f"{state[0]} states held"
            )
        if info[0] != 0:
            kind = batch[state[5], 0]
            sweep = "adjoint" if kind == sk.ACTION_REVERSE else "forward"
            if kind == sk.ACTION_TURN and info[1] == -1:
                info[1] = N
            seq._raise_for_status(info, sweep, _NotKept())
    if state[2] != 0 or state[0] != 0:
        raise _bug(
            f"the schedule ended with λ at {state[2]} and {state[0]} states held"
        )
    J = float(J_acc[0])
    if not np.isfinite(J):
        raise SweepError(
            f"The cost is not finite (J = {J}); the states stayed finite, so look "
            "at the cost kernels and `data`."
        )
    return J, lam.copy(), grad_thetas, grad_p, int(state[3]), int(state[4])


class _NotKept:
    """Stands for states an error message would show but the schedule dropped."""

    def __getitem__(self, k):
        return "(not kept by the checkpointing schedule)"


def _execute_hooks(seq, x0, thetas, p, actions: Iterable, pool, cost_weight):
    """The generic driver: one hook call per action."""
    N = seq.N
    rows = pool.shape[0]
    state_shape = pool.shape[1:]

    # Set-up: x_0 is the first snapshot.
    pool[0] = x0
    top = 1  # rows in use; pool[top - 1] is the state worked on
    first = np.empty(rows, dtype=np.intp)  # step index held by each row
    first[0] = 0
    scratch = np.empty((2,) + state_shape)
    lam = np.zeros(state_shape)
    x_end = np.empty(state_shape)  # x_b of the next Reverse(a, b)
    grad_thetas = np.zeros_like(thetas)
    grad_p = np.zeros(np.shape(p))
    J = 0.0
    frontier = 0  # steps below have been run once and their costs added
    lam_at = None  # λ is λ_{lam_at}; None before the turn
    forward_steps = 0
    peak = 1

    # Main loop: one action at a time.
    for action in actions:
        kind = type(action)
        if kind is Reverse:
            a, b = action
            length = b - a
            if lam_at != b or length < 1 or top < length:
                raise _bug(f"{action} with λ at {lam_at} and {top} states held")
            if first[top - length] != a or first[top - 1] != b - 1:
                raise _bug(
                    f"{action} finds states {first[top - length]} … "
                    f"{first[top - 1]} on top"
                )
            seq._adjoint_segment(
                pool[top - length : top],
                thetas,
                p,
                a,
                lam,
                grad_thetas,
                grad_p,
                cost_weight,
                x_end,
            )
            x_end[...] = pool[top - length]  # x_a ends the next segment reversed
            top -= length
            lam_at = a
            continue

        if kind is Turn:
            a, b = N - 1, N
        else:
            a, b = action
        if first[top - 1] != a or not a < b <= N:
            raise _bug(f"{action} starts from x_{first[top - 1]}")
        if a < frontier < b:
            raise _bug(f"{action} crosses the first sweep's front at {frontier}")
        J0 = J if a == frontier else None
        if kind is Store:
            if top + (b - a) > rows:
                raise _bug(f"{action} needs more than the {rows} rows planned")
            segment = pool[top - 1 : top + (b - a)]
            J1 = seq._forward_segment(segment[0], thetas, p, a, b, segment, J0)
            first[top : top + (b - a)] = np.arange(a + 1, b + 1)
            top += b - a
        else:
            J1 = seq._forward_segment(pool[top - 1], thetas, p, a, b, scratch, J0)
            if kind is Advance:
                if top >= rows:
                    raise _bug(f"{action} needs more than the {rows} rows planned")
                pool[top] = scratch[(b - a) % 2]
                first[top] = b
                top += 1
            elif kind is Turn:
                if lam_at is not None or a != frontier:
                    raise _bug("Turn() taken twice or before the first sweep ends")
                J1 += seq._terminal_segment(scratch[1], p, cost_weight, lam, grad_p)
                x_end[...] = scratch[1]
                lam_at = N
            else:
                raise TypeError(f"A schedule yielded {action!r}, which is no action.")
        forward_steps += b - a
        if J0 is not None:
            J = J1
            frontier = b
        peak = max(peak, top)

    # Finish: every step reversed, no state left behind.
    if lam_at != 0 or top != 0:
        raise _bug(f"the schedule ended with λ at {lam_at} and {top} states held")
    return J, lam.copy(), grad_thetas, grad_p, forward_steps, peak
