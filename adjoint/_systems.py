"""ODE systems: a right-hand side ``f(t, x, p, u)`` and its Jacobian products.

:class:`ODESystem` holds the compiled kernels of ``f`` that the integrators
(:class:`~adjoint.ODESequence`) and the continuous adjoint use.  It is built
one of three ways (DESIGN.md section 5), all giving the same kernel set:

- :meth:`ODESystem.from_sympy`: SymPy expressions, derivatives taken
  symbolically, kernel source generated and cached on disk;
- :meth:`ODESystem.from_kernels`: hand-written ``rhs`` and ``rhs_vjp`` (and
  optionally ``rhs_jvp``, ``rhs_jac_x``), checked against complex step on
  first use if asked;
- :meth:`ODESystem.from_rhs`: ``rhs`` only, written generically for real and
  complex input; every Jacobian product by complex step.

:func:`costs_from_sympy` makes cost kernels from SymPy expressions the same
way.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import scipy.sparse as sps

from . import _validate
from ._errors import SweepError
from ._integrators import _kernels as ik
from ._systems_kernels import (
    unavailable_rhs_complex,
    unavailable_rhs_jac_x,
    unavailable_rhs_jvp,
    unavailable_rhs_vjp,
)
from .kernels import Kernel, as_kernel

__all__ = ["ODESystem", "costs_from_sympy"]

logger = logging.getLogger(__name__)

# Largest relative disagreement between a hand-written product and complex
# step that `check_kernels` accepts; both are exact to rounding, so anything
# above rounding level times a safety factor is a wrong kernel.
CHECK_RTOL = 1e-8

MODE_NAMES = {
    ik.MODE_KERNEL: "kernel",
    ik.MODE_COMPLEX_STEP: "complex step",
    ik.MODE_VIA_VJP: "rows of the VJP",
}


@functools.cache
def _placeholders():
    return (
        Kernel(unavailable_rhs_vjp, "rhs_vjp"),
        Kernel(unavailable_rhs_jvp, "rhs_jvp"),
        Kernel(unavailable_rhs_jac_x, "rhs_jac_x"),
        Kernel(unavailable_rhs_complex, "rhs_complex"),
    )


class ODESystem:
    """The right-hand side ``dx/dt = f(t, x, p, u)`` of an ODE, compiled.

    ``x`` (size ``n``) is the state, ``p`` (size ``n_p``) parameters shared
    by all time steps and ``u`` (size ``n_u``) controls, piecewise constant on
    the time grid of an :class:`~adjoint.ODESequence`.  Build a system with one
    of the three constructors; the integrators only see the kernels they
    produce, so all three give the same gradients (to rounding).

    ==================  ==========================  ===========================
    constructor         you write                   Jacobian products
    ==================  ==========================  ===========================
    ``from_sympy``      SymPy expressions           symbolic, generated code
    ``from_kernels``    ``rhs`` and ``rhs_vjp``     your kernels
    ``from_rhs``        ``rhs`` (generic)           complex step, ``n + n_p +
                                                    n_u`` evaluations per VJP
    ==================  ==========================  ===========================

    Kernel conventions (all arrays 1-D, C-contiguous float64; each returns an
    integer status, 0 for success):

    - ``rhs(t, x, p, u, out)``: write ``f`` to ``out``;
    - ``rhs_vjp(t, x, p, u, f_bar, x_bar, p_bar, u_bar)``: *add*
      ``(∂f/∂x)ᵀf̄``, ``(∂f/∂p)ᵀf̄``, ``(∂f/∂u)ᵀf̄`` to the three
      bars;
    - ``rhs_jvp(t, x, p, u, x_tan, p_tan, u_tan, out)``: write
      ``∂f/∂x ẋ + ∂f/∂p ṗ + ∂f/∂u u̇`` to ``out``;
    - ``rhs_jac_x(t, x, p, u, jac_out)``: write ``∂f/∂x`` to the (n, n)
      array ``jac_out``.

    Parameters
    ----------
    rhs : function or Kernel
        ``rhs(t, x, p, u, out)``, the right-hand side.
    n : int
        Number of states, positive.
    n_p : int
        Number of parameters, non-negative.
    n_u : int, optional
        Number of controls (default 0).
    rhs_vjp, rhs_jvp, rhs_jac_x : function or Kernel, optional
        Hand-written Jacobian products (conventions above).  Without
        ``rhs_jvp`` or ``rhs_jac_x`` they come from complex step (when
        ``rhs_complex`` is given) or from ``n`` VJPs.
    rhs_complex : function or Kernel, optional
        ``rhs`` compiled for complex128 input; the products it stands in for
        are taken by complex step.  One of ``rhs_vjp`` and ``rhs_complex`` is
        required.
    derivatives : str, optional
        How the products were obtained, for reprs and reports (default
        ``'kernels'``).
    jac_sparsity : array_like or scipy.sparse matrix, shape (n, n), optional
        Non-zero pattern of ``∂f/∂x``; the diagonal is always added.
    bandwidth : (int, int), optional
        ``(lower, upper)`` bandwidth of ``∂f/∂x``, instead of
        ``jac_sparsity``.
    name : str, optional
        Shown in messages (default: the name of ``rhs``).
    check : bool, optional
        Compare the products with complex step on first use
        (:meth:`check_kernels`; default False).
    probe : bool, optional
        Run each kernel once as plain Python on first use, to turn
        out-of-bounds writes and unwritten outputs into clear errors
        (default True).

    Prefer the constructors :meth:`from_sympy`, :meth:`from_kernels` and
    :meth:`from_rhs`, which fill in ``derivatives`` and the kernel set.

    Raises
    ------
    ValueError
        If neither ``rhs_vjp`` nor ``rhs_complex`` is given, a size is out of
        range, both ``jac_sparsity`` and ``bandwidth`` are given, or the
        sparsity pattern does not have shape (n, n).
    TypeError
        If a kernel is not a function or :class:`~adjoint.kernels.Kernel`, or
        ``bandwidth`` is not a pair of integers.

    Attributes
    ----------
    n, n_p, n_u : int
        Sizes of the state, the parameters and the controls.
    rhs, rhs_vjp, rhs_jvp, rhs_jac_x, rhs_complex : Kernel or None
        The kernels the system has.
    derivatives : str
        ``'symbolic'``, ``'kernels'`` or ``'complex_step'``.
    jac_sparsity : scipy.sparse.csr_matrix or None
        Sparsity pattern of ``∂f/∂x``; when set, implicit schemes use sparse
        LU (see :class:`~adjoint.ODESequence`).

    Examples
    --------
    A new system in a few lines, right-hand side only (the function must run
    on float64 and complex128 arrays: arithmetic and NumPy functions, no
    ``abs`` or comparisons on ``x``):

    >>> import numpy as np
    >>> from adjoint import ODESystem
    >>> def logistic(t, x, p, u, out):
    ...     out[0] = p[0] * x[0] * (1.0 - x[0] / p[1])
    ...     return 0
    >>> system = ODESystem.from_rhs(logistic, n=1, n_p=2)
    >>> system.f(0.0, [0.5], [1.0, 2.0])
    array([0.375])

    The same model from SymPy expressions:

    >>> import sympy as sp
    >>> x, r, K = sp.symbols("x r K")
    >>> symbolic = ODESystem.from_sympy([r * x * (1 - x / K)], [x], [r, K])
    >>> symbolic.jacobian_x(0.0, [0.5], [1.0, 2.0])
    array([[0.5]])
    """

    def __init__(
        self,
        rhs,
        *,
        n: int,
        n_p: int,
        n_u: int = 0,
        rhs_vjp=None,
        rhs_jvp=None,
        rhs_jac_x=None,
        rhs_complex=None,
        derivatives: str = "kernels",
        jac_sparsity=None,
        bandwidth=None,
        name: str | None = None,
        check: bool = False,
        probe: bool = True,
    ):
        self.n = _validate.positive_int("n", n)
        self.n_p = _validate.nonnegative_int("n_p", n_p)
        self.n_u = _validate.nonnegative_int("n_u", n_u)
        self.rhs = as_kernel(rhs, "rhs")
        self.rhs_vjp = None if rhs_vjp is None else as_kernel(rhs_vjp, "rhs_vjp")
        self.rhs_jvp = None if rhs_jvp is None else as_kernel(rhs_jvp, "rhs_jvp")
        self.rhs_jac_x = (
            None if rhs_jac_x is None else as_kernel(rhs_jac_x, "rhs_jac_x")
        )
        self.rhs_complex = (
            None if rhs_complex is None else as_kernel(rhs_complex, "rhs_complex")
        )
        if self.rhs_vjp is None and self.rhs_complex is None:
            raise ValueError(
                "A system needs `rhs_vjp` (or complex-step products); build it "
                "with `ODESystem.from_rhs` to get them by complex step."
            )
        self.derivatives = derivatives
        self.name = name or self.rhs.name
        self.modes = np.array(
            [
                ik.MODE_KERNEL if self.rhs_vjp is not None else ik.MODE_COMPLEX_STEP,
                ik.MODE_KERNEL
                if self.rhs_jvp is not None
                else (
                    ik.MODE_COMPLEX_STEP
                    if self.rhs_complex is not None
                    else ik.MODE_VIA_VJP
                ),
                ik.MODE_KERNEL
                if self.rhs_jac_x is not None
                else (
                    ik.MODE_COMPLEX_STEP
                    if self.rhs_complex is not None
                    else ik.MODE_VIA_VJP
                ),
            ],
            dtype=np.intp,
        )
        self.jac_sparsity = _sparsity(jac_sparsity, bandwidth, self.n)
        self._check_pending = bool(check)
        self._probe_pending = bool(probe)
        self._coloring = None

    # ---- constructors ----

    @classmethod
    def from_sympy(
        cls,
        f_exprs,
        x,
        p,
        u=(),
        t=None,
        *,
        name: str | None = None,
        jac_sparsity=None,
        bandwidth=None,
        cache_dir=None,
    ) -> ODESystem:
        """A system from SymPy expressions, derivatives taken symbolically.

        Generates Python source for ``rhs``, ``rhs_vjp``, ``rhs_jvp`` and
        ``rhs_jac_x`` (after common-subexpression elimination), writes it to
        the cache directory under a name made from a hash of the expressions
        and compiles it with Numba's disk cache.  A second process with the
        same expressions loads both the source and the machine code.

        Numba's compile time grows quickly with the length of a function, so
        ``rhs_jac_x`` holds only the non-zero entries of ``∂f/∂x`` and is not
        generated when there are more than 400 of them (a dense Jacobian of
        more than 20 states); ``∂f/∂x`` then comes from ``n`` VJPs.  The first
        compile of a system of a few dozen states takes seconds; later
        processes load it from the cache.

        Parameters
        ----------
        f_exprs : sequence of sympy.Expr, length n
            ``f_i(t, x, p, u)``.
        x, p : sequence of sympy.Symbol
            The state and parameter symbols, in order.
        u : sequence of sympy.Symbol, optional
            Control symbols (piecewise constant in time).
        t : sympy.Symbol, optional
            The time symbol, if ``f`` depends on time.
        name : str, optional
            Shown in messages (default: ``sympy_`` and a hash).
        jac_sparsity, bandwidth : optional
            Sparsity of ``∂f/∂x``, as for the class.
        cache_dir : path-like, optional
            Where generated modules go; default ``$ADJOINT_CACHE_DIR`` or
            ``~/.cache/adjoint-toolkit/systems``.

        Returns
        -------
        ODESystem
            With ``derivatives == 'symbolic'``; ``source_path`` names the
            generated module.

        Raises
        ------
        ValueError
            If the number of expressions is not ``len(x)`` or an expression
            uses a symbol that is not declared.

        Examples
        --------
        >>> import sympy as sp
        >>> from adjoint import ODESystem
        >>> x, r, K = sp.symbols("x r K")
        >>> system = ODESystem.from_sympy([r * x * (1 - x / K)], [x], [r, K])
        >>> system.derivatives, system.n, system.n_p
        ('symbolic', 1, 2)
        """
        from . import _systems_codegen as cg

        x = cg._as_symbols("x", x)
        p = cg._as_symbols("p", p)
        u = cg._as_symbols("u", u)
        f_exprs = list(f_exprs)
        if len(f_exprs) != len(x):
            raise ValueError(
                f"`f_exprs` has {len(f_exprs)} expressions for {len(x)} states; "
                "give one expression per state."
            )
        groups = {"x": x, "p": p, "u": u}
        if t is not None:
            groups["t"] = [t]
        exprs, canon = cg.canonicalise(f_exprs, groups)
        t_sym = canon["t"][0] if t is not None else None
        key = cg.digest("rhs", exprs, (len(x), len(p), len(u), t is not None))
        module = cg.load(
            "rhs", key, lambda: cg.rhs_source(exprs, canon, t_sym), cache_dir
        )
        kernels = {
            kind: Kernel(getattr(module, kind), kind)
            for kind in ("rhs", "rhs_vjp", "rhs_jvp", "rhs_jac_x")
            if hasattr(module, kind)
        }
        name = name or f"sympy_{key[:8]}"
        for kernel in kernels.values():
            kernel.name = f"{name}.{kernel.kind}"
        system = cls(
            kernels["rhs"],
            n=len(x),
            n_p=len(p),
            n_u=len(u),
            rhs_vjp=kernels["rhs_vjp"],
            rhs_jvp=kernels["rhs_jvp"],
            rhs_jac_x=kernels.get("rhs_jac_x"),
            derivatives="symbolic",
            jac_sparsity=jac_sparsity,
            bandwidth=bandwidth,
            name=name,
            probe=False,
        )
        system.source_path = module.__file__
        return system

    @classmethod
    def from_kernels(
        cls,
        rhs,
        rhs_vjp,
        rhs_jvp=None,
        rhs_jac_x=None,
        *,
        n: int,
        n_p: int,
        n_u: int = 0,
        check: bool = False,
        jac_sparsity=None,
        bandwidth=None,
        name: str | None = None,
    ) -> ODESystem:
        """A system from hand-written Numba kernels.

        Parameters
        ----------
        rhs, rhs_vjp : function or Kernel
            ``f`` and its vector-Jacobian product (conventions in the class
            docstring).
        rhs_jvp : function or Kernel, optional
            The Jacobian-vector product; without it, tangent sweeps build it
            from ``n`` VJPs.
        rhs_jac_x : function or Kernel, optional
            ``∂f/∂x`` for Newton's method and the continuous adjoint; without
            it, from ``n`` VJPs.
        n, n_p, n_u : int
            Sizes of state, parameters and controls.
        check : bool, optional
            On first use, compare each product with complex step of ``rhs``
            (which must then be written generically for complex input) and
            raise ``ValueError`` naming the worst component if they disagree.
            The same check is :meth:`check_kernels`.
        jac_sparsity, bandwidth, name : optional
            As for the class.

        Returns
        -------
        ODESystem
            With ``derivatives == 'kernels'``.

        Raises
        ------
        ValueError
            For sizes out of range or a bad sparsity pattern; on first use,
            for a kernel that writes outside its outputs or leaves one
            unwritten, or (with ``check``) disagrees with complex step.

        Examples
        --------
        >>> from adjoint import ODESystem
        >>> def rhs(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> def rhs_vjp(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
        ...     x_bar[0] += -p[0] * f_bar[0]
        ...     p_bar[0] += -x[0] * f_bar[0]
        ...     return 0
        >>> system = ODESystem.from_kernels(rhs, rhs_vjp, n=1, n_p=1)
        >>> system.vjp(0.0, [2.0], [0.5], None, [1.0])
        (array([-0.5]), array([-2.]), array([], dtype=float64))
        """
        return cls(
            rhs,
            n=n,
            n_p=n_p,
            n_u=n_u,
            rhs_vjp=rhs_vjp,
            rhs_jvp=rhs_jvp,
            rhs_jac_x=rhs_jac_x,
            derivatives="kernels",
            jac_sparsity=jac_sparsity,
            bandwidth=bandwidth,
            name=name,
            check=check,
        )

    @classmethod
    def from_rhs(
        cls,
        rhs,
        *,
        n: int,
        n_p: int,
        n_u: int = 0,
        jac_sparsity=None,
        bandwidth=None,
        name: str | None = None,
    ) -> ODESystem:
        """A system from its right-hand side alone; products by complex step.

        ``rhs(t, x, p, u, out)`` must be written generically, so that Numba
        compiles it for complex128 arrays as well (arithmetic and NumPy
        functions; no ``abs``, ``min``/``max`` or comparisons on ``x``, ``p``,
        ``u``).  It is compiled twice, for float64 and complex128.

        Parameters
        ----------
        rhs : function or Kernel
            ``rhs(t, x, p, u, out)``, generic in its array types.
        n, n_p, n_u : int
            Sizes of state, parameters and controls (``n_u`` default 0).
        jac_sparsity, bandwidth, name : optional
            As for the class.

        Returns
        -------
        ODESystem
            With ``derivatives == 'complex_step'``.

        Raises
        ------
        ValueError
            For sizes out of range or a bad sparsity pattern.

        Notes
        -----
        Complex step gives exact Jacobian products (to rounding), but a VJP,
        being a transpose, needs every Jacobian column: ``n + n_p + n_u``
        complex evaluations of ``f`` per VJP, against one for a JVP and ``n``
        for ``∂f/∂x``.  Fine for small systems (tens of states); for larger
        ones write ``rhs_vjp`` (:meth:`from_kernels`) or use
        :meth:`from_sympy`.

        Examples
        --------
        >>> from adjoint import ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> system = ODESystem.from_rhs(decay, n=1, n_p=1)
        >>> system.jacobians(0.0, [2.0], [0.5])[1]
        array([[-2.]])
        """
        rhs_kernel = as_kernel(rhs, "rhs")
        return cls(
            rhs_kernel,
            n=n,
            n_p=n_p,
            n_u=n_u,
            rhs_complex=Kernel(rhs_kernel.py_func, "rhs_complex"),
            derivatives="complex_step",
            jac_sparsity=jac_sparsity,
            bandwidth=bandwidth,
            name=name,
        )

    def __repr__(self) -> str:
        return (
            f"<ODESystem {self.name}: n={self.n}, n_p={self.n_p}, n_u={self.n_u}, "
            f"derivatives={self.derivatives}>"
        )

    # ---- what the compiled sweeps receive ----

    def kernel_tuple(self):
        """The five ``cfunc`` pointers ``(rhs, rhs_vjp, rhs_jvp, rhs_jac_x,
        rhs_complex)``, placeholders where the system has none.

        Returns
        -------
        tuple
            What the compiled sweeps receive; a placeholder returns an error
            status if called.
        """
        ph = _placeholders()
        return (
            self.rhs.cfunc,
            (self.rhs_vjp or ph[0]).cfunc,
            (self.rhs_jvp or ph[1]).cfunc,
            (self.rhs_jac_x or ph[2]).cfunc,
            (self.rhs_complex or ph[3]).cfunc,
        )

    # ---- Python-level evaluation (continuous adjoint, sparse path, checks) ----
    # No validation in the underscore versions: callers pass float64 arrays of
    # the right shapes.

    def _raise(self, what, status, t):
        raise SweepError(
            f"The {what} of system `{self.name}` returned status {status} at t = {t}."
        )

    def _f(self, t, x, p, u, out):
        status = self.rhs.jit(t, x, p, u, out)
        if status != 0:
            self._raise("rhs", status, t)
        return out

    def _vjp(self, t, x, p, u, f_bar, x_bar, p_bar, u_bar):
        if self.modes[0] == ik.MODE_KERNEL:
            status = self.rhs_vjp.jit(t, x, p, u, f_bar, x_bar, p_bar, u_bar)
        else:
            status = ik.cs_vjp(
                self.rhs_complex.cfunc, t, x, p, u, f_bar, x_bar, p_bar, u_bar
            )
        if status != 0:
            self._raise("VJP", status, t)

    def _jvp(self, t, x, p, u, x_tan, p_tan, u_tan, out):
        mode = self.modes[1]
        if mode == ik.MODE_KERNEL:
            status = self.rhs_jvp.jit(t, x, p, u, x_tan, p_tan, u_tan, out)
        elif mode == ik.MODE_COMPLEX_STEP:
            status = ik.cs_jvp(
                self.rhs_complex.cfunc, t, x, p, u, x_tan, p_tan, u_tan, out
            )
        else:
            jx, jp, ju = self._jacobians(t, x, p, u)
            out[:] = jx @ x_tan + jp @ p_tan + ju @ u_tan
            status = 0
        if status != 0:
            self._raise("JVP", status, t)
        return out

    def _jac_x(self, t, x, p, u, out):
        mode = self.modes[2]
        if mode == ik.MODE_KERNEL:
            status = self.rhs_jac_x.jit(t, x, p, u, out)
        elif mode == ik.MODE_COMPLEX_STEP:
            status = ik.cs_jac_x(self.rhs_complex.cfunc, t, x, p, u, out)
        else:
            out[:] = self._jacobians(t, x, p, u)[0]
            status = 0
        if status != 0:
            self._raise("Jacobian", status, t)
        return out

    def _jacobians(self, t, x, p, u):
        n = self.n
        jx = np.empty((n, n))
        jp = np.empty((n, self.n_p))
        ju = np.empty((n, self.n_u))
        if self.modes[0] == ik.MODE_COMPLEX_STEP:
            status = ik.cs_jacobians(self.rhs_complex.cfunc, t, x, p, u, jx, jp, ju)
            if status != 0:
                self._raise("rhs", status, t)
            return jx, jp, ju
        f_bar = np.zeros(n)
        for i in range(n):
            f_bar[i] = 1.0
            jx[i] = 0.0
            jp[i] = 0.0
            ju[i] = 0.0
            self._vjp(t, x, p, u, f_bar, jx[i], jp[i], ju[i])
            f_bar[i] = 0.0
        if self.modes[2] == ik.MODE_KERNEL:
            self._jac_x(t, x, p, u, jx)
        return jx, jp, ju

    def _args(self, t, x, p, u):
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"`t` must be finite, got {t}.")
        x = _validate.real_array("x", x, (self.n,), what=f"the system has n = {self.n}")
        p = _validate.real_array(
            "p",
            np.zeros(0) if p is None else p,
            (self.n_p,),
            what=f"the system has n_p = {self.n_p}",
        )
        u = _validate.real_array(
            "u",
            np.zeros(self.n_u) if u is None else u,
            (self.n_u,),
            what=f"the system has n_u = {self.n_u}",
        )
        return t, x, p, u

    def f(self, t, x, p, u=None) -> np.ndarray:
        """``f(t, x, p, u)`` as a new array.

        Parameters
        ----------
        t : float
            Time.
        x : array_like, shape (n,)
        p : array_like, shape (n_p,)
        u : array_like, shape (n_u,), optional
            Controls (default: none, or zeros).

        Returns
        -------
        ndarray, shape (n,)

        Raises
        ------
        ValueError
            If ``t`` is not finite or an array has the wrong shape or a
            non-finite entry.
        SweepError
            If a kernel returns a non-zero status.

        Examples
        --------
        >>> from adjoint import ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> ODESystem.from_rhs(decay, n=1, n_p=1).f(0.0, [2.0], [0.5])
        array([-1.])
        """
        t, x, p, u = self._args(t, x, p, u)
        return self._f(t, x, p, u, np.empty(self.n))

    def vjp(self, t, x, p, u, f_bar):
        """``((∂f/∂x)ᵀf̄, (∂f/∂p)ᵀf̄, (∂f/∂u)ᵀf̄)`` as new arrays.

        Parameters
        ----------
        t : float
            Time.
        x : array_like, shape (n,)
        p : array_like, shape (n_p,)
        u : array_like, shape (n_u,) or None
            Controls (None for zeros).
        f_bar : array_like, shape (n,)
            The cotangent ``f̄``.

        Returns
        -------
        x_bar : ndarray, shape (n,)
        p_bar : ndarray, shape (n_p,)
        u_bar : ndarray, shape (n_u,)

        Raises
        ------
        ValueError
            If ``t`` is not finite or an array has the wrong shape or a
            non-finite entry.
        SweepError
            If a kernel returns a non-zero status.

        Examples
        --------
        >>> from adjoint import ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> system = ODESystem.from_rhs(decay, n=1, n_p=1)
        >>> x_bar, p_bar, u_bar = system.vjp(0.0, [2.0], [0.5], None, [1.0])
        >>> x_bar, p_bar
        (array([-0.5]), array([-2.]))
        """
        t, x, p, u = self._args(t, x, p, u)
        f_bar = _validate.real_array("f_bar", f_bar, (self.n,))
        bars = (np.zeros(self.n), np.zeros(self.n_p), np.zeros(self.n_u))
        self._vjp(t, x, p, u, f_bar, *bars)
        return bars

    def jvp(self, t, x, p, u, x_tan, p_tan=None, u_tan=None) -> np.ndarray:
        """``∂f/∂x ẋ + ∂f/∂p ṗ + ∂f/∂u u̇``.

        Missing tangents are zero.

        Parameters
        ----------
        t : float
            Time.
        x : array_like, shape (n,)
        p : array_like, shape (n_p,)
        u : array_like, shape (n_u,) or None
            Controls (None for zeros).
        x_tan : array_like, shape (n,)
        p_tan : array_like, shape (n_p,), optional
        u_tan : array_like, shape (n_u,), optional
            The tangents ``ẋ``, ``ṗ``, ``u̇``.

        Returns
        -------
        ndarray, shape (n,)

        Raises
        ------
        ValueError
            If ``t`` is not finite or an array has the wrong shape or a
            non-finite entry.
        SweepError
            If a kernel returns a non-zero status.

        Examples
        --------
        >>> from adjoint import ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> system = ODESystem.from_rhs(decay, n=1, n_p=1)
        >>> system.jvp(0.0, [2.0], [0.5], None, [1.0], [1.0])
        array([-2.5])
        """
        t, x, p, u = self._args(t, x, p, u)
        x_tan = _validate.real_array("x_tan", x_tan, (self.n,))
        p_tan = _validate.real_array(
            "p_tan", np.zeros(self.n_p) if p_tan is None else p_tan, (self.n_p,)
        )
        u_tan = _validate.real_array(
            "u_tan", np.zeros(self.n_u) if u_tan is None else u_tan, (self.n_u,)
        )
        return self._jvp(t, x, p, u, x_tan, p_tan, u_tan, np.empty(self.n))

    def jacobian_x(self, t, x, p, u=None) -> np.ndarray:
        """``∂f/∂x``, shape (n, n).

        Parameters
        ----------
        t : float
            Time.
        x : array_like, shape (n,)
        p : array_like, shape (n_p,)
        u : array_like, shape (n_u,), optional
            Controls (default: none, or zeros).

        Returns
        -------
        ndarray, shape (n, n)

        Raises
        ------
        ValueError
            If ``t`` is not finite or an array has the wrong shape or a
            non-finite entry.
        SweepError
            If a kernel returns a non-zero status.

        Examples
        --------
        >>> from adjoint import ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> ODESystem.from_rhs(decay, n=1, n_p=1).jacobian_x(0.0, [2.0], [0.5])
        array([[-0.5]])
        """
        t, x, p, u = self._args(t, x, p, u)
        return self._jac_x(t, x, p, u, np.empty((self.n, self.n)))

    def jacobians(self, t, x, p, u=None):
        """``(∂f/∂x, ∂f/∂p, ∂f/∂u)`` with shapes (n, n), (n, n_p), (n, n_u).

        Parameters
        ----------
        t : float
            Time.
        x : array_like, shape (n,)
        p : array_like, shape (n_p,)
        u : array_like, shape (n_u,), optional
            Controls (default: none, or zeros).

        Returns
        -------
        jac_x : ndarray, shape (n, n)
        jac_p : ndarray, shape (n, n_p)
        jac_u : ndarray, shape (n, n_u)

        Raises
        ------
        ValueError
            If ``t`` is not finite or an array has the wrong shape or a
            non-finite entry.
        SweepError
            If a kernel returns a non-zero status.

        Examples
        --------
        >>> from adjoint import ODESystem
        >>> def decay(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> system = ODESystem.from_rhs(decay, n=1, n_p=1)
        >>> [j.shape for j in system.jacobians(0.0, [2.0], [0.5])]
        [(1, 1), (1, 1), (1, 0)]
        """
        t, x, p, u = self._args(t, x, p, u)
        return self._jacobians(t, x, p, u)

    # ---- sparsity ----

    def _column_groups(self):
        """``(rows, cols, group_of_col, seeds)`` for the sparse Jacobian: columns
        that share no row go into one group, and one JVP per group (seeded by
        the sum of its unit vectors) yields all their entries."""
        if self._coloring is None:
            pattern = self.jac_sparsity.tocsc()
            n = self.n
            group = np.full(n, -1, dtype=np.intp)
            used_rows = []  # per group: boolean mask of rows already taken
            for j in range(n):
                rows = pattern.indices[pattern.indptr[j] : pattern.indptr[j + 1]]
                for g, mask in enumerate(used_rows):
                    if not mask[rows].any():
                        break
                else:
                    g = len(used_rows)
                    used_rows.append(np.zeros(n, dtype=bool))
                used_rows[g][rows] = True
                group[j] = g
            seeds = np.zeros((len(used_rows), n))
            seeds[group, np.arange(n)] = 1.0
            coo = pattern.tocoo()
            self._coloring = (
                coo.row.astype(np.intp),
                coo.col.astype(np.intp),
                group,
                seeds,
            )
        return self._coloring

    def _sparse_jac_x(self, t, x, p, u):
        """``∂f/∂x`` as a CSC matrix from one JVP per column group."""
        rows, cols, group, seeds = self._column_groups()
        out = np.empty_like(seeds)
        status = ik.grouped_jvp(self.kernel_tuple(), self.modes, t, x, p, u, seeds, out)
        if status != 0:
            self._raise("JVP", status, t)
        values = out[group[cols], rows]
        return sps.csc_matrix((values, (rows, cols)), shape=(self.n, self.n))

    # ---- first use: probe the user's kernels, optional complex-step check ----

    def _first_use(self, t, x, p, u):
        if self._probe_pending:
            self._probe(t, x, p, u)
        if self._check_pending:
            self._check_pending = False
            self.check_kernels(t, x, p, u)

    def _probe(self, t, x, p, u):
        """Run each kernel once as plain Python with bounds-checked arrays."""
        self._probe_pending = False
        rng = np.random.default_rng(0)
        n = self.n
        out = np.full(n, np.nan)
        _probe_call(self.rhs, "out", out, t, x, p, u, out)
        if self.rhs_vjp is not None:
            bars = (np.zeros(n), np.zeros(self.n_p), np.zeros(self.n_u))
            _probe_call(
                self.rhs_vjp,
                "x_bar, p_bar, u_bar",
                None,
                t,
                x,
                p,
                u,
                rng.standard_normal(n),
                *bars,
            )
        if self.rhs_jvp is not None:
            out = np.full(n, np.nan)
            _probe_call(
                self.rhs_jvp,
                "out",
                out,
                t,
                x,
                p,
                u,
                rng.standard_normal(n),
                np.zeros(self.n_p),
                np.zeros(self.n_u),
                out,
            )
        if self.rhs_jac_x is not None:
            out = np.full((n, n), np.nan)
            _probe_call(self.rhs_jac_x, "jac_out", out, t, x, p, u, out)

    def check_kernels(
        self, t=0.0, x=None, p=None, u=None, *, rtol: float = CHECK_RTOL, rng=None
    ) -> dict:
        """Compare the system's Jacobian products with complex step of ``rhs``.

        Builds ``[∂f/∂x, ∂f/∂p, ∂f/∂u]`` column by column by complex step
        (``rhs`` must run on complex128) and compares the VJP with random
        ``f̄``, the JVP with random tangents and ``∂f/∂x``.

        Parameters
        ----------
        t : float, optional
            Time of the check (default 0).
        x, p, u : array_like, optional
            The point; ``x`` and ``p`` default to uniform random values in
            ``[0.5, 1.5]``, ``u`` to zeros.
        rtol : float, optional
            Largest relative error accepted (default 1e-8).
        rng : numpy.random.Generator, optional
            Source of the random point and directions (default seeded).

        Returns
        -------
        dict
            Relative error of each product checked (``'rhs_vjp'``,
            ``'rhs_jvp'``, ``'rhs_jac_x'``).

        Raises
        ------
        ValueError
            If a product is off by more than ``rtol``; the message names the
            kernel, the worst component and both values.
        TypeError
            If ``rhs`` does not compile for complex128 input.

        Examples
        --------
        >>> from adjoint import ODESystem
        >>> def rhs(t, x, p, u, out):
        ...     out[0] = -p[0] * x[0]
        ...     return 0
        >>> def rhs_vjp(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
        ...     x_bar[0] += -p[0] * f_bar[0]
        ...     p_bar[0] += -x[0] * f_bar[0]
        ...     return 0
        >>> system = ODESystem.from_kernels(rhs, rhs_vjp, n=1, n_p=1)
        >>> errors = system.check_kernels()
        >>> sorted(errors), bool(errors["rhs_vjp"] < 1e-12)
        (['rhs_vjp'], True)
        """
        rng = np.random.default_rng(12345) if rng is None else rng
        x = rng.uniform(0.5, 1.5, self.n) if x is None else x
        p = rng.uniform(0.5, 1.5, self.n_p) if p is None else p
        t, x, p, u = self._args(t, x, p, u)
        jx, jp, ju = _complex_step_jacobians(self, t, x, p, u)
        errors = {}
        f_bar = rng.standard_normal(self.n)
        if self.rhs_vjp is not None:
            got = self.vjp(t, x, p, u, f_bar)
            want = (jx.T @ f_bar, jp.T @ f_bar, ju.T @ f_bar)
            errors["rhs_vjp"] = _compare(
                self.rhs_vjp, ("x_bar", "p_bar", "u_bar"), got, want, rtol
            )
        if self.rhs_jvp is not None:
            tans = (
                rng.standard_normal(self.n),
                rng.standard_normal(self.n_p),
                rng.standard_normal(self.n_u),
            )
            got = self.jvp(t, x, p, u, *tans)
            want = jx @ tans[0] + jp @ tans[1] + ju @ tans[2]
            errors["rhs_jvp"] = _compare(self.rhs_jvp, ("out",), (got,), (want,), rtol)
        if self.rhs_jac_x is not None:
            got = self.jacobian_x(t, x, p, u)
            errors["rhs_jac_x"] = _compare(
                self.rhs_jac_x, ("jac_out",), (got,), (jx,), rtol
            )
        return errors


def _complex_step_jacobians(system, t, x, p, u):
    """Reference Jacobians by complex step of the generic ``rhs``."""
    h = ik.CS_H
    n = system.n
    xc, pc, uc = (a.astype(np.complex128) for a in (x, p, u))
    out = np.empty(n, dtype=np.complex128)
    blocks = []
    for arr in (xc, pc, uc):
        jac = np.empty((n, arr.shape[0]))
        for j in range(arr.shape[0]):
            arr[j] += 1j * h
            try:
                system.rhs.jit(t, xc, pc, uc, out)
            except Exception as err:  # numba TypingError: not generic
                raise TypeError(
                    f"Checking the kernels of `{system.name}` needs `rhs` written "
                    "generically, so that it also runs on complex128 arrays; it "
                    f"does not compile for them: {str(err).splitlines()[0]}"
                ) from err
            arr[j] -= 1j * h
            jac[:, j] = out.imag / h
        blocks.append(jac)
    return blocks


def _compare(kernel, names, got, want, rtol):
    scale = max((np.max(np.abs(w)) for w in want if w.size), default=0.0)
    scale = max(scale, 1e-300)
    worst, where = 0.0, None
    for name, g, w in zip(names, got, want):
        if not g.size:
            continue
        diff = np.abs(g - w)
        idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
        if diff[idx] / scale >= worst:
            worst = float(diff[idx] / scale)
            where = (name, idx, g[idx], w[idx])
    if worst > rtol:
        name, idx, g, w = where
        index = idx[0] if len(idx) == 1 else idx
        raise ValueError(
            f"The {kernel.kind} kernel `{kernel.name}` disagrees with complex step "
            f"of `rhs`: {name}[{index}] = {g!r}, complex step gives {w!r} (relative "
            f"error {worst:.2e} > {rtol:.0e}). Check that entry of the kernel."
        )
    return worst


def _probe_call(kernel, outputs, out, *args):
    try:
        status = kernel.py_func(*args)
    except IndexError as err:
        raise ValueError(
            f"The {kernel.kind} kernel `{kernel.name}` indexed outside its arrays "
            f"({err}); its outputs ({outputs}) have the shapes of x, p and u "
            "(jac_out is (n, n))."
        ) from err
    except Exception:
        # Kernels may use Numba-only features that do not run as Python; the
        # probe is a courtesy, not a requirement.
        return
    if out is not None and np.isnan(out).any():
        j = np.argwhere(np.isnan(out))[0]
        index = int(j[0]) if j.size == 1 else tuple(int(i) for i in j)
        raise ValueError(
            f"The {kernel.kind} kernel `{kernel.name}` left {outputs}[{index}] "
            f"unwritten (or wrote NaN); it has shape {out.shape} and every entry "
            "must be set."
        )
    if status is not None and not isinstance(status, (int, np.integer)):
        raise TypeError(
            f"The {kernel.kind} kernel `{kernel.name}` returned {status!r}; it must "
            "return an integer status (0 for success)."
        )


def _sparsity(jac_sparsity, bandwidth, n):
    if jac_sparsity is not None and bandwidth is not None:
        raise ValueError("Give `jac_sparsity` or `bandwidth`, not both.")
    if bandwidth is not None:
        try:
            lower, upper = (int(b) for b in bandwidth)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"`bandwidth` must be a pair (lower, upper) of integers, got "
                f"{bandwidth!r}."
            ) from err
        if lower < 0 or upper < 0:
            raise ValueError(f"`bandwidth` must be non-negative, got {bandwidth!r}.")
        offsets = list(range(-lower, upper + 1))
        pattern = sps.diags(
            [np.ones(n - abs(o)) for o in offsets], offsets, shape=(n, n)
        )
        return sps.csr_matrix(pattern, dtype=bool)
    if jac_sparsity is None:
        return None
    pattern = sps.csr_matrix(jac_sparsity, dtype=bool)
    if pattern.shape != (n, n):
        raise ValueError(
            f"`jac_sparsity` has shape {pattern.shape}; the system has n = {n}, so "
            f"it must have shape ({n}, {n})."
        )
    # The diagonal is always needed: Newton's matrix is I - theta dt J.
    return sps.csr_matrix(pattern + sps.eye(n, dtype=bool), dtype=bool)


def costs_from_sympy(
    x, p, u=(), *, running=None, terminal=None, data=(), cache_dir=None
) -> dict:
    """Cost kernels of an :class:`~adjoint.ODESequence` from SymPy expressions.

    The running cost ``g_k = running(x, u, p, d)`` and terminal cost
    ``Φ = terminal(x, p, d)``, where ``d`` are symbols standing for the
    entries of the sequence's data row (``data[k]`` at step ``k``, ``data[N]``
    for ``Φ``).  Gradients are taken symbolically; the source is cached on
    disk as for :meth:`ODESystem.from_sympy`.

    Parameters
    ----------
    x, p : sequence of sympy.Symbol
        The state and parameter symbols, in the order of the system.
    u : sequence of sympy.Symbol, optional
        Control symbols (the per-step ``theta`` of the cost kernels).
    running : sympy.Expr, optional
        The running cost ``g_k(x, u, p, d)``, evaluated at steps ``0 … N-1``.
    terminal : sympy.Expr, optional
        The terminal cost ``Φ(x, p, d)`` at step ``N``.
    data : sequence of sympy.Symbol, optional
        Symbols for the columns of the sequence's ``data`` rows.
    cache_dir : path-like, optional
        Where generated modules go (as for :meth:`ODESystem.from_sympy`).

    Returns
    -------
    dict
        ``running_cost``, ``running_cost_vjp`` and/or ``terminal_cost``,
        ``terminal_cost_vjp`` as kernels, to pass on with
        ``ODESequence(system, ..., **costs)``.

    Raises
    ------
    ValueError
        If neither ``running`` nor ``terminal`` is given, or an expression
        uses a symbol that is not declared.

    Examples
    --------
    >>> import sympy as sp
    >>> x1, x2, a, y = sp.symbols("x1 x2 a y")
    >>> costs = costs_from_sympy([x1, x2], [a], data=[y],
    ...                          terminal=(x1 - y) ** 2 / 2)
    >>> sorted(costs)
    ['terminal_cost', 'terminal_cost_vjp']
    """
    from . import _systems_codegen as cg

    if running is None and terminal is None:
        raise ValueError("Give `running`, `terminal` or both.")
    x = cg._as_symbols("x", x)
    p = cg._as_symbols("p", p)
    u = cg._as_symbols("u", u)
    d = cg._as_symbols("data", data)
    exprs = [e for e in (running, terminal) if e is not None]
    canon_exprs, canon = cg.canonicalise(exprs, {"x": x, "p": p, "u": u, "d": d})
    running_c = canon_exprs[0] if running is not None else None
    terminal_c = canon_exprs[-1] if terminal is not None else None
    key = cg.digest(
        "cost",
        [
            running_c if running_c is not None else 0,
            terminal_c if terminal_c is not None else 0,
        ],
        (len(x), len(p), len(u), len(d), running is not None, terminal is not None),
    )
    module = cg.load(
        "cost", key, lambda: cg.cost_source(running_c, terminal_c, canon), cache_dir
    )
    kinds = []
    if running is not None:
        kinds += ["running_cost", "running_cost_vjp"]
    if terminal is not None:
        kinds += ["terminal_cost", "terminal_cost_vjp"]
    return {kind: Kernel(getattr(module, kind), kind) for kind in kinds}
