"""Runs many CLI cases in ONE subprocess (a Python start costs seconds): for each case the
`deepclust` entry point is called in-process with its stderr captured, and the outcome is
recorded: the return code, or "traceback" when an exception escaped the CLI. A native
crash kills this process, which the test sees as a signal death.

    python driver.py cases.json results.json
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import time
import traceback


def _patch(name: str) -> contextlib.AbstractContextManager:
    """Named faults a case can ask for."""
    if name == "disk_full":
        from unittest import mock

        usage = shutil.disk_usage("/")
        return mock.patch("shutil.disk_usage", return_value=type(usage)(usage.total, usage.total, 1024))
    return contextlib.nullcontext()


def run_case(case: dict) -> dict:
    from deepclust.cli import main

    for handler in list(logging.getLogger().handlers):  # main() re-binds logging to this case's stderr
        logging.getLogger().removeHandler(handler)
    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    try:
        if case.get("cwd"):
            os.chdir(case["cwd"])
            sys.path.insert(0, "")  # as `python -m` in that folder would
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), _patch(case.get("patch", "")):
            code: int | str = main(list(case["argv"]))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    except BaseException:  # noqa: BLE001 - exactly what the suite looks for
        code = "traceback"
        err.write(traceback.format_exc())
    finally:
        os.chdir(cwd)
        if case.get("cwd"):
            sys.path.remove("")
    return {"code": code, "stderr": err.getvalue().encode("utf-8", "backslashreplace").decode(),
            "stdout": out.getvalue().encode("utf-8", "backslashreplace").decode()}


if __name__ == "__main__":
    import torch

    from deepclust.report import plots

    torch.set_num_threads(1)
    # The report's 2-D map is t-SNE here even where umap-learn is installed: its numba JIT
    # compile costs ~30 s per fresh process, and t-SNE is the method whose native code
    # crashed on identical images (the guard runs before either).
    plots.resolve_embedding_method = lambda method: "tsne"
    cases = json.loads(open(sys.argv[1]).read())
    results = {}
    for name, case in cases.items():
        start = time.perf_counter()
        results[name] = run_case(case)
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
        with open(sys.argv[2], "w") as fh:  # after each case: a crash still leaves the others
            json.dump(results, fh)
