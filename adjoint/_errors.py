"""Exception classes that callers may want to catch by family.

Each class subclasses the built-in that fits its kind of failure, so code that
already catches ``ValueError`` or ``RuntimeError`` keeps working (STYLE.md
section 7). The command line turns a `DataError` into a one-line message and
exit status 2 instead of a traceback.
"""

__all__ = ["DataError", "SweepError"]


class DataError(ValueError):
    """A data file cannot be used as it stands.

    Raised when a file is missing, lacks a required column, or holds a value
    that is not a number, is missing, breaks the time order or has the wrong
    sign for the fit. The message names the file, the line (1-based, as an
    editor shows it) and the column, so the user can fix the file.

    A subclass of ``ValueError``: ``except ValueError`` catches it too.

    Parameters
    ----------
    message : str
        What is wrong and where (file, line, column).

    Examples
    --------
    >>> from adjoint import DataError
    >>> try:
    ...     raise DataError("pelts.csv, line 4, column 'hare': 'n/a' is not a number.")
    ... except ValueError as err:
    ...     print(type(err).__name__, "-", err)
    DataError - pelts.csv, line 4, column 'hare': 'n/a' is not a number.
    """


class SweepError(RuntimeError):
    """A forward, adjoint or tangent sweep failed part-way.

    Raised when a kernel reports failure during a sweep: a Newton iteration in
    an implicit step that does not converge, or a state that becomes
    non-finite. Bad input is a `ValueError` raised before the sweep starts,
    not a `SweepError`.

    A subclass of ``RuntimeError``.  The message names the step and the
    states around it.  An optimiser that may try points where the dynamics
    blow up can catch it and treat the point as infinitely bad (as
    :func:`adjoint.optimise` does).

    Parameters
    ----------
    message : str
        What failed, at which step.

    Examples
    --------
    Squaring ``x_0 = 10`` overflows after nine steps:

    >>> import adjoint
    >>> def step(k, x, theta, p, consts, out):
    ...     out[0] = x[0] * x[0]
    ...     return 0
    >>> def step_vjp(k, x, theta, p, consts, lam, x_bar, theta_bar, p_bar):
    ...     x_bar[0] += 2.0 * x[0] * lam[0]
    ...     return 0
    >>> seq = adjoint.Sequence(step, step_vjp, n=1, N=20)
    >>> obj = adjoint.Objective(seq, x0=[10.0], wrt="x0")
    >>> try:
    ...     obj.fun(obj.z0)
    ... except adjoint.SweepError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    The state became non-finite at step 8: x_9 = [inf] from x_8 = ...
    """
