"""deepclust.cli: OpenMP's wait policy is set before torch is loaded."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import os, sys, deepclust.cli; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"


def _probe(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_cli_makes_waiting_openmp_threads_sleep_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _probe(env) == "PASSIVE False"          # set, and torch not loaded yet (so it takes effect)
    assert _probe({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE False"   # the user's choice is kept
