"""Run the examples in the docstrings of every module behind ``adjoint.__all__``.

The modules are found from the public names themselves (each object's
``__module__``; a public module such as ``adjoint.kernels`` counts as itself),
so a module that starts exporting a name is tested from then on.
"""

import doctest
import importlib
import inspect

import matplotlib
import pytest

import adjoint

matplotlib.use("Agg")

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def public_modules() -> list[str]:
    """Names of the modules that define the objects in ``adjoint.__all__``."""
    modules = set()
    for name in adjoint.__all__:
        obj = getattr(adjoint, name)
        if inspect.ismodule(obj):
            modules.add(obj.__name__)
        else:
            modules.add(getattr(obj, "__module__", None) or "adjoint")
    return sorted(m for m in modules if m == "adjoint" or m.startswith("adjoint."))


MODULES = public_modules()


def test_every_public_name_has_a_module():
    assert "adjoint._objective" in MODULES
    assert "adjoint.kernels" in MODULES


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=OPTIONFLAGS, verbose=False, report=True
    )
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} docstring examples in "
        f"{module_name} failed; run `python -m doctest -v` on it, or see the "
        "report above."
    )
