"""The notebook runner in helpers.py passes good notebooks and fails bad ones."""

import sys

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from helpers import run_notebook


def _write_notebook(path, *sources):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)
    return path


def test_run_notebook_passes_cells_that_share_state(tmp_path):
    path = _write_notebook(tmp_path / "good.ipynb", "x = 1", "assert x == 1")

    executed = run_notebook(path, cwd=tmp_path)

    assert [cell.execution_count for cell in executed.cells] == [1, 2]


def test_run_notebook_raises_when_a_cell_raises(tmp_path):
    path = _write_notebook(
        tmp_path / "bad.ipynb", "x = 1", "raise RuntimeError('cell two fails')"
    )

    with pytest.raises(CellExecutionError, match="cell two fails"):
        run_notebook(path, cwd=tmp_path)


def test_run_notebook_uses_this_interpreter_and_cwd(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    path = _write_notebook(
        tmp_path / "where.ipynb",
        "import os, sys\n"
        f"assert sys.executable == {sys.executable!r}, sys.executable\n"
        f"assert os.path.samefile(os.getcwd(), {str(work)!r}), os.getcwd()",
    )

    run_notebook(path, cwd=work)
