"""Build the documentation as CI does and check what it must contain.

The build command is the one README.md documents,

    python -m sphinx -W --keep-going -b html docs docs/_build/html

run here into a temporary directory: warnings (a broken cross-reference, a
docstring docutils cannot parse) are errors.  The same test then runs
Sphinx's doctest builder over the user guide's examples (reusing the parsed
sources), and checks the built site: every name in ``adjoint.__all__`` is
in the API reference, every registered problem has its gallery page, every
notebook is rendered.

Both builds run in one test so that two pytest workers never write the
generated sources under docs/ at the same time.
"""

import html as html_lib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import adjoint
import problems

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The build command of README.md, with the output directory left off.
BUILD_COMMAND = [
    sys.executable,
    "-m",
    "sphinx",
    "-W",
    "--keep-going",
    "-b",
    "html",
    "docs",
]
# The HTML build must stay fast (issue 9); generous, since CI runs it next to
# other tests on a 2-core machine.
MAX_BUILD_SECONDS = 240

sphinx = pytest.importorskip("sphinx", reason="the `docs` extra is not installed")


def _run(command, what):
    env = dict(os.environ, MPLBACKEND="Agg")
    start = time.perf_counter()
    proc = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    output = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"{what} failed (status {proc.returncode}):\n{output}"
    return seconds, proc.stdout


def documented_objects(html: Path) -> set[str]:
    """Names of the Python objects in the built site's inventory."""
    from sphinx.util.inventory import InventoryFile

    with open(html / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    names = set()
    for role, entries in inventory.items():
        if role.startswith("py:"):
            names.update(entries)
    return names


def page_text(path: Path) -> str:
    """The text of a built page, tags removed and spaces collapsed."""
    text = re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8"))
    return " ".join(html_lib.unescape(text).split())


@pytest.mark.slow
def test_docs_build_and_contents(tmp_path):
    html = tmp_path / "html"

    # Build exactly as documented, warnings as errors
    seconds, _ = _run(BUILD_COMMAND + [str(html)], "the HTML build")
    assert seconds < MAX_BUILD_SECONDS, f"the docs build took {seconds:.0f} s"

    # Every public name is in the API reference
    documented = documented_objects(html)
    missing = [name for name in adjoint.__all__ if f"adjoint.{name}" not in documented]
    assert not missing, (
        f"names of adjoint.__all__ missing from the API reference: {missing}"
    )
    for name in adjoint.__all__:
        assert (html / "api" / "generated" / f"adjoint.{name}.html").exists(), name

    # Every registered problem has its gallery page and API entry
    for name, module_path in problems.registry().items():
        page = html / "gallery" / f"{name}.html"
        assert page.exists(), f"problem {name!r} has no gallery page"
        text = page_text(page)
        assert f"adjoint solve {name}" in text, (
            f"gallery page of {name!r} lacks its command"
        )
        assert "Reference value" in text, (
            f"gallery page of {name!r} lacks its reference"
        )
        assert module_path in documented, f"{module_path} is not in the API reference"

    # Every notebook is rendered
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (html / "notebooks" / f"{notebook.stem}.html").exists(), notebook.name

    # The user guide's examples run (doctest builder, same parsed sources)
    doctrees = html / ".doctrees"
    _, stdout = _run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-b",
            "doctest",
            "-d",
            str(doctrees),
            "docs",
            str(tmp_path / "doctest"),
        ],
        "the guide's doctests",
    )
    assert " 0 failures in tests" in stdout, stdout[-3000:]


def test_readme_documents_the_build_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python -m sphinx -W --keep-going -b html docs docs/_build/html" in readme
