"""Shared fixtures: a seeded random generator; matplotlib set to Agg."""

import matplotlib

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
