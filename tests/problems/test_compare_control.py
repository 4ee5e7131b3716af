"""`compare` on the control problems that have no constraints beyond bounds."""

import numpy as np

from problems import catalyst_mixing, lqr

METHODS = ["L-BFGS-B", "L-BFGS-B:2-point", "Newton-CG"]


def test_lqr_comparison_reaches_riccati_cost_and_writes_files(tmp_path):
    problem = lqr.build()
    comparison = lqr.compare(problem, METHODS, out=tmp_path, max_time=30.0)
    _, J_riccati = lqr.riccati(problem)
    costs = {run.label: run.fun for run in comparison.runs}
    assert len(costs) == len(METHODS)
    for label, cost in costs.items():
        np.testing.assert_allclose(cost, J_riccati, rtol=1e-6, err_msg=label)
    for suffix in (".md", ".csv", ".png"):
        assert (tmp_path / f"lqr-compare{suffix}").exists()


def test_catalyst_comparison_respects_bounds(tmp_path):
    problem = catalyst_mixing.build()
    comparison = catalyst_mixing.compare(problem, ["L-BFGS-B"], out=None)
    run = comparison.runs[0]
    assert np.all(run.x >= -1e-12) and np.all(run.x <= 1 + 1e-12)
    assert abs(run.fun - catalyst_mixing.REFERENCE["J"]) < 2e-3
