"""Command-line entry point: builds the parser from `deepclust.commands.*` and dispatches.

Each sub-command lives in its own module with `register(subparsers)` and `run(args)`;
this file only wires them together and turns `DeepclustError` into a clean message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Before torch is imported (libgomp reads it once, when torch loads it): OpenMP threads that
# wait sleep instead of spinning. Beside another job on a busy 2-core machine the small CNN's
# step ran 4-5x faster this way (150-170 vs 30-45 img/s, 2 threads); set OMP_WAIT_POLICY=ACTIVE
# to spin again. Library users set it themselves, before `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deepclust import __version__  # noqa: E402
from deepclust.errors import DeepclustError  # noqa: E402

# Order here is the order in `deepclust --help`.
COMMANDS = ["demo", "cluster", "train", "evaluate", "zeroshot", "attention", "curate"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepclust",
        description="Deep image clustering: find meaningful groups in unlabeled images.",
        epilog="Example: deepclust cluster photos/ --k 10 --out runs/photos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"deepclust {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"deepclust.commands.{name}")
        except ModuleNotFoundError as exc:
            # A command whose module is not there yet is simply not offered.
            if exc.name == f"deepclust.commands.{name}":
                continue
            raise
        module.register(sub)
    for subparser in sub.choices.values():  # -v also after the sub-command
        subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                               help="more log output (deepclust's debug messages)")
    return parser


def main(argv: list[str] | None = None) -> int:
    # File and class names that are not valid UTF-8 reach the terminal escaped, never as a
    # UnicodeEncodeError at the end of a run.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # -v: deepclust's own debug lines, not those of matplotlib, PIL, urllib3, ... (a flood).
    logging.getLogger("deepclust").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # faiss announces which SIMD build it loaded at INFO level on every import; that is
    # noise for users, so only its warnings get through (matplotlib's font scan likewise).
    for noisy in ("faiss", "matplotlib", "PIL", "urllib3", "filelock", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except DeepclustError as exc:
        print(f"deepclust: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepclust: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
