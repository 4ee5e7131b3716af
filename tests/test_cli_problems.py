"""The ``adjoint`` command on the included fitting problems, through the real
entry point (a subprocess), with good and bad data files (issue 4)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import adjoint

GOOD = "year,hare,lynx\n1900,30.0,4.0\n1901,47.2,6.1\n1902,70.2,9.8\n1903,77.4,35.2\n"

BAD_TABLES = {
    # case: (table text, phrase the one-line error must contain)
    "missing value": ("year,hare,lynx\n1900,30.0,4.0\n1901,,6.1\n", "line 3"),
    "text in a number": ("year,hare,lynx\n1900,30.0,4.0\n1901,many,6.1\n", "hare"),
    "unsorted times": ("year,hare,lynx\n1901,30.0,4.0\n1900,47.2,6.1\n", "year"),
    "duplicate times": ("year,hare,lynx\n1900,30.0,4.0\n1900,47.2,6.1\n", "year"),
    "negative count": ("year,hare,lynx\n1900,30.0,4.0\n1901,-47.2,6.1\n", "positive"),
    "wrong columns": ("year,rabbits,lynx\n1900,30.0,4.0\n1901,47.2,6.1\n", "hare"),
}


def _run(*args, cwd):
    env = dict(os.environ, MPLBACKEND="Agg")
    root = str(Path(adjoint.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "adjoint.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_data_file_gives_one_line_and_status_2(case, tmp_path):
    text, phrase = BAD_TABLES[case]
    path = tmp_path / "pelts.csv"
    path.write_text(text)
    proc = _run(
        "solve",
        "lotka-volterra",
        "--data",
        str(path),
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith("adjoint: error:")
    assert phrase in lines[-1]


def test_solve_lotka_volterra_writes_figure_and_json(tmp_path):
    proc = _run("solve", "lotka-volterra", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "alpha" in proc.stdout and "±" in proc.stdout
    result = json.loads((tmp_path / "lotka-volterra.json").read_text())
    assert (tmp_path / "lotka-volterra.png").stat().st_size > 10_000
    assert 0.4 < result["values"]["alpha"] < 0.7
    assert result["gradient_evaluations"] > 0


def test_solve_on_users_own_good_file(tmp_path):
    path = tmp_path / "pelts.csv"
    path.write_text(GOOD)
    proc = _run(
        "solve",
        "lotka-volterra",
        "--data",
        str(path),
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lotka-volterra.json").exists()


@pytest.mark.parametrize("name", ["lotka-volterra", "sir-influenza"])
def test_check_command_passes(name, tmp_path):
    proc = _run("check", name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "complex step" in proc.stdout
    assert "Taylor" in proc.stdout


def test_list_shows_fitting_problems(tmp_path):
    proc = _run("list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lotka-volterra" in proc.stdout and "sir-influenza" in proc.stdout


def test_unknown_method_lists_the_choices(tmp_path):
    proc = _run(
        "solve",
        "lotka-volterra",
        "--method",
        "bogus",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "L-BFGS-B" in proc.stderr.splitlines()[-1]


def test_derivative_free_method_runs(tmp_path):
    proc = _run(
        "solve",
        "sir-influenza",
        "--method",
        "Nelder-Mead",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "sir-influenza.json").read_text())
    assert abs(result["values"]["beta"] - 1.669) < 0.01


def test_unwritable_out_fails_before_solving(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _run("solve", "lotka-volterra", "--out", str(blocker / "sub"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "`--out`" in proc.stderr and "Traceback" not in proc.stderr


def test_directory_as_data_is_named(tmp_path):
    proc = _run("solve", "lotka-volterra", "--data", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "is a directory" in proc.stderr


def test_too_few_observations_are_refused(tmp_path):
    path = tmp_path / "pelts.csv"
    path.write_text("year,hare,lynx\n1900,30.0,4.0\n1901,47.2,6.1\n")
    proc = _run(
        "solve",
        "lotka-volterra",
        "--data",
        str(path),
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "cannot determine 6 unknowns" in proc.stderr
