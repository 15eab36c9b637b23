"""Helpers shared by the benchmarks.

Benchmarks on a shared machine say how loaded it was while they ran: every figure they print
comes with the load average at the start and at the end.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/x.py` from anywhere runs against this checkout
    sys.path.insert(0, str(REPO))


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine_line() -> str:
    """One line naming the machine, torch and the load: the context every figure needs."""
    import torch

    from nanogpt.training.hardware import cpu_has_native_bf16
    from nanogpt.runs.environment import cpu_model

    return (
        f"{cpu_model()} ({platform.machine()}, bf16 {'native' if cpu_has_native_bf16() else 'emulated'}), "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load_average():.2f}"
    )


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no values to take the median of (every window was dropped?)")
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """"min-max" of a sample, for showing how noisy a median is."""
    return f"{min(values):.2f}-{max(values):.2f}"
