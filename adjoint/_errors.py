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
    """


class SweepError(RuntimeError):
    """A forward, adjoint or tangent sweep failed part-way.

    Raised when a kernel reports failure during a sweep: a Newton iteration in
    an implicit step that does not converge, or a state that becomes
    non-finite. Bad input is a `ValueError` raised before the sweep starts,
    not a `SweepError`.
    """
