"""ODE integrators with exact discrete adjoints, and the continuous adjoint.

- :mod:`._tableaus`: Butcher tableaus and scheme names;
- :mod:`._kernels`: the compiled sweeps (explicit Runge–Kutta, implicit
  one-stage schemes) and the Jacobian products of a system;
- :mod:`._ode_sequence`: :class:`ODESequence`, the sequence the sweeps run on;
- :mod:`._sparse`: implicit steps with sparse LU for banded systems;
- :mod:`._observations`: least-squares observation costs;
- :mod:`._continuous`: the continuous adjoint through SciPy's ``solve_ivp``;
- :mod:`._convergence`: discrete against continuous gradients as ``dt`` shrinks.

Public names are re-exported by :mod:`adjoint`; this file imports nothing so
that :mod:`adjoint._systems` can use the kernels without an import cycle.
"""
