"""Launch a test script in two gloo processes with torchrun (the one way the tests do it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent


def run_two_processes(script: str, path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Write ``script`` (dedented) to ``path`` and run it as ``torchrun --standalone
    --nproc_per_node=2 path *args`` with tests/ on PYTHONPATH and one OpenMP thread per process."""
    path.write_text(textwrap.dedent(script))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(path), *args], env=env, capture_output=True, text=True, timeout=timeout)
