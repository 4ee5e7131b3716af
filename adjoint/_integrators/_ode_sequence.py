"""ODE integrators as state-transition sequences with exact discrete adjoints.

:class:`ODESequence` turns an :class:`~adjoint.ODESystem` and a fixed time
grid into the sequence ``x_{k+1} = F_k(x_k, u_k, p)`` of one integrator step
per time step, so that :class:`~adjoint.Objective` and the gradient checks
work on it like on any other sequence.  Explicit Runge–Kutta steps reverse
through their stages; implicit steps run Newton forward and one transposed
linear solve per step backward.
"""

from __future__ import annotations

import warnings

import numpy as np
from numba.core.errors import TypingError

from .. import _validate
from .._errors import SweepError
from .._fastcall import fast
from .._homogeneous import _cost_pair, _zero_kernels
from .._kernel_types import STATUS_NONFINITE
from .._sequence import SequenceBase, Trajectory
from .._sweeps_kernels import terminal_segment
from .._systems import ODESystem, _placeholders
from . import _kernels as ik
from . import _sparse
from ._observations import ObservationCost
from ._tableaus import EXPLICIT_SCHEMES, IMPLICIT_SCHEMES, Tableau

# The sweeps called through their compiled entry points after the first call
# of each argument kind (see adjoint._fastcall: Numba's per-call typing of the
# kernel-pointer tuples costs more than a short sweep).
_rk_forward = fast(ik.rk_forward)
_rk_adjoint = fast(ik.rk_adjoint)
_rk_tangent = fast(ik.rk_tangent)
_implicit_forward = fast(ik.implicit_forward)
_implicit_adjoint = fast(ik.implicit_adjoint)
_implicit_tangent = fast(ik.implicit_tangent)

__all__ = ["ODESequence"]

# Newton defaults of the implicit schemes: the iteration stops once the update
# is below NEWTON_TOL relative to (1 + |y|); with quadratic convergence the
# state is then exact to rounding, which the discrete adjoint relies on.
NEWTON_TOL = 1e-10
NEWTON_MAX_ITER = 20

SCHEME_NAMES = tuple(EXPLICIT_SCHEMES) + tuple(IMPLICIT_SCHEMES)


class ODESequence(SequenceBase):
    """An ODE integrated on a fixed time grid, as a sequence with an exact adjoint.

    Step ``k`` advances ``x_k`` at ``t_k = t0 + k dt`` to ``x_{k+1}`` with one
    step of ``scheme`` for ``dx/dt = f(t, x, p, u_k)``: the controls ``u_k``
    are the per-step parameters ``θ_k`` (piecewise constant in time, ``m =
    n_u``), ``p`` is shared, ``x_0`` the initial state.  The cost is
    ``J = Φ(x_N, p) + Σ_k g_k(x_k, u_k, p)``.  As a plain Python loop::

        xs[0] = x0
        for k in range(N):
            J += running_cost(k, xs[k], us[k], p, consts, data[k])
            xs[k + 1] = scheme_step(f, t0 + k * dt, dt, xs[k], p, us[k])
        J += terminal_cost(xs[N], p, consts, data[N])

    The gradient (:meth:`Objective.value_and_grad`) is the exact derivative
    of this discrete computation, equal to complex step to rounding.

    Parameters
    ----------
    system : ODESystem
        The right-hand side and its Jacobian products.
    scheme : str or Tableau, optional
        ``'euler'``, ``'heun'``, ``'rk4'`` (default), ``'dopri5'`` (Dormand–
        Prince at fixed step, fifth-order weights), ``'backward_euler'``,
        ``'implicit_midpoint'``, ``'crank_nicolson'``, or a :class:`Tableau`
        of any explicit Runge–Kutta scheme.
    t0 : float, optional
        Initial time (default 0).
    dt : float
        Step size, positive.
    N : int
        Number of steps; the final time is ``t0 + N dt``.
    consts : array_like, optional
        Constants handed to the cost kernels.
    data : array_like, shape (N + 1, q), optional
        Per-step data for the cost kernels (row ``k`` at step ``k``, row
        ``N`` for the terminal cost).
    running_cost, running_cost_vjp, terminal_cost, terminal_cost_vjp : optional
        Cost kernels with the conventions of :mod:`adjoint.kernels`, where
        ``theta`` is the control ``u_k``.
    observations : ObservationCost, optional
        A least-squares misfit from :func:`~adjoint.observation_cost`; gives
        the four cost kernels and ``data`` (do not pass those as well).

    Other Parameters
    ----------------
    store_stages : bool, optional
        Explicit schemes: keep the stage states of every step (memory
        ``N·s·n`` floats) so the backward sweep needs only VJPs (default);
        ``False`` recomputes each step's stages in the backward sweep.
    max_iter : int, optional
        Implicit schemes: Newton iterations per step (default 20).
    tol : float, optional
        Implicit schemes: Newton stops when ``max|δ| <= tol (1 + max|y|)``
        (default 1e-10).
    linear_solver : {'auto', 'dense', 'sparse'}, optional
        Implicit schemes: ``'dense'`` runs the compiled sweeps with dense LU;
        ``'sparse'`` runs a Python loop over steps with SciPy's sparse LU
        (``splu``) of ``I - θ dt ∂f/∂x``, the Jacobian assembled from one JVP
        per group of structurally independent columns of
        ``system.jac_sparsity``.  ``'auto'`` (default) is sparse when the
        system declares a sparsity pattern or bandwidth.

    Raises
    ------
    ValueError
        For a bad ``dt`` or ``N``, an unknown scheme name, or sizes that do
        not fit together.
    NotImplementedError
        For an implicit :class:`Tableau` (use one of the implicit schemes by
        name).
    TypeError
        If ``system`` is not an :class:`ODESystem`, ``scheme`` is neither a
        name nor a :class:`Tableau`, or ``observations`` is not an
        :class:`~adjoint.ObservationCost`.

    Warns
    -----
    UserWarning
        When ``max_iter``, ``tol`` or ``linear_solver`` is given with an
        explicit scheme, where it has no effect.

    Notes
    -----
    Explicit schemes: the backward sweep runs through the stages in reverse
    with one VJP of ``f`` per stage; cost ``s`` VJPs per step.  Implicit
    schemes: Newton with the exact Jacobian each iteration (dense LU for
    small systems, or sparse LU, see ``linear_solver``); the backward sweep
    rebuilds ``I - θ dt ∂f/∂x`` at the converged state and does one
    transposed solve per step, plus one or two VJPs.  A :class:`SweepError`
    names the step where Newton failed and its residual.  On stiff problems
    prefer ``'backward_euler'``: implicit midpoint and Crank–Nicolson are not
    L-stable, so fast modes (and gradients with respect to them, such as a
    stiff component of ``x0``) oscillate instead of decaying.

    Examples
    --------
    Fit the growth rate of a logistic model to one observation:

    >>> import numpy as np
    >>> from adjoint import ODESystem, ODESequence, Objective, observation_cost
    >>> def logistic(t, x, p, u, out):
    ...     out[0] = p[0] * x[0] * (1.0 - x[0])
    ...     return 0
    >>> system = ODESystem.from_rhs(logistic, n=1, n_p=1)
    >>> obs = observation_cost([100], [0.95], N=100)
    >>> seq = ODESequence(system, scheme="rk4", dt=0.05, N=100, observations=obs)
    >>> obj = Objective(seq, x0=[0.1], p=[1.0], wrt="p")
    >>> J, grad = obj.value_and_grad(obj.z0)
    >>> bool(grad[0] < 0)  # a faster growth reduces the misfit
    True
    """

    def __init__(
        self,
        system: ODESystem,
        *,
        scheme="rk4",
        t0: float = 0.0,
        dt: float,
        N: int,
        consts=(),
        data=None,
        running_cost=None,
        running_cost_vjp=None,
        terminal_cost=None,
        terminal_cost_vjp=None,
        observations: ObservationCost | None = None,
        store_stages: bool = True,
        max_iter: int | None = None,
        tol: float | None = None,
        linear_solver: str = "auto",
    ):
        # ---- the system, grid and scheme ----
        if not isinstance(system, ODESystem):
            raise TypeError(
                f"`system` must be an ODESystem, got {type(system).__name__}; build "
                "one with ODESystem.from_sympy, from_kernels or from_rhs."
            )
        self.system = system
        self.n = system.n
        self.m = system.n_u
        self.n_p = system.n_p
        self.dt = _validate.positive_float("dt", dt)
        self.t0 = _validate.finite_float("t0", t0)
        self.N = _validate.positive_int("N", N)
        self.x0_shape = (self.n,)
        self.theta_shape = (self.N, self.m)
        self.p_shape = (self.n_p,)
        self.scheme, self.tableau, self._implicit_code = _resolve_scheme(scheme)
        self.store_stages = bool(store_stages)

        # ---- implicit-scheme options ----
        _validate.choice("linear_solver", linear_solver, ("auto", "dense", "sparse"))
        if self.tableau is not None:
            for name, value in (("max_iter", max_iter), ("tol", tol)):
                if value is not None:
                    warnings.warn(
                        f"`{name}` has no effect with the explicit scheme "
                        f"{self.scheme!r}.",
                        UserWarning,
                        stacklevel=2,
                    )
            if linear_solver != "auto":
                warnings.warn(
                    f"`linear_solver` has no effect with the explicit scheme "
                    f"{self.scheme!r}.",
                    UserWarning,
                    stacklevel=2,
                )
        self.max_iter = _validate.positive_int(
            "max_iter", NEWTON_MAX_ITER if max_iter is None else max_iter
        )
        self.tol = _validate.positive_float("tol", NEWTON_TOL if tol is None else tol)
        if linear_solver == "sparse" and system.jac_sparsity is None:
            raise ValueError(
                "`linear_solver='sparse'` needs the system's Jacobian sparsity; "
                "build the system with `jac_sparsity=` or `bandwidth=`."
            )
        self.sparse = self.tableau is None and (
            linear_solver == "sparse"
            or (linear_solver == "auto" and system.jac_sparsity is not None)
        )

        # ---- costs and data ----
        if observations is not None:
            if not isinstance(observations, ObservationCost):
                raise TypeError(
                    "`observations` must come from adjoint.observation_cost, got "
                    f"{type(observations).__name__}."
                )
            given = [
                name
                for name, value in (
                    ("data", data),
                    ("running_cost", running_cost),
                    ("running_cost_vjp", running_cost_vjp),
                    ("terminal_cost", terminal_cost),
                    ("terminal_cost_vjp", terminal_cost_vjp),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"`observations` supplies the cost kernels and data; do not pass "
                    f"{', '.join(f'`{g}`' for g in given)} as well."
                )
            observations.check_fits(self.n, self.N)
            running_cost, running_cost_vjp, terminal_cost, terminal_cost_vjp, data = (
                observations
            )
        self.observations = observations
        self.consts = _validate.real_array("consts", np.atleast_1d(consts)).ravel()
        self.data = _data(data, self.N)
        zero = _zero_kernels()
        self.running_cost, self.running_cost_vjp = _cost_pair(
            "running_cost", running_cost, running_cost_vjp, zero[0], zero[1]
        )
        self.terminal_cost, self.terminal_cost_vjp = _cost_pair(
            "terminal_cost", terminal_cost, terminal_cost_vjp, zero[2], zero[3]
        )
        if (
            self.data.shape[1] > 0
            and self.running_cost is zero[0]
            and self.terminal_cost is zero[2]
        ):
            raise ValueError(
                "`data` was given but no cost reads it, so J would be 0; pass "
                "`observations=observation_cost(...)` or cost kernels "
                "(`running_cost=`, `terminal_cost=`, e.g. from costs_from_sympy)."
            )

    def __repr__(self) -> str:
        return (
            f"<ODESequence {self.system.name}, scheme={self.scheme!r}, N={self.N}, "
            f"dt={self.dt:g}, t0={self.t0:g}>"
        )

    @property
    def times(self) -> np.ndarray:
        """``t_k = t0 + k dt`` for ``k = 0 … N``, shape (N + 1,).

        Examples
        --------
        >>> from adjoint import ODESequence, ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> seq = ODESequence(ODESystem.from_rhs(decay, n=1, n_p=1), dt=0.5, N=4)
        >>> seq.times, seq.t1
        (array([0. , 0.5, 1. , 1.5, 2. ]), 2.0)
        """
        return self.t0 + self.dt * np.arange(self.N + 1)

    @property
    def t1(self) -> float:
        """The final time ``t0 + N dt``."""
        return self.t0 + self.N * self.dt

    @property
    def is_explicit(self) -> bool:
        """True for an explicit Runge–Kutta scheme, False for an implicit one.

        Examples
        --------
        >>> from adjoint import ODESequence, ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> system = ODESystem.from_rhs(decay, n=1, n_p=1)
        >>> ODESequence(system, scheme="rk4", dt=0.1, N=10).is_explicit
        True
        >>> ODESequence(system, scheme="backward_euler", dt=0.1, N=10).is_explicit
        False
        """
        return self.tableau is not None

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
                f"the sequence has N = {self.N} steps with n_u = {self.m} controls each"
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

    # ---- sweeps ----

    def _forward_impl(self, x0, thetas, p) -> Trajectory:
        self.system._first_use(self.t0, x0, p, thetas[0])
        if self.sparse:
            xs, J, extra = _sparse.forward(self, x0, thetas, p)
            return self._finish(Trajectory(x0, thetas, p, xs, J, extra))
        fns, modes = self.system.kernel_tuple(), self.system.modes
        xs = np.empty((self.N + 1, self.n))
        info = np.zeros(4, dtype=np.intp)
        finfo = np.zeros(1)
        if self.is_explicit:
            tab = self.tableau
            rows = self.N if self.store_stages else 0
            stages = np.empty((rows, tab.n_stages, self.n))
            J = _rk_forward(
                fns,
                self._costs(),
                tab.A,
                tab.b,
                tab.c,
                self.t0,
                self.dt,
                x0,
                thetas,
                p,
                self.consts,
                self.data,
                0,
                self.N,
                xs,
                stages,
                info,
            )
            extra = {"stages": stages}
        else:
            J = _implicit_forward(
                fns,
                modes,
                self._costs(),
                self._implicit_code,
                self.t0,
                self.dt,
                x0,
                thetas,
                p,
                self.consts,
                self.data,
                self.max_iter,
                self.tol,
                0,
                self.N,
                xs,
                info,
                finfo,
            )
            extra = {"nit": int(info[2])}
        self._raise_for_status(info, finfo, "forward", xs)
        return self._finish(Trajectory(x0, thetas, p, xs, float(J), extra))

    def _finish(self, traj):
        if not np.isfinite(traj.J):
            raise SweepError(
                f"The cost is not finite (J = {traj.J}); the states stayed finite, "
                "so look at the cost kernels and `data`."
            )
        return traj

    def _adjoint_impl(self, traj, xs_bar, cost_weight):
        if xs_bar is None:
            xs_bar = np.zeros_like(traj.xs)
        xs_bar = np.ascontiguousarray(xs_bar, dtype=np.float64)
        cost_weight = float(cost_weight)
        if self.sparse:
            lams, grad_us, grad_p = _sparse.adjoint(self, traj, xs_bar, cost_weight)
            traj.extra["lams"] = lams
            return lams[0].copy(), grad_us, grad_p
        fns, modes = self.system.kernel_tuple(), self.system.modes
        lams = np.empty_like(traj.xs)
        grad_us = np.empty(self.theta_shape)
        grad_p = np.zeros(self.p_shape)
        info = np.zeros(4, dtype=np.intp)
        if self.is_explicit:
            tab = self.tableau
            _rk_adjoint(
                fns,
                modes,
                self._costs(),
                tab.A,
                tab.b,
                tab.c,
                self.t0,
                self.dt,
                traj.xs,
                traj.thetas,
                traj.p,
                self.consts,
                self.data,
                traj.extra["stages"],
                xs_bar,
                cost_weight,
                0,
                self.N,
                lams,
                grad_us,
                grad_p,
                info,
            )
        else:
            _implicit_adjoint(
                fns,
                modes,
                self._costs(),
                self._implicit_code,
                self.t0,
                self.dt,
                traj.xs,
                traj.thetas,
                traj.p,
                self.consts,
                self.data,
                xs_bar,
                cost_weight,
                0,
                self.N,
                lams,
                grad_us,
                grad_p,
                info,
            )
        self._raise_for_status(info, None, "adjoint", lams)
        traj.extra["lams"] = lams
        return lams[0].copy(), grad_us, grad_p

    def _tangent_impl(self, traj, x0_tan, thetas_tan, p_tan):
        x0_tan = np.ascontiguousarray(x0_tan, dtype=np.float64)
        thetas_tan = np.ascontiguousarray(thetas_tan, dtype=np.float64)
        p_tan = np.ascontiguousarray(p_tan, dtype=np.float64)
        if self.sparse:
            return _sparse.tangent(self, traj, x0_tan, thetas_tan, p_tan)
        fns, modes = self.system.kernel_tuple(), self.system.modes
        xs_tan = np.empty_like(traj.xs)
        info = np.zeros(4, dtype=np.intp)
        if self.is_explicit:
            tab = self.tableau
            J_tan = _rk_tangent(
                fns,
                modes,
                self._costs(),
                tab.A,
                tab.b,
                tab.c,
                self.t0,
                self.dt,
                traj.xs,
                traj.thetas,
                traj.p,
                self.consts,
                self.data,
                traj.extra["stages"],
                x0_tan,
                thetas_tan,
                p_tan,
                0,
                self.N,
                xs_tan,
                info,
            )
        else:
            J_tan = _implicit_tangent(
                fns,
                modes,
                self._costs(),
                self._implicit_code,
                self.t0,
                self.dt,
                traj.xs,
                traj.thetas,
                traj.p,
                self.consts,
                self.data,
                x0_tan,
                thetas_tan,
                p_tan,
                0,
                self.N,
                xs_tan,
                info,
            )
        self._raise_for_status(info, None, "tangent", xs_tan)
        return xs_tan, float(J_tan)

    # ---- complex sweeps, for Hessian-vector products (adjoint._hessian) ----

    def _gradient_complex_impl(self, x0, thetas, p):
        # The forward and adjoint sweeps above, on complex128 states with the
        # kernels compiled for complex128 (see SequenceBase): Newton runs in
        # complex arithmetic with the complex Jacobian, so the imaginary part
        # converges with the real part.
        system = self.system
        if self.sparse:
            raise NotImplementedError(
                "Complex-step Hessian-vector products are not available with "
                "`linear_solver='sparse'`; use `method='fd'`."
            )
        if system.modes[0] != ik.MODE_KERNEL:
            raise NotImplementedError(
                f"`{system.name}` forms its VJP by complex step, which cannot be "
                "nested inside the complex step of a Hessian-vector product; build "
                "the system with `rhs_vjp` (ODESystem.from_kernels or from_sympy), "
                "or use `method='fd'`."
            )
        ph = _placeholders()
        modes = system.modes.copy()
        jac = ph[2]
        if not self.is_explicit:
            # ∂f/∂x by the complex kernel, else by rows of the complex VJP.
            modes[2] = ik.MODE_VIA_VJP
            if system.rhs_jac_x is not None:
                try:
                    system.rhs_jac_x.cfunc_complex
                    jac, modes[2] = system.rhs_jac_x, ik.MODE_KERNEL
                except NotImplementedError:
                    pass
        fns = (
            system.rhs.cfunc_complex,
            system.rhs_vjp.cfunc_complex,
            ph[1].cfunc_complex,
            jac.cfunc_complex,
            ph[3].cfunc_complex,
        )
        costs = tuple(
            k.cfunc_complex
            for k in (
                self.running_cost,
                self.running_cost_vjp,
                self.terminal_cost,
                self.terminal_cost_vjp,
            )
        )
        xs = np.empty((self.N + 1, self.n), dtype=np.complex128)
        info = np.zeros(4, dtype=np.intp)
        finfo = np.zeros(1)
        if self.is_explicit:
            tab = self.tableau
            stages = np.empty((self.N, tab.n_stages, self.n), dtype=np.complex128)
            J = _rk_forward(
                fns,
                costs,
                tab.A,
                tab.b,
                tab.c,
                self.t0,
                self.dt,
                x0,
                thetas,
                p,
                self.consts,
                self.data,
                0,
                self.N,
                xs,
                stages,
                info,
            )
        else:
            J = _implicit_forward(
                fns,
                modes,
                costs,
                self._implicit_code,
                self.t0,
                self.dt,
                x0,
                thetas,
                p,
                self.consts,
                self.data,
                self.max_iter,
                self.tol,
                0,
                self.N,
                xs,
                info,
                finfo,
            )
        self._raise_for_status(info, finfo, "forward", xs)
        lams = np.empty_like(xs)
        grad_us = np.empty(self.theta_shape, dtype=np.complex128)
        grad_p = np.zeros(self.p_shape, dtype=np.complex128)
        xs_bar = np.zeros_like(xs)
        if self.is_explicit:
            _rk_adjoint(
                fns,
                modes,
                costs,
                tab.A,
                tab.b,
                tab.c,
                self.t0,
                self.dt,
                xs,
                thetas,
                p,
                self.consts,
                self.data,
                stages,
                xs_bar,
                1.0,
                0,
                self.N,
                lams,
                grad_us,
                grad_p,
                info,
            )
        else:
            _implicit_adjoint(
                fns,
                modes,
                costs,
                self._implicit_code,
                self.t0,
                self.dt,
                xs,
                thetas,
                p,
                self.consts,
                self.data,
                xs_bar,
                1.0,
                0,
                self.N,
                lams,
                grad_us,
                grad_p,
                info,
            )
        self._raise_for_status(info, None, "adjoint", lams)
        return xs, complex(J), lams[0].copy(), grad_us, grad_p

    # ---- segments, for checkpointed gradients (see SequenceBase) ----
    # The segment sweeps above keep a row per step (states, λ); these hooks run
    # them in chunks of at most _chunk() steps so the working set stays fixed
    # however long the segment, with the terminal cost left to
    # _terminal_segment.  The stages are recomputed in the backward sweep.

    def _chunk(self):
        return int(min(1024, max(16, 2**20 // (8 * self.n))))

    def _segment_costs(self):
        zero = _zero_kernels()
        return (
            self.running_cost.cfunc,
            self.running_cost_vjp.cfunc,
            zero[2].cfunc,
            zero[3].cfunc,
        )

    def _segment_run(self, x, thetas, p, lo, hi, xs_out):
        if self.sparse:
            raise NotImplementedError(
                "Checkpointing is not available with `linear_solver='sparse'`; use "
                "`linear_solver='dense'` or `checkpoint=None`."
            )
        fns, costs = self.system.kernel_tuple(), self._segment_costs()
        info = np.zeros(4, dtype=np.intp)
        finfo = np.zeros(1)
        if self.is_explicit:
            tab = self.tableau
            J = _rk_forward(
                fns,
                costs,
                tab.A,
                tab.b,
                tab.c,
                self.t0,
                self.dt,
                x,
                thetas,
                p,
                self.consts,
                self.data,
                lo,
                hi,
                xs_out,
                np.empty((0, tab.n_stages, self.n)),
                info,
            )
        else:
            J = _implicit_forward(
                fns,
                self.system.modes,
                costs,
                self._implicit_code,
                self.t0,
                self.dt,
                x,
                thetas,
                p,
                self.consts,
                self.data,
                self.max_iter,
                self.tol,
                lo,
                hi,
                xs_out,
                info,
                finfo,
            )
        if info[0] != 0:
            k = int(info[1])
            rows = {k: xs_out[k - lo], k + 1: xs_out[k - lo + 1]}
            self._raise_for_status(info, finfo, "forward", rows)
        return float(J)

    def _forward_segment(self, x_a, thetas, p, k_a, k_b, xs_out, J0=None):
        if k_a == 0:
            self.system._first_use(self.t0, x_a, p, thetas[0])
        if xs_out.shape[0] == k_b - k_a + 1:  # keep every state
            J = self._segment_run(x_a, thetas, p, k_a, k_b, xs_out)
        else:  # two rows: chunks through a scratch buffer
            chunk = min(k_b - k_a, self._chunk())
            buf = np.empty((chunk + 1, self.n))
            x, J = x_a, 0.0
            for lo in range(k_a, k_b, chunk):
                hi = min(lo + chunk, k_b)
                J += self._segment_run(x, thetas, p, lo, hi, buf[: hi - lo + 1])
                x = buf[hi - lo]
            xs_out[(k_b - k_a - 1) % 2] = buf[hi - lo - 1]
            xs_out[(k_b - k_a) % 2] = buf[hi - lo]
        return None if J0 is None else J0 + J

    def _adjoint_segment(
        self, xs, thetas, p, k_a, lam, grad_thetas, grad_p, cost_weight, x_end
    ):
        fns, modes, costs = (
            self.system.kernel_tuple(),
            self.system.modes,
            self._segment_costs(),
        )
        chunk = min(xs.shape[0], self._chunk())
        xs_buf = np.zeros((chunk + 1, self.n))
        bar = np.zeros((chunk + 1, self.n))
        lams = np.empty((chunk + 1, self.n))
        info = np.zeros(4, dtype=np.intp)
        k_b = k_a + xs.shape[0]
        hi = k_b
        while hi > k_a:
            lo = max(k_a, hi - chunk)
            m = hi - lo
            xs_buf[:m] = xs[lo - k_a : hi - k_a]
            xs_buf[m] = x_end if hi == k_b else xs[hi - k_a]  # implicit steps read it
            # λ_hi enters as the last row of λ, or as x̄_N when hi == N (the
            # sweep then starts from x̄_N plus a zero terminal cost).
            bar[m] = lam
            lams[m] = lam
            if self.is_explicit:
                tab = self.tableau
                _rk_adjoint(
                    fns,
                    modes,
                    costs,
                    tab.A,
                    tab.b,
                    tab.c,
                    self.t0,
                    self.dt,
                    xs_buf[: m + 1],
                    thetas,
                    p,
                    self.consts,
                    self.data,
                    np.empty((0, tab.n_stages, self.n)),
                    bar[: m + 1],
                    float(cost_weight),
                    lo,
                    hi,
                    lams[: m + 1],
                    grad_thetas,
                    grad_p,
                    info,
                )
            else:
                _implicit_adjoint(
                    fns,
                    modes,
                    costs,
                    self._implicit_code,
                    self.t0,
                    self.dt,
                    xs_buf[: m + 1],
                    thetas,
                    p,
                    self.consts,
                    self.data,
                    bar[: m + 1],
                    float(cost_weight),
                    lo,
                    hi,
                    lams[: m + 1],
                    grad_thetas,
                    grad_p,
                    info,
                )
            bar[m] = 0.0
            self._raise_for_status(info, None, "adjoint", None)
            lam[:] = lams[0]
            hi = lo

    def _terminal_segment(self, x_N, p, cost_weight, lam_out, grad_p):
        info = np.zeros(2, dtype=np.intp)
        phi = terminal_segment(
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
            self._raise_for_status(info, None, "adjoint", None)
        return float(phi)

    # ---- complex-step forward (checks only) ----

    def _forward_complex_impl(self, x0, thetas, p):
        # A plain Python loop over the generic (float or complex) kernels: slow,
        # used by the complex-step checks only.
        x0, thetas, p = (np.asarray(a, dtype=np.complex128) for a in (x0, thetas, p))
        rhs = self.system.rhs.jit
        xs = np.empty((self.N + 1, self.n), dtype=np.complex128)
        xs[0] = x0
        J = 0.0 + 0.0j
        try:
            for k in range(self.N):
                J += self.running_cost(
                    k, xs[k], thetas[k], p, self.consts, self.data[k]
                )
                t = self.t0 + k * self.dt
                if self.is_explicit:
                    xs[k + 1] = _rk_step_complex(
                        rhs, self.tableau, t, self.dt, xs[k], p, thetas[k]
                    )
                else:
                    xs[k + 1] = self._implicit_step_complex(k, t, xs[k], p, thetas[k])
            J += self.terminal_cost(xs[self.N], p, self.consts, self.data[self.N])
        except TypingError as err:
            raise NotImplementedError(
                f"The kernels of `{self.system.name}` do not compile for complex128 "
                "input, so the complex-step check cannot run; write them "
                "generically or check with finite differences."
            ) from err
        return xs, J

    def _implicit_step_complex(self, k, t, x, p, u):
        """Newton in complex arithmetic with the Jacobian at the real parts.

        The real part iterates exactly as the float64 Newton; the imaginary
        part (the complex-step perturbation, linear in ``i h``) is solved
        exactly by each step at the current real iterate.  One extra iteration
        after convergence makes it consistent with the converged real part.
        """
        system, dt = self.system, self.dt
        rhs = system.rhs.jit
        code = self._implicit_code
        y = x.copy()
        z = np.empty_like(x)
        f_z = np.empty_like(x)
        f_old = np.zeros_like(x)
        if code == ik.CRANK_NICOLSON:
            rhs(t, x, p, u, f_old)
        jac = np.empty((self.n, self.n))
        converged = False
        for _ in range(self.max_iter + 1):
            t_z, theta, gamma = _point(code, t, dt, x, y, z)
            rhs(t_z, z, p, u, f_z)
            R = y - x - gamma * (f_z + f_old)
            z_re, p_re, u_re = (np.ascontiguousarray(a.real) for a in (z, p, u))
            if self.sparse:
                M = _sparse.newton_matrix(system, t_z, z_re, p_re, u_re, theta * dt)
                lu = _sparse.factor(M, k)
                delta = lu.solve(np.ascontiguousarray(R.real)) + 1j * lu.solve(
                    np.ascontiguousarray(R.imag)
                )
            else:
                system._jac_x(t_z, z_re, p_re, u_re, jac)
                delta = np.linalg.solve(np.eye(self.n) - theta * dt * jac, R)
            y = y - delta
            if converged:
                return y
            converged = np.max(np.abs(delta.real)) <= self.tol * (
                1.0 + np.max(np.abs(y.real))
            )
        raise SweepError(
            f"Newton's method (complex-step sweep) did not converge at step {k} "
            f"(t = {t:g}); residual max|R| = {np.max(np.abs(R.real)):.3e}."
        )

    # ---- errors ----

    def _raise_for_status(self, info, finfo, sweep, arrays):
        status, k = int(info[0]), int(info[1])
        if status == 0:
            return
        t = self.t0 + k * self.dt
        if status == STATUS_NONFINITE:
            if sweep == "forward":
                raise SweepError(
                    f"The state became non-finite at step {k} (t = {t:g}): x_{k + 1} "
                    f"= {arrays[k + 1]} from x_{k} = {arrays[k]}. Check `p` and the "
                    "controls, or take smaller steps (`dt`)."
                )
            raise SweepError(
                f"The {sweep} sweep produced a non-finite value at step {k} "
                f"(t = {t:g}). The forward states were finite; check the system's "
                "VJP/JVP kernels."
            )
        if status == ik.STATUS_NEWTON:
            raise SweepError(
                f"Newton's method did not converge at step {k} (t = {t:g}) of the "
                f"{self.scheme} scheme: residual max|R| = {finfo[0]:.3e} after "
                f"{self.max_iter} iterations. Take smaller steps (`dt`), raise "
                "`max_iter`, or check the system's Jacobian."
            )
        if status == ik.STATUS_SINGULAR:
            residual = "" if finfo is None else f" (residual max|R| = {finfo[0]:.3e})"
            raise SweepError(
                f"The matrix I - θ dt ∂f/∂x is singular at step {k} "
                f"(t = {t:g}) of the {sweep} sweep{residual}. "
                "Take smaller steps (`dt`)."
            )
        if status == ik.STATUS_UNAVAILABLE:
            raise SweepError(
                f"The {sweep} sweep called a Jacobian product that system "
                f"`{self.system.name}` does not have (step {k}). This is a bug in "
                "adjoint-toolkit; please report it."
            )
        raise SweepError(
            f"The {sweep} sweep stopped at step {k} (t = {t:g}): a kernel of system "
            f"`{self.system.name}` (or a cost kernel) returned status {status}."
        )


def _resolve_scheme(scheme):
    """``(name, tableau or None, implicit code or -1)`` for a scheme argument."""
    if isinstance(scheme, Tableau):
        if not scheme.is_explicit:
            raise NotImplementedError(
                f"Tableau {scheme.name!r} is implicit (its `A` is not strictly lower "
                "triangular); only explicit tableaus are supported. For implicit "
                "steps use scheme= one of "
                f"{', '.join(repr(s) for s in IMPLICIT_SCHEMES)}."
            )
        return scheme.name, scheme, -1
    if not isinstance(scheme, str):
        raise TypeError(
            f"`scheme` must be a scheme name or a Tableau, got {type(scheme).__name__}."
        )
    if scheme in EXPLICIT_SCHEMES:
        return scheme, EXPLICIT_SCHEMES[scheme], -1
    if scheme in IMPLICIT_SCHEMES:
        return scheme, None, IMPLICIT_SCHEMES[scheme]
    raise ValueError(
        f"`scheme` must be one of {', '.join(repr(s) for s in SCHEME_NAMES)}, or a "
        f"Tableau; got {scheme!r}."
    )


def _data(data, N):
    if data is None:
        return np.zeros((N + 1, 0))
    data = np.array(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] != N + 1:
        raise ValueError(
            f"`data` has shape {data.shape}; the sequence has N = {N} steps, so "
            f"`data` must have shape ({N + 1}, q), one row per state."
        )
    # NaN may mark a missing observation that a cost kernel skips.
    if np.isinf(data).any():
        row, col = np.argwhere(np.isinf(data))[0]
        raise ValueError(f"`data` holds an infinite value at row {row}, column {col}.")
    return np.ascontiguousarray(data)


def _rk_step_complex(rhs, tab, t, dt, x, p, u):
    K = np.empty((tab.n_stages, x.shape[0]), dtype=x.dtype)
    for i in range(tab.n_stages):
        X = x + dt * (tab.A[i, :i] @ K[:i])
        rhs(t + tab.c[i] * dt, X, p, u, K[i])
    return x + dt * (tab.b @ K)


def _point(code, t, dt, x, y, z_out):
    """Python twin of the kernels' ``_implicit_point``."""
    if code == ik.IMPLICIT_MIDPOINT:
        z_out[:] = 0.5 * (x + y)
        return t + 0.5 * dt, 0.5, dt
    z_out[:] = y
    if code == ik.CRANK_NICOLSON:
        return t + dt, 0.5, 0.5 * dt
    return t + dt, 1.0, dt
