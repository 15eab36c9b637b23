"""How steady the CPU peak behind CPU MFU is: the measurement the runner uses against the one it replaced.

    python benchmarks/cpu_peak.py                      # 8 alternating measurements of each, float32, bf16, fp16
    python benchmarks/cpu_peak.py --repeats 12 --dtype bfloat16

`before`: the best of 25 multiplies of 512 x 512 matrices, once per process (about 40 ms), in
bfloat16 for a bf16 run and in float32 for any other (a float16 run was measured in float32). `now`: `nanogpt.training.hardware.measure_cpu_tflops` at the precision asked
(the fastest of the 1024 x 1024 multiplies of a second, after 0.2 s of warm-up). They run
alternately, so load from other processes hits both alike; the spread (max / min over the repeats)
is how far apart two runs' MFU could be on the same machine from the peak alone. The runner then
caches its figure per CPU model, torch version, threads and precision, so runs on one machine share
one peak whatever the load when they start.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine_line  # noqa: E402

from nanogpt.training.hardware import measure_cpu_tflops  # noqa: E402


def before(dtype: torch.dtype, n: int = 512, repeats: int = 25) -> float:
    """The replaced measurement, as it was."""
    dtype = torch.bfloat16 if dtype == torch.bfloat16 else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], action="append")
    args = p.parse_args()
    print(f"CPU peak: {machine_line()}")
    for name in args.dtype or ["float32", "bfloat16", "float16"]:
        dtype = getattr(torch, name)
        old, new = [], []
        for _ in range(args.repeats):
            old.append(before(dtype))
            new.append(measure_cpu_tflops(dtype)[0])
        was = "bfloat16" if dtype == torch.bfloat16 else "float32"
        print(f"  {name}: before ({was}, 25 x 512^2) {min(old):.3f}-{max(old):.3f} TFLOP/s, spread {max(old) / min(old):.2f}x; "
              f"now ({name}) {min(new):.3f}-{max(new):.3f} TFLOP/s, spread {max(new) / min(new):.2f}x  (load {load_average():.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
