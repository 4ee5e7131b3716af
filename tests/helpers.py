"""Helpers shared by the tests: running a notebook top to bottom."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

# Seconds one cell may run before the notebook fails.
CELL_TIMEOUT = 600
# Seconds the kernel may take to start (a cold import of numba is slow).
STARTUP_TIMEOUT = 120


class _ThisPythonKernelSpecs(KernelSpecManager):
    """Kernel specs whose every kernel is ipykernel on this interpreter.

    An installed ``python3`` kernel spec may point at another Python (its
    ``argv`` may say just ``python``); building the spec here ties the
    notebooks to the environment that runs the tests.
    """

    def get_kernel_spec(self, kernel_name):
        return KernelSpec(
            argv=[
                sys.executable,
                "-m",
                "ipykernel_launcher",
                "-f",
                "{connection_file}",
            ],
            display_name=f"Python ({sys.executable})",
            language="python",
            resource_dir="",
        )


def run_notebook(path: str | os.PathLike, cwd: str | os.PathLike):
    """Execute the notebook at `path` top to bottom, in directory `cwd`.

    Returns the executed notebook. Raises ``nbclient.exceptions.
    CellExecutionError`` (with the cell's traceback) when a cell raises, and
    ``nbclient.exceptions.CellTimeoutError`` when one runs longer than
    `CELL_TIMEOUT` seconds. The notebook file itself is not modified.
    """
    notebook = nbformat.read(Path(path), as_version=4)
    kernel_manager = AsyncKernelManager(
        kernel_name="python3", kernel_spec_manager=_ThisPythonKernelSpecs()
    )
    client = NotebookClient(
        notebook,
        km=kernel_manager,
        timeout=CELL_TIMEOUT,
        startup_timeout=STARTUP_TIMEOUT,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return notebook
