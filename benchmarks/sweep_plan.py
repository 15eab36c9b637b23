"""Wall time of expanding and validating a 1,000-member sweep (`nanogpt sweep ... --dry-run`).

The grid is the quickstart spec (experiments/shakespeare_char.toml) x optimizer.lr (10 values) x
model.n_layer (10) x seed (10). `--dry-run` reads the spec once, expands the grid, resolves and
validates every member (each its own spec: overrides, cross-field checks, hashes) and starts
nothing; it never imports torch. It runs as a user starts it (a fresh process: interpreter start-up
and imports count), interleaved with `python -c "import torch"` to show what importing torch
alone would cost; the median of each is reported against the issue's bar of 2 s.

    python benchmarks/sweep_plan.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import REPO, load_average, median, spread

BAR_SECONDS = 2.0
AXES = [
    "optimizer.lr=" + ",".join(f"{i}e-3" for i in range(1, 11)),
    "model.n_layer=" + ",".join(str(n) for n in range(1, 11)),
    "seed=" + ",".join(str(s) for s in range(10)),
]


def wall(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return seconds, done.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    sweep = [sys.executable, "-m", "nanogpt", "sweep", "experiments/shakespeare_char.toml", *AXES, "--dry-run"]
    torch = [sys.executable, "-c", "import torch"]
    _, out = wall(sweep)  # untimed: warm the page cache and .pyc files
    print(out.splitlines()[-1])
    wall(torch)
    load_start = load_average()
    times: dict[str, list[float]] = {"sweep --dry-run (1,000 members)": [], "import torch": []}
    for _ in range(args.repeats):
        times["sweep --dry-run (1,000 members)"].append(wall(sweep)[0])
        times["import torch"].append(wall(torch)[0])
    print(f"load average {load_start:.2f} at the start, {load_average():.2f} at the end; {args.repeats} runs of each")
    for key, values in times.items():
        print(f"  {key:<32} median {median(values):.2f} s ({spread(values)})")
    verdict = "under" if median(times["sweep --dry-run (1,000 members)"]) < BAR_SECONDS else "OVER"
    print(f"expanding and validating 1,000 members: {verdict} the {BAR_SECONDS:.0f} s bar")
    return 0


if __name__ == "__main__":
    sys.exit(main())
