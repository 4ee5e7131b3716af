"""Parameter estimation: fit an ODE model's rates and initial state to data.

The model is integrated on a fixed grid by an :class:`ODESequence`; each
observation time is mapped to the *nearest grid step* (with the default grid,
whose step divides the spacing of the observations, that is exact).  The
misfit is a weighted least-squares sum on the raw or the log scale, a running
cost at the observation steps, so one adjoint sweep gives its gradient.  The
unknowns are any of the rates ``p`` and the initial state ``x0``, optionally
on the log scale (positivity), and optionally the noise scale of each
observed component.  :meth:`ParameterEstimation.fit` minimises with
``scipy.optimize.minimize`` (L-BFGS-B by default) and returns values with
standard errors from the Gauss–Newton approximation, whose residual Jacobian
comes from forward-mode (tangent) sweeps.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from scipy.optimize import OptimizeResult, minimize

from . import _validate
from ._errors import SweepError
from ._integrators._observations import observation_cost
from ._integrators._ode_sequence import ODESequence
from ._objective import Objective

# Methods of scipy.optimize.minimize that a fit can use; the last three do
# without the gradient.
METHODS = (
    "L-BFGS-B",
    "BFGS",
    "CG",
    "Newton-CG",
    "TNC",
    "SLSQP",
    "trust-constr",
    "Nelder-Mead",
    "Powell",
    "COBYLA",
)
DERIVATIVE_FREE = ("Nelder-Mead", "Powell", "COBYLA")

# Observation times farther than this fraction of a step from the grid are
# reported: the misfit then compares with the state at the nearest step.
OFF_GRID_WARN = 1e-6


class FitResult(OptimizeResult):
    """Result of :meth:`ParameterEstimation.fit`.

    Attributes
    ----------
    x : ndarray
        Fitted values of the unknowns, on the natural scale.
    names : list of str
    stderr : ndarray
        Standard errors (Gauss–Newton; delta method for log-scale unknowns).
    corr : ndarray, shape (n, n)
        Correlation matrix of the unknowns.
    cov_z : ndarray
        Covariance of the optimised variables ``z`` (log values where the
        unknown is on the log scale).
    fun : float
        Final cost.
    sigma : ndarray
        Noise scale of each observed component: fitted, or estimated from
        the residuals.
    nit, nfev, njev : int
    sweeps : dict
        Forward, adjoint and tangent sweeps run.
    wall_time : float
        Seconds spent in :meth:`~ParameterEstimation.fit`.

    Parameters
    ----------
    **fields
        The attributes above, as keywords (a ``scipy.optimize.OptimizeResult``
        is a dict with attribute access); ``derived`` may add rows
        ``(name, value, stderr)`` to :attr:`table`.

    Examples
    --------
    :meth:`ParameterEstimation.fit` makes one; ``table`` lists the unknowns
    with their standard errors:

    >>> import numpy as np
    >>> result = FitResult(x=np.array([0.9, 50.0]), names=["rate", "capacity"],
    ...                    stderr=np.array([0.02, 2.1]))
    >>> result.table
    [('rate', 0.9, 0.02), ('capacity', 50.0, 2.1)]
    """

    @property
    def table(self):
        """Rows ``(name, value, stderr)``: the unknowns, then any derived
        quantities a problem added to ``derived``.

        Returns
        -------
        list of (str, float, float)
        """
        rows = [
            (n, float(v), float(e)) for n, v, e in zip(self.names, self.x, self.stderr)
        ]
        return rows + [(n, float(v), float(e)) for n, v, e in self.get("derived", [])]

    def to_json(self) -> dict:
        """The result as a dict of JSON-able values (what ``adjoint solve``
        writes to ``NAME.json``).

        Returns
        -------
        dict
            ``values``, ``errors``, ``correlation``, ``cost``, iteration and
            evaluation counts, ``sweeps``, ``noise_scale``, ``wall_time_s``,
            ``success`` and ``message``.

        Raises
        ------
        KeyError
            If the result lacks a field that :meth:`ParameterEstimation.fit`
            sets (e.g. one built by hand).
        """
        return {
            "values": {name: float(v) for name, v, _ in self.table},
            "errors": {name: float(e) for name, _, e in self.table},
            # Rows and columns in the order of the fitted unknowns.
            "correlation_names": list(self.names[: len(self.corr)]),
            "correlation": np.asarray(self.corr).tolist(),
            "cost": float(self.fun),
            "iterations": int(self.nit),
            "function_evaluations": int(self.nfev),
            "gradient_evaluations": int(self.njev),
            "sweeps": dict(self.sweeps),
            "noise_scale": list(map(float, self.sigma)),
            "wall_time_s": float(self.wall_time),
            "success": bool(self.success),
            "message": str(self.message),
        }


class ParameterEstimation:
    """Fit rates and initial state of an ODE system to observations.

    The cost is, with residuals ``r_j = h(x_{k_j}[c]) − h(y_j)`` (``h = log``
    on the log scale, the identity otherwise) over observed components ``c``,

        J = ½ Σ_j w_j r_j²          (noise scale known or estimated after), or
        J = Σ_c [ ½ S_c / σ_c² + n_c log σ_c ]   (noise scale fitted),

    where ``S_c`` is the sum of squared residuals of component ``c`` and
    ``n_c`` its number of observations.  A fitted noise scale is profiled out
    exactly: for given rates the minimising ``σ_c² = S_c / n_c``, so the
    optimiser sees ``Σ_c ½ n_c (log(S_c / n_c) + 1)`` over the model unknowns
    only (the same maximum-likelihood estimate as a joint search, without
    its badly scaled ``log σ`` direction), and ``σ_c`` is reported with the
    standard error ``σ_c / √(2 n_c)``.

    Parameters
    ----------
    system : ODESystem
        The model ``dx/dt = f(t, x, p)``.
    t_obs : array_like, shape (n_obs,)
        Observation times, strictly increasing, at or after ``t0``.
    y_obs : array_like, shape (n_obs, n_observed)
        Observations; NaN marks a missing value.
    x0, p : array_like
        Initial state and rates: the starting guesses of the unknowns and the
        values of everything held fixed.
    observed : sequence of int, optional
        State components observed (default: the first ``n_observed``).
    fit_p : bool or sequence of int
        Which rates are unknowns (default all).
    fit_x0 : bool or sequence of int
        Which initial-state components are unknowns (default none).
    fit_noise : bool
        Estimate the noise scale of each observed component by maximum
        likelihood (Gaussian errors on the misfit's scale); the weights are
        then ``1/σ_c²``.
    log_params : bool
        Optimise ``log`` of the rates and initial state (keeps them positive).
    scale : {'raw', 'log'}
        Scale of the misfit.
    weights : array_like, shape (n_observed,), optional
        Weight of each observed component's squared residuals (ignored when
        the noise scale is fitted).
    t0 : float, optional
        Time of ``x0`` (default ``t_obs[0]``).
    dt : float, optional
        Integration step; default: the smallest observation spacing divided
        by ``steps_per_interval``.
    steps_per_interval : int
        See ``dt`` (default 20).
    scheme : str
        Integration scheme of :class:`ODESequence` (default ``'rk4'``).
    p_names, x_names : sequence of str, optional
        Names for tables.

    Raises
    ------
    ValueError
        For observation times that do not increase, observations of the wrong
        shape or with infinite values, non-positive values on a log scale or
        for a log-parameter fit, and indices out of range (the message names
        the argument).

    Warns
    -----
    UserWarning
        When observation times fall off the integration grid (each is then
        compared with the state at the nearest step).

    Examples
    --------
    Rate and capacity of logistic growth from a week of daily counts:

    >>> import numpy as np
    >>> from adjoint import ODESystem, ParameterEstimation
    >>> def logistic(t, x, p, u, out):
    ...     out[0] = p[0] * x[0] * (1.0 - x[0] / p[1])
    ...     return 0
    >>> system = ODESystem.from_rhs(logistic, n=1, n_p=2)
    >>> t = np.arange(8.0)
    >>> y = 50.0 / (1.0 + 49.0 * np.exp(-0.9 * t))
    >>> est = ParameterEstimation(system, t, y, x0=[1.0], p=[0.5, 30.0],
    ...                           p_names=["rate", "capacity"])
    >>> result = est.fit()
    >>> [(name, round(value, 3)) for name, value, _ in result.table]
    [('rate', 0.9), ('capacity', 50.0)]
    """

    def __init__(
        self,
        system,
        t_obs,
        y_obs,
        *,
        x0,
        p,
        observed=None,
        fit_p=True,
        fit_x0=False,
        fit_noise=False,
        log_params=True,
        scale="raw",
        weights=None,
        t0=None,
        dt=None,
        steps_per_interval=20,
        scheme="rk4",
        p_names=None,
        x_names=None,
    ):
        # ---- observations ----
        t_obs = _validate.real_array("t_obs", t_obs)
        if t_obs.ndim != 1 or t_obs.size == 0:
            raise ValueError(
                f"`t_obs` must be a non-empty 1-D array; got shape {t_obs.shape}."
            )
        if np.any(np.diff(t_obs) <= 0):
            i = int(np.flatnonzero(np.diff(t_obs) <= 0)[0])
            raise ValueError(
                f"`t_obs` must increase strictly; t_obs[{i + 1}] = {t_obs[i + 1]} "
                f"follows t_obs[{i}] = {t_obs[i]}."
            )
        y_obs = np.asarray(y_obs, dtype=np.float64)
        if y_obs.ndim == 1:
            y_obs = y_obs[:, None]
        if y_obs.shape[0] != t_obs.size:
            raise ValueError(
                f"`y_obs` has {y_obs.shape[0]} rows but `t_obs` has {t_obs.size} "
                "times; give one row per observation time."
            )
        if np.isinf(y_obs).any():
            raise ValueError("`y_obs` holds an infinite value.")
        self.scale = _validate.choice("scale", scale, ("raw", "log"))
        if scale == "log" and np.any(y_obs[~np.isnan(y_obs)] <= 0):
            i, j = np.argwhere(y_obs <= 0)[0]
            raise ValueError(
                f"`y_obs[{i}, {j}]` is {y_obs[i, j]}; a log-scale misfit needs "
                "positive observations (use scale='raw')."
            )
        self.system = system
        n = system.n
        n_obs_comp = y_obs.shape[1]
        if observed is None and n_obs_comp > n:
            raise ValueError(
                f"`y_obs` has {n_obs_comp} columns but the system has n = {n} "
                "states; give one column per observed state (and `observed=` to "
                "say which)."
            )
        observed = (
            list(range(n_obs_comp)) if observed is None else [int(c) for c in observed]
        )
        if len(observed) != n_obs_comp or any(not 0 <= c < n for c in observed):
            raise ValueError(
                f"`observed` must list {n_obs_comp} state components in 0 … {n - 1}; "
                f"got {observed}."
            )
        self.observed = observed
        self.t_obs, self.y_obs = t_obs, y_obs

        # ---- integration grid ----
        self.t0 = float(t_obs[0]) if t0 is None else float(t0)
        if t_obs[0] < self.t0:
            raise ValueError(
                f"`t0` = {self.t0} is after the first observation {t_obs[0]}."
            )
        if dt is None:
            spacing = np.diff(np.concatenate([[self.t0], t_obs]))
            spacing = spacing[spacing > 0]
            base = spacing.min() if spacing.size else 1.0
            dt = base / _validate.positive_int("steps_per_interval", steps_per_interval)
        self.dt = float(dt)
        if not np.isfinite(self.dt) or self.dt <= 0:
            raise ValueError(f"`dt` must be positive and finite, got {dt}.")
        steps_float = (t_obs - self.t0) / self.dt
        self.obs_steps = np.rint(steps_float).astype(int)
        off = np.abs(steps_float - self.obs_steps)
        if off.max() > OFF_GRID_WARN:
            warnings.warn(
                f"{int(np.sum(off > OFF_GRID_WARN))} observation times are off the "
                f"integration grid (dt = {self.dt}); each is compared with the "
                "state at the nearest grid step.",
                UserWarning,
                stacklevel=2,
            )
        self.N = int(self.obs_steps[-1]) if self.obs_steps[-1] > 0 else 1

        # ---- unknowns ----
        self.x0 = _validate.real_array("x0", x0, (n,), what=f"the system has n = {n}")
        self.p = _validate.real_array(
            "p", p, (system.n_p,), what=f"the system has n_p = {system.n_p}"
        )
        self.p_idx = _indices("fit_p", fit_p, system.n_p)
        self.x0_idx = _indices("fit_x0", fit_x0, n)
        self.log_params = bool(log_params)
        if self.log_params:
            for name, values, idx in (
                ("p", self.p, self.p_idx),
                ("x0", self.x0, self.x0_idx),
            ):
                bad = [i for i in idx if values[i] <= 0]
                if bad:
                    raise ValueError(
                        f"`{name}[{bad[0]}]` = {values[bad[0]]} must be positive for a "
                        "log-parameter fit (or pass log_params=False)."
                    )
        self.fit_noise = bool(fit_noise)
        self.p_names = (
            list(p_names)
            if p_names is not None
            else [f"p{i}" for i in range(system.n_p)]
        )
        self.x_names = (
            list(x_names) if x_names is not None else [f"x{i}" for i in range(n)]
        )
        if weights is None:
            weights = np.ones(n_obs_comp)
        self.weights = _validate.real_array(
            "weights",
            weights,
            (n_obs_comp,),
            what=f"{n_obs_comp} components are observed",
        )
        if np.any(self.weights <= 0):
            raise ValueError("`weights` must be positive.")

        # ---- the sequence and its cost ----
        cost = observation_cost(
            self.obs_steps,
            y_obs,
            N=self.N,
            components=observed,
            weights=self.weights,
            log=(scale == "log"),
        )
        self.cost = cost
        q = len(observed)
        # Where each observation sits in the cost's data (weights are 0
        # elsewhere); a fitted noise scale rewrites the weights there.
        self._weight_slots = cost.data[:, q : 2 * q] != 0.0
        self.seq = ODESequence(
            system, scheme=scheme, t0=self.t0, dt=self.dt, N=self.N, **cost.kwargs()
        )
        self.objective = Objective(self.seq, x0=self.x0, p=self.p, wrt=("x0", "p"))
        self.n_counts = np.array(
            [np.sum(~np.isnan(y_obs[:, c])) for c in range(n_obs_comp)]
        )
        # Sums of squares at rounding level (an exact fit) leave a fitted
        # noise scale unidentifiable.
        data_scale = np.maximum(np.max(np.abs(cost.data[:, :q]), axis=0), 1.0)
        self._noise_floor = self.n_counts * (1e-12 * data_scale) ** 2
        self.names = [self.x_names[i] + "(t0)" for i in self.x0_idx] + [
            self.p_names[i] for i in self.p_idx
        ]
        if self.fit_noise:
            self.names += [f"sigma_{self.x_names[c]}" for c in observed]
        self.size = len(self.x0_idx) + len(self.p_idx)  # optimisation variables
        if self.size == 0:
            raise ValueError("Nothing to fit: `fit_p` and `fit_x0` select no unknowns.")
        n_values = int(self.n_counts.sum())
        if n_values <= self.size:
            raise ValueError(
                f"{n_values} observed values cannot determine {self.size} unknowns "
                f"({', '.join(self.names[: self.size])}); give more observations "
                "than unknowns, or fix some unknowns."
            )
        self._inside_fit = False
        self.n_failed_evaluations = 0

    # ---- the map between z and the sequence's unknowns ----

    def z_from_values(self, x0, p):
        """Optimisation variables from natural values.

        Parameters
        ----------
        x0 : array_like, shape (n,)
        p : array_like, shape (n_p,)

        Returns
        -------
        ndarray, shape (size,)
            The unknown entries (``fit_x0`` first, then ``fit_p``), as logs
            when ``log_params``.

        Examples
        --------
        >>> import numpy as np
        >>> from adjoint import ODESystem, ParameterEstimation
        >>> def logistic(t, x, p, u, out):
        ...     out[0] = p[0] * x[0] * (1.0 - x[0] / p[1])
        ...     return 0
        >>> system = ODESystem.from_rhs(logistic, n=1, n_p=2)
        >>> t = np.arange(8.0)
        >>> y = 50.0 / (1.0 + 49.0 * np.exp(-0.9 * t))
        >>> est = ParameterEstimation(system, t, y, x0=[1.0], p=[0.9, 50.0])
        >>> z = est.z_from_values([1.0], [0.9, 50.0])
        >>> np.round(np.exp(z), 6)
        array([ 0.9, 50. ])
        >>> est.values(z)[1].round(6)
        array([ 0.9, 50. ])
        """
        v = np.concatenate([np.asarray(x0)[self.x0_idx], np.asarray(p)[self.p_idx]])
        return np.log(v) if self.log_params else v.copy()

    def values(self, z):
        """``(x0, p)`` from optimisation variables ``z``.

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        x0 : ndarray, shape (n,)
        p : ndarray, shape (n_p,)
            Fixed entries keep the values given to the constructor.
        """
        z = np.asarray(z, dtype=np.float64)
        v = np.exp(z) if self.log_params else z
        x0, p = self.x0.copy(), self.p.copy()
        x0[self.x0_idx] = v[: len(self.x0_idx)]
        p[self.p_idx] = v[len(self.x0_idx) :]
        return x0, p

    def _model_z(self, z):
        x0, p = self.values(z)
        return self.objective.pack(x0, None, p)

    def _chain(self, z, g_full):
        """Gradient in ``z`` from the gradient in ``(x0, p)``."""
        n = self.system.n
        g = np.concatenate([g_full[:n][self.x0_idx], g_full[n:][self.p_idx]])
        if self.log_params:
            g = g * np.exp(z)
        return g

    # ---- cost and gradient ----

    def residuals(self, z):
        """Residuals, shape (n_obs, n_observed); NaN where a value is missing.

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        ndarray, shape (n_obs, n_observed)
            Model minus data, on the misfit's scale.

        Raises
        ------
        SweepError
            If the forward sweep fails.
        """
        traj = self.objective.trajectory(self._model_z(z))
        model = traj.xs[self.obs_steps][:, self.observed]
        if self.scale == "log":
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.log(model) - np.log(self.y_obs)
        return model - self.y_obs

    def value_and_grad(self, z):
        """Cost and gradient in ``z`` (one forward and one adjoint sweep).

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        J : float
        grad : ndarray, shape (size,)
            Inside :meth:`fit`, a failed sweep gives ``(inf, zeros)``.

        Raises
        ------
        SweepError
            If a sweep fails outside :meth:`fit`.

        Examples
        --------
        At the true values the misfit and its gradient vanish:

        >>> import numpy as np
        >>> from adjoint import ODESystem, ParameterEstimation
        >>> def logistic(t, x, p, u, out):
        ...     out[0] = p[0] * x[0] * (1.0 - x[0] / p[1])
        ...     return 0
        >>> system = ODESystem.from_rhs(logistic, n=1, n_p=2)
        >>> t = np.arange(8.0)
        >>> y = 50.0 / (1.0 + 49.0 * np.exp(-0.9 * t))
        >>> est = ParameterEstimation(system, t, y, x0=[1.0], p=[0.9, 50.0])
        >>> J, grad = est.value_and_grad(est.z_from_values([1.0], [0.9, 50.0]))
        >>> bool(J < 1e-8), grad.shape
        (True, (2,))
        """
        z = np.asarray(z, dtype=np.float64)
        zm = self._model_z(z)
        try:
            if not self.fit_noise:
                J, g_full = self.objective.value_and_grad(zm)
            else:
                # Profiled noise: ∇ Σ_c ½ n_c log S_c = Σ_c (n_c / 2S_c) ∇S_c,
                # the gradient of the weighted misfit with w_c = n_c / S_c,
                # so set those weights after the forward sweep and run the
                # adjoint sweep with them.
                S = self._profiled_sum_of_squares(z)
                self._set_weights(self.n_counts / S)
                try:
                    g_full = self.objective.vjp(zm, None, 1.0)
                finally:
                    # Back to the weights the objective was built with, so
                    # its cached cost and later uses stay consistent.
                    self._set_weights(self.weights)
                J = self._profiled_cost(S)
        except SweepError:
            if not self._inside_fit:
                raise
            # A trial point of the line search where the model blows up: an
            # infinite cost sends the search back towards the last good point.
            self.n_failed_evaluations += 1
            return np.inf, np.zeros_like(z)
        return J, self._chain(z, g_full)

    def _sum_of_squares(self, z):
        return np.nansum(self.residuals(z) ** 2, axis=0)

    def _profiled_sum_of_squares(self, z):
        S = self._sum_of_squares(z)
        floor = self._noise_floor
        if np.any(S <= floor):
            c = int(np.flatnonzero(S <= floor)[0])
            raise ValueError(
                f"The residuals of observed component {self.observed[c]} vanish, "
                "so its noise scale cannot be estimated (an exact fit); use "
                "fit_noise=False."
            )
        return S

    def _profiled_cost(self, S):
        return float(np.sum(0.5 * self.n_counts * (np.log(S / self.n_counts) + 1)))

    def _set_weights(self, w):
        q = len(self.observed)
        # The sequence's own copy of the cost data is what its sweeps read.
        self.seq.data[:, q : 2 * q] = self._weight_slots * np.asarray(w)[None, :]

    def noise_scale(self, z):
        """Noise scale per observed component, ``√(S_c / n_c)``.

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        ndarray, shape (n_observed,)
        """
        return np.sqrt(self._sum_of_squares(z) / self.n_counts)

    def fun(self, z):
        """The misfit alone at ``z`` (see :meth:`value_and_grad`).

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        float
        """
        z = np.asarray(z, dtype=np.float64)
        try:
            if not self.fit_noise:
                return self.objective.fun(self._model_z(z))
            return self._profiled_cost(self._profiled_sum_of_squares(z))
        except SweepError:
            if not self._inside_fit:
                raise
            self.n_failed_evaluations += 1
            return np.inf

    # ---- Gauss–Newton covariance ----

    def residual_jacobian(self, z):
        """Jacobian of the weighted residuals ``√w_j r_j`` with respect to the
        model unknowns in ``z``, by forward mode (one tangent sweep per
        unknown).

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        ndarray, shape (n_residuals, size)
            One row per observed (non-NaN) value.

        Raises
        ------
        SweepError
            If a sweep fails.
        """
        zm = self._model_z(z)
        n = self.system.n
        jac_states = self.objective.jacobian(
            zm, steps=list(self.obs_steps), mode="forward"
        )
        jac_states = jac_states.reshape(len(self.obs_steps), n, -1)[:, self.observed, :]
        free = list(self.x0_idx) + [n + i for i in self.p_idx]
        jac = jac_states[:, :, free]
        if self.log_params:
            jac = jac * np.exp(z[: len(free)])[None, None, :]
        traj = self.objective.trajectory(zm)
        model = traj.xs[self.obs_steps][:, self.observed]
        if self.scale == "log":
            jac = jac / model[:, :, None]
        w = 1.0 / self.noise_scale(z) ** 2 if self.fit_noise else self.weights
        jac = jac * np.sqrt(w)[None, :, None]
        mask = ~np.isnan(self.y_obs)
        return jac[mask]

    def covariance(self, z):
        """Gauss–Newton covariance of ``z`` and the noise scale per component.

        With residuals weighted by ``w``, ``cov ≈ s² (JᵀJ)⁻¹`` for the
        Jacobian ``J`` of the weighted residuals.  Without a fitted noise
        scale ``s² = Σ w r² / (n_obs − n_unknowns)`` (the weights are
        relative) and the noise scale of component ``c`` is reported as
        ``√(S_c / n_c)``; with a fitted noise scale the weights are
        ``1/σ_c²`` already and ``s² = 1``.

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        cov : ndarray, shape (size, size)
            Covariance of ``z`` (pseudo-inverse where ``JᵀJ`` is singular).
        sigma : ndarray, shape (n_observed,)
            Noise scale per observed component.
        """
        S = self._sum_of_squares(z)
        jac = self.residual_jacobian(z)
        n_res, n_free = jac.shape
        sigma = np.sqrt(S / self.n_counts)
        if self.fit_noise:
            s2 = 1.0
        else:
            s2 = float(np.sum(self.weights * S)) / max(n_res - n_free, 1)
        return s2 * np.linalg.pinv(jac.T @ jac), sigma

    # ---- the fit ----

    def fit(
        self, z0=None, *, method="L-BFGS-B", bounds=None, options=None, progress=None
    ) -> FitResult:
        """Minimise the misfit and estimate uncertainties.

        Parameters
        ----------
        z0 : array_like, optional
            Starting point in optimisation variables (default: from ``x0``,
            ``p``).
        method : str
            Any gradient-based ``scipy.optimize.minimize`` method.
        bounds : sequence of (low, high), optional
            Bounds on ``z`` (log values for log-scale unknowns).
        options : dict, optional
            Passed to SciPy on top of tight defaults (for L-BFGS-B
            ``ftol=1e-15``, ``gtol=1e-9``, ``maxcor=20``; ``maxiter=2000``).
        progress : callable, optional
            Called as ``progress(intermediate_result)`` after each iteration
            (SciPy's callback protocol).

        Returns
        -------
        FitResult
            Fitted values on the natural scale with standard errors; check
            ``success`` and ``message``.

        Raises
        ------
        SweepError
            If the model fails at the starting point (at trial points of the
            line search a failure counts as an infinite cost instead).
        """
        start = time.perf_counter()
        counts_before = dict(self.objective.counts)
        if z0 is None:
            z0 = self.z_from_values(self.x0, self.p)
        z0 = np.asarray(z0, dtype=np.float64)
        _validate.choice("method", method, METHODS)
        opts = {"maxiter": 2000}
        if method == "L-BFGS-B":
            # ftol 1e-13: tighter, and the line search ends "ABNORMAL" on the
            # flat bottom of small fits (SIR) with the optimum already found.
            opts.update(ftol=1e-13, gtol=1e-9, maxcor=20)
        opts.update(options or {})
        if method in DERIVATIVE_FREE:
            fun, jac = self.fun, None
        else:
            fun, jac = self.value_and_grad, True
        self._inside_fit = True
        try:
            res = minimize(
                fun,
                z0,
                jac=jac,
                method=method,
                bounds=bounds,
                options=opts,
                callback=progress,
            )
        finally:
            self._inside_fit = False
        cov_z, sigma = self.covariance(res.x)
        x0, p = self.values(res.x)
        natural = np.concatenate([x0[self.x0_idx], p[self.p_idx]])
        se_z = np.sqrt(np.clip(np.diag(cov_z), 0, None))
        stderr = natural * se_z if self.log_params else se_z
        if self.fit_noise:
            # The noise scales' standard errors: σ_c / √(2 n_c) (Fisher
            # information of a Gaussian scale; asymptotically independent of
            # the model unknowns).
            natural = np.concatenate([natural, sigma])
            stderr = np.concatenate([stderr, sigma / np.sqrt(2.0 * self.n_counts)])
        d = np.where(se_z > 0, se_z, 1.0)
        corr = cov_z / d[:, None] / d[None, :]
        counts = {
            k: self.objective.counts[k] - counts_before.get(k, 0)
            for k in self.objective.counts
        }
        return FitResult(
            x=natural,
            z=res.x,
            names=self.names,
            stderr=stderr,
            corr=corr,
            cov_z=cov_z,
            fun=float(res.fun),
            jac=res.get("jac"),
            sigma=sigma,
            success=bool(res.success),
            status=res.status,
            message=str(res.message),
            nit=int(res.nit),
            nfev=int(res.nfev),
            njev=int(res.get("njev", 0)),
            sweeps=counts,
            wall_time=time.perf_counter() - start,
            method=method,
            x0=x0,
            p=p,
        )

    def check_gradients(self, z=None, **options):
        """Run :func:`adjoint.check_gradients` on the model's misfit.

        The checks run on the ``objective`` attribute, whose unknowns are the
        whole initial state and rate vector on the natural scale (a superset
        of the fitted unknowns; the log map and the noise profile are plain
        chain rules on top), at the values given by ``z`` (default: the starting
        guess).  Check away from an exact fit: where the residuals vanish the
        gradient is at rounding level and relative errors mean nothing.

        Returns
        -------
        GradientReport
        """
        from ._check import check_gradients

        zm = self.objective.z0 if z is None else self._model_z(z)
        return check_gradients(self.objective, zm, **options)

    def simulate(self, z):
        """Times and states of the model at ``z`` on the integration grid.

        Parameters
        ----------
        z : array_like, shape (size,)

        Returns
        -------
        ts : ndarray, shape (N + 1,)
        xs : ndarray, shape (N + 1, n)

        Raises
        ------
        SweepError
            If the forward sweep fails.
        """
        x0, p = self.values(z)
        traj = self.objective.trajectory(self.objective.pack(x0, None, p))
        ts = self.t0 + self.dt * np.arange(self.N + 1)
        return ts, traj.xs


def _indices(name, fit, size):
    if fit is True:
        return list(range(size))
    if fit is False or fit is None:
        return []
    idx = [int(i) for i in fit]
    for i in idx:
        if not 0 <= i < size:
            raise ValueError(
                f"`{name}` holds index {i}; valid indices are 0 … {size - 1}."
            )
    return idx
