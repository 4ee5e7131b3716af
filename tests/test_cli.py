"""The ``adjoint`` command, run on a throwaway problem registered for the test.

The fake problem fits ``y = a`` and ``y = b t`` to a tiny table by least
squares with SciPy, so the command's plumbing (progress, table, files,
errors) is tested without the numerical core.
"""

import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.optimize import minimize

import adjoint.cli
import problems
from adjoint._data import load_csv_table
from adjoint.cli import main

FAKE_NAME = "fake-problem"
FAKE_MODULE = "_adjoint_test_fake_problem"
TABLE = "# made up\nt,y\n1,2.0\n2,4.1\n3,5.9\n"


def _fake_module():
    module = types.ModuleType(FAKE_MODULE)
    module.DESCRIPTION = "A made-up fit for testing the command line."
    module.REFERENCE = {"b": 2.0}
    module.calls = {}

    def build(data=None):
        if data is None:
            return {"t": np.array([1.0, 2.0, 3.0]), "y": np.array([2.0, 4.0, 6.0])}
        table = load_csv_table(data, ["y"], time_column="t", positive_columns=["y"])
        return {"t": table["t"], "y": table["y"]}

    def initial_guess(problem):
        return np.zeros(2)

    def solve(problem, method="BFGS", progress=None):
        module.calls["solve"] = {"method": method}
        t, y = problem["t"], problem["y"]

        def cost(z):
            r = z[0] + z[1] * t - y
            return 0.5 * r @ r, np.array([r.sum(), r @ t])

        result = minimize(
            cost, initial_guess(problem), jac=True, method=method, callback=progress
        )
        result.table = [("a", result.x[0], 0.01), ("b", result.x[1], float("nan"))]
        result.to_json = lambda: {"x": result.x, "a": "not overwritten"}
        return result

    def plot(problem, result):
        figure, ax = plt.subplots()
        ax.plot(problem["t"], problem["y"], "o")
        return figure

    def check(problem):
        return _Report(module.check_passes)

    module.check_passes = True
    module.build = build
    module.initial_guess = initial_guess
    module.solve = solve
    module.plot = plot
    module.check = check
    return module


class _Report:
    def __init__(self, passed):
        self.passed = passed

    def __str__(self):
        return "gradient check: " + ("passed" if self.passed else "FAILED")


@pytest.fixture
def fake(monkeypatch):
    """Register the fake problem as the only problem."""
    module = _fake_module()
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
    monkeypatch.setattr(problems, "_REGISTRY", {FAKE_NAME: FAKE_MODULE})
    return module


def _one_error_line(err):
    """Return the one line left on a terminal, without progress-bar residue."""
    assert "Traceback" not in err, err
    lines = [line.split("\r")[-1].rstrip() for line in err.split("\n")]
    lines = [line for line in lines if line]
    assert len(lines) == 1 and lines[0].startswith("adjoint: error: "), err
    return lines[0]


# ---- list ----


def test_list_prints_name_and_description(fake, capsys):
    assert main(["list"]) == 0

    out = capsys.readouterr().out
    assert out == f"{FAKE_NAME}  A made-up fit for testing the command line.\n"


def test_list_reports_a_module_that_cannot_be_imported(fake, monkeypatch, capsys):
    monkeypatch.setattr(
        problems,
        "_REGISTRY",
        {FAKE_NAME: FAKE_MODULE, "broken": "_adjoint_test_no_such_module"},
    )

    assert main(["list"]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("broken") and "cannot be imported" in lines[0]
    assert lines[1].startswith(FAKE_NAME)


# ---- solve ----


def test_solve_prints_fit_and_writes_figure_and_json(fake, tmp_path, capsys):
    out_dir = tmp_path / "results"

    assert main(["solve", FAKE_NAME, "--out", str(out_dir)]) == 0

    out, err = capsys.readouterr()
    # Captured stderr is no terminal, so the progress bar stays off (logs and
    # CI get no carriage-return noise); test_progress_bar_on_a_terminal shows it.
    assert f"solve {FAKE_NAME}" not in err
    assert "parameter" in out and "std. error" in out
    a_line = next(line for line in out.splitlines() if line.strip().startswith("a "))
    assert "± 0.01" in a_line
    b_line = next(line for line in out.splitlines() if line.strip().startswith("b "))
    assert "± n/a" in b_line
    assert "final cost J = " in out and "gradient evaluations" in out

    png_path = out_dir / f"{FAKE_NAME}.png"
    json_path = out_dir / f"{FAKE_NAME}.json"
    assert f"wrote {png_path}" in out and f"wrote {json_path}" in out
    assert png_path.read_bytes().startswith(b"\x89PNG")
    assert plt.get_fignums() == []  # the CLI closed the problem's figure

    record = json.loads(json_path.read_text())
    assert record["problem"] == FAKE_NAME
    assert record["values"]["b"] == pytest.approx(2.0)
    assert record["errors"] == {"a": 0.01, "b": None}  # NaN is written as null
    assert record["cost"] == pytest.approx(0.0, abs=1e-10)
    assert record["iterations"] >= 1
    assert record["gradient_evaluations"] >= 1
    assert record["wall_time_s"] > 0
    assert record["x"] == pytest.approx([0.0, 2.0], abs=1e-6)  # from to_json()
    assert record["a"] == "not overwritten"


def test_solve_passes_method_and_accepts_underscored_name(fake, tmp_path, capsys):
    name = FAKE_NAME.replace("-", "_").upper()

    assert main(["solve", name, "--method", "L-BFGS-B", "--out", str(tmp_path)]) == 0

    assert fake.calls["solve"] == {"method": "L-BFGS-B"}
    assert (tmp_path / f"{FAKE_NAME}.json").exists()  # the registered name
    assert "(L-BFGS-B)" in capsys.readouterr().out


def test_solve_with_data_file(fake, tmp_path, capsys):
    data = tmp_path / "obs.csv"
    data.write_text(TABLE)

    code = main(["solve", FAKE_NAME, "--data", str(data), "--out", str(tmp_path)])

    assert code == 0
    record = json.loads((tmp_path / f"{FAKE_NAME}.json").read_text())
    assert record["data"] == str(data)
    assert record["values"]["b"] == pytest.approx(1.95, abs=1e-6)


def test_solve_with_bad_data_exits_2_with_one_line(fake, tmp_path, capsys):
    data = tmp_path / "obs.csv"
    data.write_text(TABLE.replace("4.1", "-4.1"))

    code = main(["solve", FAKE_NAME, "--data", str(data), "--out", str(tmp_path)])

    assert code == 2
    err = _one_error_line(capsys.readouterr().err)
    assert "line 4, column 'y' holds -4.1" in err
    assert not (tmp_path / f"{FAKE_NAME}.json").exists()


def test_solve_with_absent_data_file_exits_2(fake, tmp_path, capsys):
    code = main(["solve", FAKE_NAME, "--data", str(tmp_path / "absent.csv")])

    assert code == 2
    assert "does not exist" in _one_error_line(capsys.readouterr().err)


def test_value_error_in_build_exits_2(fake, capsys):
    def build(data=None):
        raise ValueError("`rate` must be positive,\n got -1.")

    fake.build = build

    assert main(["check", FAKE_NAME]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert err == "adjoint: error: `rate` must be positive, got -1."


def test_any_class_named_data_error_exits_2(fake, tmp_path, capsys):
    class DataError(Exception):
        pass

    def solve(problem, method=None, progress=None):
        raise DataError("the problem's own data error")

    fake.solve = solve

    assert main(["solve", FAKE_NAME, "--out", str(tmp_path)]) == 2
    assert "the problem's own data error" in _one_error_line(capsys.readouterr().err)


def test_value_error_in_solve_is_a_bug_and_keeps_its_traceback(fake, tmp_path):
    def solve(problem, method=None, progress=None):
        raise ValueError("internal shape mismatch")

    fake.solve = solve

    with pytest.raises(ValueError, match="internal shape mismatch"):
        main(["solve", FAKE_NAME, "--out", str(tmp_path)])


# ---- check and compare ----


def test_check_prints_report(fake, capsys):
    assert main(["check", FAKE_NAME]) == 0
    assert capsys.readouterr().out == "gradient check: passed\n"


def test_check_exits_1_when_report_failed(fake, capsys):
    fake.check_passes = False

    assert main(["check", FAKE_NAME]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_compare_unsupported_exits_2(fake, capsys):
    assert main(["compare", FAKE_NAME]) == 2
    assert "does not support comparison" in _one_error_line(capsys.readouterr().err)


def test_compare_passes_methods(fake, capsys):
    seen = {}

    def compare(problem, methods=None):
        seen["methods"] = methods
        return "comparison table"

    fake.compare = compare

    assert main(["compare", FAKE_NAME, "--methods", "BFGS,CG", "Nelder-Mead"]) == 0
    assert seen["methods"] == ["BFGS", "CG", "Nelder-Mead"]
    assert capsys.readouterr().out == "comparison table\n"


# ---- names and usage ----


def test_unknown_name_in_process_exits_2_listing_names(fake, capsys):
    assert main(["solve", "no-such-problem"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert "'no-such-problem'" in err and FAKE_NAME in err


def test_unknown_name_through_the_real_entry_point_exits_2(tmp_path):
    # Run the module as a user would, importing the same `adjoint` and
    # `problems` as this test process, from a neutral directory.
    source_root = Path(adjoint.cli.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(source_root)}

    completed = subprocess.run(
        [sys.executable, "-m", "adjoint.cli", "solve", "no-such-problem"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )

    assert completed.returncode == 2, completed.stderr
    err = _one_error_line(completed.stderr)
    assert "No problem is called 'no-such-problem'" in err
    for name in problems.registry():
        assert name in err
    assert completed.stdout == ""


def test_usage_errors_and_help_return_codes(capsys):
    assert main([]) == 2
    assert main(["solve"]) == 2
    assert main(["--help"]) == 0
    assert "solve" in capsys.readouterr().out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal():
    stream = _Terminal()
    with adjoint.cli.TqdmProgress("solve demo", file=stream) as progress:
        progress(types.SimpleNamespace(fun=2.5))
        progress(types.SimpleNamespace(fun=1.25))
    text = stream.getvalue()
    assert "solve demo" in text and "2it" in text and "J=1.25" in text
