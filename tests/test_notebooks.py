"""Run every notebook in notebooks/ top to bottom so the demos never rot."""

from pathlib import Path

import pytest

from helpers import run_notebook

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs(notebook, tmp_path):
    run_notebook(notebook, cwd=tmp_path)
