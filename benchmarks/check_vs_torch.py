"""Wall time of `nanogpt check` on the GPT-2 spec, next to `python -c "import torch"`.

Both are fresh processes started the way a user starts them, so interpreter start-up and every
import count. The two are interleaved, one of each per round, so drifting machine load hits both
alike; the median of each is reported. The issue's bar is a `check` median under 0.3 s on this
machine; `import torch` is there to show what `check` would cost if it imported torch.

    python benchmarks/check_vs_torch.py [--repeats 15] [--spec experiments/gpt2_owt.toml]

To see where `check`'s own time goes: python -X importtime -m nanogpt check experiments/gpt2_owt.toml
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BAR_SECONDS = 0.3


def wall_seconds(command: list[str]) -> float:
    """Seconds from starting `command` to its exit; a failure stops the benchmark (it would time nothing)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15, help="timed runs of each (the median counts)")
    p.add_argument("--spec", default="experiments/gpt2_owt.toml", help="the spec to check")
    args = p.parse_args(argv)

    check = [sys.executable, "-m", "nanogpt", "check", args.spec]
    torch = [sys.executable, "-c", "import torch"]
    wall_seconds(check), wall_seconds(torch)  # untimed: warm the page cache and .pyc files
    check_times, torch_times = [], []
    for _ in range(args.repeats):
        check_times.append(wall_seconds(check))
        torch_times.append(wall_seconds(torch))

    check_median = statistics.median(check_times)
    torch_median = statistics.median(torch_times)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"runs: {args.repeats} of each, interleaved; {os.cpu_count()} cores, load average {load:.2f}")
    print(f"nanogpt check {args.spec}: median {check_median:.3f} s (min {min(check_times):.3f}, max {max(check_times):.3f})")
    print(f"python -c 'import torch':  median {torch_median:.3f} s (min {min(torch_times):.3f}, max {max(torch_times):.3f})")
    print(f"check / import torch: {check_median / torch_median:.3f}")
    verdict = "under" if check_median < BAR_SECONDS else "OVER"
    print(f"check median is {verdict} the {BAR_SECONDS} s bar")
    return 0 if check_median < BAR_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
