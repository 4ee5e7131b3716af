"""Sphinx configuration of the adjoint-toolkit documentation.

Build (from the repository root; the command README.md documents and
tests/test_docs.py runs)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Three parts of the site follow the code by themselves, written into docs/
when this file is loaded (files listed in docs/.gitignore, rewritten only when
their text changes so incremental builds stay incremental):

- ``api/adjoint.rst``: one autosummary table per implementation module of
  every name in ``adjoint.__all__``;
- ``api/problems.rst`` and ``gallery/<name>.rst``: the problem registry
  (``problems.registry()``) with each problem's module docstring, command,
  reference value and the figure ``docs/make_figures.py`` drew;
- ``notebooks/*.ipynb``: copies of the repository's notebooks, rendered
  without executing them (``nb_execution_mode = "off"``).
"""

from __future__ import annotations

import importlib
import json
import pprint
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import adjoint  # noqa: E402
import problems  # noqa: E402

# ---- project ----

project = "adjoint-toolkit"
author = "the adjoint-toolkit developers"
copyright = "2026, the adjoint-toolkit developers"
release = adjoint.__version__
version = ".".join(release.split(".")[:2])

# ---- extensions ----

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# A reference to a Python object that does not exist fails the build (with
# -W).  Names outside the project (NumPy, SciPy, ...) have no inventory here
# (the build runs offline), and private modules are not documented, so
# references to those are let through.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|scipy|sympy|matplotlib|numba|collections|typing)\..*"),
    (r"py:.*", r"(adjoint|problems)(\.\w+)*\._\w+.*"),
    (r"py:.*", r"_\w+.*"),
    # Types in "Attributes" sections become references to each word: shape
    # words ("shape (n, q)"), numbers, choices ("{'auto', 'forward'}") and
    # builtin or NumPy type names are not classes of ours.  Our classes are
    # CamelCase, so only capitalised words are checked.
    (r"py:class", r"([a-z_0-9'{(\[].*|.*[\s'}].*|[A-Z]|[A-Z]_?\w{0,2})"),
    (
        r"py:class",
        r"(ArrayLike|NDArray|Path|ModuleType|Any|Callable|Generator|"
        r"Counter|OptimizeResult|Figure|Axes|Bounds|LinearOperator)",
    ),
    # Names that docstrings of the package refer to but that are not public.
    (r"py:(class|data|obj)", r"(ShapeError|DEFAULT_METHODS|DEFAULT_OPTIONS)"),
]

# ---- autodoc, autosummary, napoleon ----

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections carry the types
autodoc_inherit_docstrings = True
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_use_param = False
napoleon_use_keyword = False
napoleon_preprocess_types = False

# ---- MyST and notebooks ----

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# The notebooks are stored unexecuted and the test suite runs them
# (tests/test_notebooks.py); the docs render their code without outputs, so
# the build stays fast and never depends on a long computation.
nb_execution_mode = "off"

# ---- doctest builder (the user guide's {doctest} blocks) ----

# Only explicit doctest/testcode directives in the guide are tested by
# ``-b doctest``; docstring examples run in tests/test_doctests.py instead.
doctest_test_doctest_blocks = ""
doctest_global_setup = """
import matplotlib
matplotlib.use("Agg")
import numpy as np
np.set_printoptions(precision=6, suppress=True)
"""

# ---- HTML ----

html_theme = "alabaster"
html_title = f"adjoint-toolkit {release}"
html_static_path = []
html_theme_options = {
    "description": "Discrete adjoint-state gradients for networks, optimal "
    "control and parameter estimation",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}


# ---------------------------------------------------------------------------
# Pages generated from the code
# ---------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it already holds exactly that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _heading(title: str, char: str = "=") -> str:
    return f"{title}\n{char * len(title)}\n"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].rstrip(".") if doc else ""


# Titles of the API sections, by implementation module.  A module not listed
# here (a new one) still gets a section, titled by its docstring's first line.
API_SECTIONS = {
    "adjoint._homogeneous": "Sequences",
    "adjoint._sequence": "Sequences",
    "adjoint._objective": "Sequences",
    "adjoint._systems": "ODE systems and integrators",
    "adjoint._integrators._ode_sequence": "ODE systems and integrators",
    "adjoint._integrators._tableaus": "ODE systems and integrators",
    "adjoint._integrators._adaptive": "ODE systems and integrators",
    "adjoint._integrators._observations": "ODE systems and integrators",
    "adjoint._integrators._continuous": "Continuous adjoint",
    "adjoint._integrators._convergence": "Continuous adjoint",
    "adjoint._estimation": "Parameter estimation",
    "adjoint._control": "Optimal control",
    "adjoint._constraints": "Optimal control",
    "adjoint._check": "Gradient checks",
    "adjoint._hessian": "Second order: Hessian-vector products",
    "adjoint._checkpoint": "Checkpointing",
    "adjoint._chain": "Networks",
    "adjoint._layers": "Networks",
    "adjoint._losses": "Networks",
    "adjoint._train": "Networks",
    "adjoint._compare": "Comparing optimisers",
    "adjoint._errors": "Errors",
    "adjoint.kernels": "Writing kernels",
}


def api_sections() -> dict[str, list[str]]:
    """``{section title: [public names]}`` for every name in ``adjoint.__all__``."""
    sections: dict[str, list[str]] = {}
    for name in adjoint.__all__:
        obj = getattr(adjoint, name)
        module = obj.__name__ if name == "kernels" else getattr(obj, "__module__", "")
        title = API_SECTIONS.get(module)
        if title is None:
            doc = sys.modules[module].__doc__ if module in sys.modules else None
            title = _first_line(doc) or "Other"
        sections.setdefault(title, []).append(name)
    order = list(dict.fromkeys(API_SECTIONS.values()))
    return dict(
        sorted(
            sections.items(),
            key=lambda kv: (
                order.index(kv[0]) if kv[0] in order else len(order),
                kv[0],
            ),
        )
    )


def write_api_page() -> None:
    lines = [
        ".. This file is generated by docs/conf.py from adjoint.__all__; do not edit.",
        "",
        _heading("The adjoint package"),
        ".. automodule:: adjoint",
        "   :no-members:",
        "",
        "Every public name of the package, grouped by topic.  The list is",
        "generated from ``adjoint.__all__``, so a name added there appears",
        "here on the next build.",
        "",
    ]
    for title, names in api_sections().items():
        lines += [_heading(title, "-")]
        objects = sorted((n for n in names if n not in MODULE_NAMES), key=str.lower)
        if objects:
            lines += [
                ".. currentmodule:: adjoint",
                "",
                ".. autosummary::",
                "   :toctree: generated",
                "   :nosignatures:",
                "",
            ]
            lines += [f"   {name}" for name in objects] + [""]
        modules = [n for n in names if n in MODULE_NAMES]
        if modules:
            lines += _module_summary(modules)
    others = public_submodules()
    if others:
        lines += [
            _heading("Other public modules", "-"),
            "Modules of the package that are public but whose names are",
            "not re-exported by ``adjoint.__all__``.",
            "",
        ]
        lines += _module_summary(others)
    _write(DOCS / "api" / "adjoint.rst", "\n".join(lines))


# Names in adjoint.__all__ that are modules (documented with all their members).
MODULE_NAMES = {"kernels"}


def _module_summary(modules: list[str]) -> list[str]:
    return (
        [
            ".. currentmodule:: adjoint",
            "",
            ".. autosummary::",
            "   :toctree: generated",
            "   :nosignatures:",
            "   :template: autosummary/public-module.rst",
            "",
        ]
        + [f"   {name}" for name in modules]
        + [""]
    )


def public_submodules() -> list[str]:
    """Public submodules of adjoint (no leading underscore) not in ``__all__``."""
    import pkgutil

    names = []
    for info in pkgutil.iter_modules(adjoint.__path__):
        if not info.name.startswith("_") and info.name not in adjoint.__all__:
            names.append(info.name)
    return sorted(names)


# The surface every problem module offers (problems/__init__.py).
PROBLEM_SURFACE = ("build", "initial_guess", "solve", "plot", "check", "compare")


def problem_module_names(module) -> list[str]:
    """The problem surface first, then the module's other public functions and
    classes (those its docstrings may refer to)."""
    import inspect

    surface = [
        name for name in PROBLEM_SURFACE if callable(getattr(module, name, None))
    ]
    others = sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and name not in surface
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module.__name__
    )
    return surface + others


def problem_modules() -> dict[str, str]:
    return dict(sorted(problems.registry().items()))


def write_problem_api_page() -> None:
    lines = [
        ".. This file is generated by docs/conf.py from problems.registry(); "
        "do not edit.",
        "",
        _heading("The problems package"),
        ".. automodule:: problems",
        "   :members: registry, resolve, get, UnknownProblemError",
        "",
    ]
    for name, module_path in problem_modules().items():
        module = importlib.import_module(module_path)
        lines += [
            _heading(f"{module_path} ({name})", "-"),
            f".. module:: {module_path}",
            "",
            f"Problem page: :doc:`/gallery/{name}`.  The problem surface, then "
            "the module's other public functions and classes:",
            "",
            f".. currentmodule:: {module_path}",
            "",
            ".. autosummary::",
            "   :toctree: generated",
            "   :nosignatures:",
            "",
        ]
        lines += [f"   {name}" for name in problem_module_names(module)]
        lines.append("")
    _write(DOCS / "api" / "problems.rst", "\n".join(lines))


def _gallery_record(name: str) -> dict:
    """What make_figures.py measured for a problem (empty if never run)."""
    index = DOCS / "images" / "gallery" / "index.json"
    if not index.exists():
        return {}
    return json.loads(index.read_text(encoding="utf-8")).get(name, {})


def write_gallery() -> None:
    gallery = DOCS / "gallery"
    names = problem_modules()
    wanted = {f"{name}.rst" for name in names} | {"index.rst"}
    for old in gallery.glob("*.rst"):
        if old.name not in wanted:
            old.unlink()

    index = [
        ".. This file is generated by docs/conf.py from problems.registry(); "
        "do not edit.",
        "",
        _heading("Problem gallery"),
        "Every problem in ``problems.registry()`` has a page here, made when",
        "the docs are built: its model, data and citations (the module",
        "docstring), the command that runs it, what that command printed and",
        "drew when ``docs/make_figures.py`` last ran, and the reference value",
        "the tests compare against.  ``adjoint list`` prints the same list.",
        "A problem whose solve takes longer than 60 s is not drawn (its page",
        "says so); the solve times on each page were measured on the",
        "project's 2-core machine, warm (a first run also compiles).",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 20 80",
        "",
        "   * - problem",
        "     - description",
    ]
    for name, module_path in names.items():
        module = importlib.import_module(module_path)
        description = str(getattr(module, "DESCRIPTION", "")).strip()
        index += [f"   * - :doc:`{name}`", f"     - {description}"]
    index += ["", ".. toctree::", "   :hidden:", ""]
    index += [f"   {name}" for name in names]
    _write(gallery / "index.rst", "\n".join(index) + "\n")

    for name, module_path in names.items():
        _write(gallery / f"{name}.rst", _gallery_page(name, module_path))


def _gallery_page(name: str, module_path: str) -> str:
    module = importlib.import_module(module_path)
    record = _gallery_record(name)
    description = str(getattr(module, "DESCRIPTION", "")).strip()
    package, short = module_path.rsplit(".", 1)
    lines = [
        ".. This file is generated by docs/conf.py from problems.registry(); "
        "do not edit.",
        "",
        _heading(name),
        f"*{description}*" if description else "",
        "",
        _heading("Run it", "-"),
        ".. code-block:: bash",
        "",
        f"   adjoint solve {name} --out results/",
        f"   adjoint check {name}",
    ]
    if callable(getattr(module, "compare", None)):
        lines.append(f"   adjoint compare {name}")
    lines += [
        "",
        "From Python (see :doc:`/guide/solve`):",
        "",
        ".. code-block:: python",
        "",
        f"   from {package} import {short}",
        "",
        f"   problem = {short}.build()",
        f"   result = {short}.solve(problem)",
        f'   {short}.plot(problem, result).savefig("{name}.png")',
        "",
    ]

    # Figure and output from docs/make_figures.py
    lines.append(_heading("Result", "-"))
    figure = DOCS / "images" / "gallery" / f"{name}.png"
    if record.get("status") == "drawn" and figure.exists():
        lines += [
            f".. figure:: /images/gallery/{name}.png",
            f"   :alt: figure of the {name} problem",
            "   :width: 100%",
            "",
            f"   Drawn by ``adjoint solve {name}`` (through ``docs/make_figures.py``).",
            "",
            f"What ``adjoint solve {name}`` printed (machine: "
            f"{record.get('machine', 'not recorded')}):",
            "",
            ".. code-block:: text",
            "",
        ]
        lines += [f"   {line}" for line in record.get("stdout", "").splitlines()]
        lines.append("")
    elif record.get("status") == "skipped":
        lines += [
            f"No figure: {record.get('reason', 'skipped')}.  Run "
            f"``adjoint solve {name}`` to draw it.",
            "",
        ]
    else:
        lines += [
            "No figure yet: ``docs/make_figures.py`` has not been run since this "
            f"problem was registered.  Run ``adjoint solve {name}`` to draw it.",
            "",
        ]

    # Reference value
    lines.append(_heading("Reference value", "-"))
    reference = getattr(module, "REFERENCE", None)
    if reference is None:
        lines += ["The module defines no ``REFERENCE``.", ""]
    else:
        lines += [
            f"``{module_path}.REFERENCE``, the values the tests compare against "
            "(the module description below says where they come from):",
            "",
            ".. code-block:: python",
            "",
        ]
        text = pprint.pformat(reference, width=76, sort_dicts=False)
        lines += [f"   {line}" for line in text.splitlines()]
        lines.append("")

    # Model, data and citation: the module docstring
    lines += [
        _heading("Model, data and citation", "-"),
        f".. automodule:: {module_path}",
        "   :no-members:",
        "   :no-index:",
        "",
        f"API: :mod:`{module_path}` in :doc:`/api/problems`.",
        "",
    ]
    return "\n".join(lines)


def copy_notebooks() -> None:
    """Copy notebooks/*.ipynb into docs/notebooks/ (rendered, not executed)."""
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    sources = {path.name: path for path in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    for old in target.glob("*.ipynb"):
        if old.name not in sources:
            old.unlink()
    for name, source in sources.items():
        dest = target / name
        if not dest.exists() or dest.read_bytes() != source.read_bytes():
            shutil.copyfile(source, dest)


write_api_page()
write_problem_api_page()
write_gallery()
copy_notebooks()


# ---------------------------------------------------------------------------
# Docstrings written as plain text: make their notation safe for reST
# ---------------------------------------------------------------------------

# Docstrings use ``|x|`` for absolute values and norms, and cite ``[1]_``
# footnotes defined in the module docstring, which is not on the same page.
# Both are errors to docutils; these rewrite them into the text the author
# meant, for every docstring, so that writing maths in a docstring never
# breaks the build.
_LITERAL = re.compile(r"``.*?``|`[^`]*`")
_BARS = re.compile(r"(?<![\\\w|])\|(?=[^\s|])([^|\n]*?[^\s|\\])\|(?![\w|])")
_FOOTNOTE_REF = re.compile(r"\[(\d+|#\w*|\*)\]_")
_FOOTNOTE_DEF = re.compile(r"^\s*\.\. \[(\d+|#\w*|\*)\]", re.MULTILINE)


def _escape_bars(line: str) -> str:
    stripped = line.strip()
    if stripped == "|" or stripped.startswith(("| ", "+-", "+=")):
        return line  # line blocks and grid tables
    pieces, last = [], 0
    for match in _LITERAL.finditer(line):
        pieces.append(_BARS.sub(r"\\|\1\\|", line[last : match.start()]))
        pieces.append(match.group(0))
        last = match.end()
    pieces.append(_BARS.sub(r"\\|\1\\|", line[last:]))
    return "".join(pieces)


def clean_docstring(app, what, name, obj, options, lines) -> None:
    text = "\n".join(lines)
    defined = set(_FOOTNOTE_DEF.findall(text))
    text = _FOOTNOTE_REF.sub(
        lambda m: m.group(0) if m.group(1) in defined else f"[{m.group(1)}]", text
    )
    lines[:] = [_escape_bars(line) for line in text.split("\n")]


# "Footnote [1] is not referenced": a class docstring may list the references
# its module docstring cites.  Harmless, so not a build error.
# "More than one target found": an attribute name (``N``) documented by
# several classes, met in a type field.  Ambiguous, not broken.
suppress_warnings = ["ref.footnote", "ref.python"]


def resolve_short_names(app, env, node, contnode):
    """Resolve an unqualified class name (``Kernel``) when exactly one
    documented object of the package ends with it."""
    if node.get("refdomain") != "py" or node.get("reftype") not in ("class", "obj"):
        return None
    target = node.get("reftarget", "")
    if not target or "." in target:
        return None
    domain = env.get_domain("py")
    matches = [
        full
        for full in domain.objects
        if full.rsplit(".", 1)[-1] == target
        and full.startswith(("adjoint.", "problems."))
    ]
    if len(matches) != 1:
        return None
    from sphinx.util.nodes import make_refnode

    full = matches[0]
    entry = domain.objects[full]
    return make_refnode(
        app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, full
    )


def setup(app):
    app.connect("autodoc-process-docstring", clean_docstring)
    app.connect("missing-reference", resolve_short_names)
