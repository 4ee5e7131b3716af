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
