"""Helpers of the robustness suite: run the CLI in a subprocess and judge how it ended.

Every case asserts the outcome a user would see: exit 0 with the outputs written, or
exit 2 with a one-line ``deepclust: error:`` message; never a signal death (negative
return code) and never a Python traceback on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """``python -m deepclust ARGS`` with one thread; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "deepclust", *args], cwd=cwd, env=child_env(**env),
                          capture_output=True, text=True, errors="replace", timeout=timeout)


def assert_clean(proc: subprocess.CompletedProcess, *, code: int, message: str | None = None) -> None:
    """Exit `code` (0 or 2), no signal, no traceback; with code 2 a `deepclust: error:` line."""
    detail = f"rc={proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}\n{detail}"
    assert "Traceback (most recent call last)" not in proc.stderr, detail
    assert proc.returncode == code, detail
    if code == 2:
        assert "deepclust: error:" in proc.stderr, detail
    if message is not None:
        assert message in proc.stderr + proc.stdout, detail
