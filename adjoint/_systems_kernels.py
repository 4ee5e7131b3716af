"""Placeholder right-hand-side kernels for the products a system does not have.

The compiled sweeps receive all five right-hand-side kernels of a system as
function pointers and choose, by mode, which to call; the ones a system lacks
are filled with these.  Each returns status -4
(:data:`adjoint._integrators._kernels.STATUS_UNAVAILABLE`): being called is
a bug in the toolkit, reported as such.
"""


def unavailable_rhs_vjp(t, x, p, u, f_bar, x_bar, p_bar, u_bar):
    return -4


def unavailable_rhs_jvp(t, x, p, u, x_tan, p_tan, u_tan, out):
    return -4


def unavailable_rhs_jac_x(t, x, p, u, jac_out):
    return -4


def unavailable_rhs_complex(t, x, p, u, out):
    return -4
