"""Shared fixtures: a seeded random generator; matplotlib set to Agg; one BLAS
thread per test process."""

import os

# The suite runs on two pytest-xdist workers on a two-core machine; BLAS
# threads on top of that oversubscribe the cores, and SciPy's L-BFGS-B was
# measured 10x slower on small problems from thread hand-offs alone. Set
# before NumPy loads its BLAS; subprocesses started by tests inherit it.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Seed of the `rng` fixture; change it only together with any test tolerance
# that was tuned against it.
SEED = 20261203


@pytest.fixture
def rng():
    """A fresh, seeded generator for each test."""
    return np.random.default_rng(SEED)
