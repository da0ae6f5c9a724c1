"""Training throughput on a busy machine: idle, beside an equal-priority two-thread torch job,
and beside the same job niced.

Three runs of the same ``deepclust train`` command (default threads, the CLI's OpenMP
settings), each on its own run folder:

  idle    nothing else started by this script
  equal   beside a process doing two-thread float32 matrix products, same priority
  niced   beside the same process at ``nice -n 15``

Per epoch the training images/s of log.csv (the steps only; per-epoch k-means and
evaluation are in ``seconds``), and each epoch's share of the idle run's mean. The issue's
acceptance: every epoch >= 40 % of idle beside the equal-priority job, >= 70 % beside the
niced one. The load average is recorded before every phase (run it alone on the machine).

    python benchmarks/bench_busy.py --out benchmarks/results/busy.md
    python benchmarks/bench_busy.py --method dino --epochs 3 --n 5000
    OMP_WAIT_POLICY=ACTIVE python benchmarks/bench_busy.py ...     # compare: spinning OpenMP threads
Smoke (seconds):
    python benchmarks/bench_busy.py --n 300 --epochs 2 --work /tmp/bb
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_defaults import make_digits28  # noqa: E402
from machine import machine_line, write_report  # noqa: E402

COMPETITOR = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(1024, 1024)\n"
              "while True:\n    a @ a\n")


def train_run(args: argparse.Namespace, data: Path, out: Path) -> list[float]:
    if out.exists():
        subprocess.call(["rm", "-rf", str(out)])
    cmd = [sys.executable, "-m", "deepclust", "train", "--method", args.method, "--data", str(data), "--out",
           str(out), "--epochs", str(args.epochs), "--k", "10", "--quiet", "--no-report", "--set", "knn_every=0",
           *sum((["--set", s] for s in args.set), [])]
    with open(out.with_suffix(".log"), "w") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True)
    with open(out / "log.csv") as fh:
        return [float(r["images_per_s"]) for r in csv.DictReader(fh)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="deepcluster")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n", type=int, default=5000, help="images (28 px digits, bench_defaults.make_digits28)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to deepclust train")
    p.add_argument("--work", default="/tmp/bench_busy")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"digits28_{args.n}.npz"
    if not data.is_file():
        images, labels = make_digits28(args.n)
        np.savez_compressed(data, images=images, labels=labels)
    phases: dict[str, dict] = {}
    for phase, nice in (("idle", None), ("equal", 0), ("niced", 15)):
        competitor = None
        if nice is not None:
            competitor = subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", COMPETITOR])
            time.sleep(2)   # let it start its thread pool
        load = os.getloadavg()
        try:
            rates = train_run(args, data, work / f"run_{phase}")
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
        phases[phase] = {"images_per_s": rates, "load_before": load}
        print(phase, [round(r) for r in rates], f"load {load[0]:.2f}", flush=True)
    idle = float(np.mean(phases["idle"]["images_per_s"]))
    lines = ["# Training beside another job", "", f"Command: `python {' '.join(sys.argv)}`  ",
             f"Date: {datetime.datetime.now().isoformat('T', 'seconds')}  ", f"Machine: {machine_line()}  ",
             f"OMP_WAIT_POLICY: {os.environ.get('OMP_WAIT_POLICY', '(unset: the CLI sets PASSIVE)')}  ",
             f"Training: deepclust train --method {args.method} on {args.n} 28 px digits, {args.epochs} epochs; "
             "competitor: a two-thread torch matmul loop", "",
             "| phase | load before | images/s per epoch | min % of idle mean | target |",
             "| --- | ---: | --- | ---: | --- |"]
    targets = {"idle": "", "equal": ">= 40 %", "niced": ">= 70 %"}
    for phase, r in phases.items():
        rates = r["images_per_s"]
        share = 100 * min(rates) / idle
        lines.append(f"| {phase} | {r['load_before'][0]:.2f} | {', '.join(f'{x:.0f}' for x in rates)} | "
                     f"{share:.0f} % | {targets[phase]} |")
    write_report("\n".join(lines) + "\n", phases, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
