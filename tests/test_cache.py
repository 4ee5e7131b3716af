"""A second process must not compile the sweeps again (DESIGN.md section 4).

Two fresh interpreters build the same Lorenz-63 sequence from
``tests/systems.py`` and run a forward, adjoint and tangent sweep, with
``NUMBA_CACHE_DIR`` pointing at an empty temporary directory (so the first
run is really cold) and ``NUMBA_DEBUG_CACHE=1``, which makes Numba print one
line per cache file it writes or reads::

    [cache] data saved to '<dir>/_sweeps_kernels.forward_sweep-33.py311.1.nbc'
    [cache] data loaded from '<dir>/_sweeps_kernels.forward_sweep-33.py311.1.nbc'

The first run must save the compiled sweeps and kernels, the second must load
every one of them and save nothing; the second run's sweep time is checked
as well, loosely, as a symptom users would notice.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent

# Wall-clock seconds a warm process may spend building the sequence and
# running its three sweeps; the cold run compiles for several seconds, a warm
# one loads from disk in tens of milliseconds, so 1 s leaves room for a slow
# CI machine without letting a recompile through.
WARM_SWEEP_SECONDS = 1.0
# Seconds either subprocess may take before the test gives up.
SUBPROCESS_TIMEOUT = 600

SCRIPT = """
import time
t0 = time.perf_counter()
import numpy as np
import systems
from adjoint import Objective
t1 = time.perf_counter()
N = 50
data = systems.lorenz_data(N, 0.01, np.random.default_rng(0))
seq = systems.lorenz_sequence(N, data)
obj = Objective(seq, systems.LORENZ_X0, np.zeros((N, 3)), systems.LORENZ_P,
                wrt="p")
J, g = obj.value_and_grad(obj.z0)
obj.jvp(obj.z0, np.ones(3))
t2 = time.perf_counter()
print(f"TIMES import={t1 - t0:.6f} sweep={t2 - t1:.6f}")
print("RESULT", repr(J), *(repr(v) for v in g))
"""

# Compiled functions the script needs: the three sweeps and the kernels of
# the Lorenz-63 system.
EXPECTED = [
    "_sweeps_kernels.forward_sweep",
    "_sweeps_kernels.adjoint_sweep",
    "_sweeps_kernels.tangent_sweep",
    "systems.lorenz_step",
    "systems.lorenz_step_vjp",
    "systems.lorenz_step_jvp",
    "systems.lorenz_running_cost_vjp",
    "systems.lorenz_terminal_cost_vjp",
]

_CACHE_LINE = re.compile(r"\[cache\] data (saved to|loaded from) '([^']+)'")


def _run(cache_dir):
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    env["NUMBA_DEBUG_CACHE"] = "1"
    env.pop("NUMBA_DISABLE_JIT", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_DIR), str(TESTS_DIR)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    saved, loaded = set(), set()
    for verb, path in _CACHE_LINE.findall(output):
        # '<dir>/systems.lorenz_step-192.py311.1.nbc' -> 'systems.lorenz_step'
        name = Path(path).name.rsplit("-", 1)[0]
        (saved if verb.startswith("saved") else loaded).add(name)
    times = dict(
        item.split("=") for item in re.search(r"TIMES (.*)", output)[1].split()
    )
    result = re.search(r"RESULT (.*)", output)[1]
    return saved, loaded, {k: float(v) for k, v in times.items()}, result


def test_second_process_loads_sweeps_from_cache(tmp_path):
    cache_dir = tmp_path / "numba_cache"
    cache_dir.mkdir()

    saved1, _, times1, result1 = _run(cache_dir)
    missing = [name for name in EXPECTED if name not in saved1]
    assert not missing, f"the cold run did not compile and save {missing}"

    saved2, loaded2, times2, result2 = _run(cache_dir)
    assert not saved2, f"the warm run compiled again: {sorted(saved2)}"
    missing = [name for name in EXPECTED if name not in loaded2]
    assert not missing, f"the warm run did not load {missing} from the cache"

    assert result2 == result1
    assert times2["sweep"] < WARM_SWEEP_SECONDS, (times1, times2)
    assert times2["sweep"] < times1["sweep"], (times1, times2)
