"""Wall time of a 4-member sweep of quickstart-sized runs with `--jobs 2` against `--jobs 1`.

The members are the quickstart (experiments/shakespeare_char.toml: 4 x 128, block 64, batch 12,
bf16 where the CPU has it, TensorBoard on) x optimizer.lr (2) x seed (2), so all four cost the
same; `--iters` of its 2000 iterations each (evaluations every 250, as the quickstart). The dataset
is prepared first, untimed. With `--jobs 1` the member has every core, as a lone run; with
`--jobs 2` each member gets half the cores (OMP threads and CPU affinity, as `sweep` gives them).
Sweeps of both kinds alternate, each kind first in turn, so drifting load hits both alike; each
sweep is a fresh process, timed from start to exit, with its own output folder.

    python benchmarks/sweep_jobs.py [--iters 500] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, load_average, median

TARGET = 0.75
SPEC = "experiments/shakespeare_char.toml"


def sweep(out: Path, data: Path, iters: int, jobs: int) -> tuple[float, float]:
    """(wall seconds, mean tokens/s of the members) of one sweep."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [
        sys.executable, "-m", "nanogpt", "sweep", SPEC, "optimizer.lr=2e-3,1e-3", "seed=1,2", f"train.max_iters={iters}",
        f"data.data_dir={data}", f"logging.out_dir={out}", "--jobs", str(jobs),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    speeds = [json.loads(m.read_text())["metrics"]["tokens_per_sec"] for m in out.glob("*/*/manifest.json")]
    return seconds, sum(speeds) / len(speeds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=500, help="iterations per member (the quickstart runs 2000)")
    p.add_argument("--rounds", type=int, default=2, help="pairs of sweeps, each kind first in turn")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="sweep_jobs-"))
    try:
        data = tmp / "data"
        subprocess.run([sys.executable, "-m", "nanogpt", "prepare", SPEC, f"data.data_dir={data}"], cwd=REPO, check=True,
                       capture_output=True)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"4 members x {args.iters} iterations of {SPEC}; {cores} cores; load average {load_average():.2f}")
        results: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.rounds):
            for jobs in ((1, 2) if r % 2 == 0 else (2, 1)):
                load = load_average()
                seconds, speed = sweep(tmp / f"runs-{r}-{jobs}", data, args.iters, jobs)
                results[jobs].append(seconds)
                print(f"  round {r}: --jobs {jobs}: {seconds:6.1f} s   members' mean {speed:,.0f} tok/s   load {load:.2f} -> {load_average():.2f}")
        ratio = median(results[2]) / median(results[1])
        print(f"--jobs 2 / --jobs 1 wall time: {median(results[2]):.1f} / {median(results[1]):.1f} s = {ratio:.2f}x "
              f"(target <= {TARGET}x): {'met' if ratio <= TARGET else 'NOT met'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
