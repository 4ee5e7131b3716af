"""Adjoint-state gradients, simulation and optimal control.

Backpropagation is the adjoint-state method applied to a chain of steps.  A
neural network, an ODE optimal-control problem and a parameter-estimation
task are all state-transition sequences ``x_{k+1} = F_k(x_k, θ_k, p)`` with a
cost; one discrete adjoint solver gives exact gradients for all of them.
"""

import logging
import warnings
from importlib.metadata import PackageNotFoundError, version

from numba.core.errors import NumbaExperimentalFeatureWarning

from . import kernels
from ._chain import Chain
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
from ._checkpoint import (
    Checkpointing,
    CheckpointResult,
    CheckpointStats,
    binomial_forward_steps,
    checkpointed_gradient,
)
from ._compare import Comparison, ComparisonRun, compare
from ._constraints import (
    Constraint,
    ConstraintSet,
    check_control_problem,
    final_state,
    optimise,
    path_inequality,
    state_bound,
    terminal_equality,
    terminal_inequality,
)
from ._control import (
    ControlProblem,
    ControlResult,
    PiecewiseConstant,
    PiecewiseLinear,
    time_scaled,
)
from ._errors import DataError, SweepError
from ._estimation import FitResult, ParameterEstimation
from ._hessian import (
    HessianReport,
    check_hessian,
    hessian,
    hessian_taylor_test,
    hessian_vector_product,
    make_hessp,
)
from ._homogeneous import Sequence
from ._integrators._adaptive import AdaptiveODESequence, EmbeddedPair, StepRecord
from ._integrators._continuous import (
    AdjointComparison,
    ContinuousAdjointResult,
    compare_adjoints,
    continuous_adjoint_gradient,
)
from ._integrators._convergence import ConvergenceResult, gradient_convergence
from ._integrators._observations import ObservationCost, observation_cost
from ._integrators._ode_sequence import ODESequence
from ._integrators._tableaus import Tableau
from ._layers import (
    Abs,
    Conv2D,
    Dense,
    Flatten,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Sigmoid,
    Softplus,
    Tanh,
)
from ._losses import Loss, MeanSquaredError, SoftmaxCrossEntropy, accuracy
from ._objective import Objective
from ._sequence import SequenceBase, Trajectory
from ._systems import ODESystem, costs_from_sympy
from ._train import (
    SGD,
    Adam,
    Momentum,
    Optimiser,
    ProgressBar,
    init_params,
    load_params,
    save_params,
    train,
    train_lbfgs,
)

# The sweeps receive kernels as first-class function pointers, which Numba
# still labels experimental; that is the design (DESIGN.md section 4), so the
# warning (raised when a sweep compiles, not at import) says nothing to users.
warnings.filterwarnings(
    "ignore",
    message="First-class function type feature is experimental",
    category=NumbaExperimentalFeatureWarning,
)

try:
    __version__ = version("adjoint-toolkit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Abs",
    "Adam",
    "AdaptiveODESequence",
    "Chain",
    "CheckpointResult",
    "CheckpointStats",
    "Checkpointing",
    "Conv2D",
    "DataError",
    "Dense",
    "DotProductResult",
    "EmbeddedPair",
    "Flatten",
    "GradientReport",
    "Layer",
    "LeakyReLU",
    "Loss",
    "MaxPool2D",
    "MeanSquaredError",
    "Momentum",
    "Objective",
    "Optimiser",
    "ProgressBar",
    "ReLU",
    "Residual",
    "SGD",
    "Sequence",
    "SequenceBase",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Softplus",
    "StepRecord",
    "SweepError",
    "Tanh",
    "TaylorResult",
    "Trajectory",
    "accuracy",
    "binomial_forward_steps",
    "check_gradients",
    "checkpointed_gradient",
    "complex_step_gradient",
    "dot_product_test",
    "finite_difference_gradient",
    "init_params",
    "kernels",
    "load_params",
    "relative_error",
    "save_params",
    "taylor_test",
    "train",
    "train_lbfgs",
    "Constraint",
    "ConstraintSet",
    "check_control_problem",
    "final_state",
    "optimise",
    "path_inequality",
    "state_bound",
    "terminal_equality",
    "terminal_inequality",
    "ControlProblem",
    "ControlResult",
    "PiecewiseConstant",
    "PiecewiseLinear",
    "time_scaled",
    "AdjointComparison",
    "ContinuousAdjointResult",
    "compare_adjoints",
    "continuous_adjoint_gradient",
    "ConvergenceResult",
    "gradient_convergence",
    "ODESequence",
    "ODESystem",
    "ObservationCost",
    "Tableau",
    "costs_from_sympy",
    "observation_cost",
    "FitResult",
    "ParameterEstimation",
    "Comparison",
    "ComparisonRun",
    "HessianReport",
    "check_hessian",
    "compare",
    "hessian",
    "hessian_taylor_test",
    "hessian_vector_product",
    "make_hessp",
]
