"""Adjoint-state gradients, simulation and optimal control.

Backpropagation is the adjoint-state method applied to a chain of steps.  A
neural network, an ODE optimal-control problem and a parameter-estimation
task are all state-transition sequences ``x_{k+1} = F_k(x_k, θ_k, p)`` with a
cost; one discrete adjoint solver gives exact gradients for all of them.
"""

import logging
from importlib.metadata import PackageNotFoundError, version

from . import kernels
from ._check import (
    DotProductResult,
    GradientReport,
    TaylorResult,
    check_gradients,
    complex_step_gradient,
    dot_product_test,
    finite_difference_gradient,
    relative_error,
    taylor_test,
)
from ._errors import DataError, SweepError
from ._homogeneous import Sequence
from ._objective import Objective
from ._sequence import SequenceBase, Trajectory

try:
    __version__ = version("adjoint-toolkit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DataError",
    "DotProductResult",
    "GradientReport",
    "Objective",
    "Sequence",
    "SequenceBase",
    "SweepError",
    "TaylorResult",
    "Trajectory",
    "check_gradients",
    "complex_step_gradient",
    "dot_product_test",
    "finite_difference_gradient",
    "kernels",
    "relative_error",
    "taylor_test",
]
