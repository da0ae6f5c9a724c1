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


#: What a rank prints when torch/gloo aborts at interpreter exit, after its work is done (seen
#: rarely in clean-clone CI runs: SIGABRT during teardown).
TEARDOWN_ABORT = "terminate called without an active exception"


def check_two_processes(result: subprocess.CompletedProcess, *, both_done: bool) -> None:
    """Fail unless the torchrun job succeeded. A non-zero exit is tolerated only when both ranks
    finished (``both_done``: files each rank writes after its work and ``cleanup()``) and the
    error is gloo's teardown abort; any other failure, or a rank that did not finish, fails."""
    ok = result.returncode == 0 or (both_done and TEARDOWN_ABORT in result.stderr)
    assert ok, result.stderr[:3000] + "\n...\n" + result.stderr[-3000:]
