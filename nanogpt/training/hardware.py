"""The peak FLOP/s that MFU is measured against.

On a GPU whose exact product name is in the table below, the vendor's dense (no sparsity)
tensor-core peak at the run's precision; on any other GPU there is no MFU (a near name is a
different part: an H200 NVL is not an H200 SXM). On a CPU there is no datasheet worth trusting, so
the peak is measured: the best matmul throughput of this process's threads at the run's precision
(so CPU MFU reads as "share of what this CPU's matmul can do"), measured once per CPU model, torch
version, thread count and precision and kept in a cache file, so that runs on one machine are
measured against one figure. `system.peak_tflops` overrides both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from nanogpt.config import sizes
from nanogpt.runs.environment import cpu_model

# Dense TFLOP/s by the exact name torch.cuda.get_device_name reports, and precision. bf16/fp16
# are tensor-core rates with float32 accumulation (what autocast's matmuls use); float32 assumes
# TF32 tensor cores where the GPU has them. A precision left out has no tensor-core rate.
_HOPPER_SXM = {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7}
_HOPPER_PCIE = {"bfloat16": 756.0, "float16": 756.0, "float32": 378.0}
_HOPPER_NVL = {"bfloat16": 835.5, "float16": 835.5, "float32": 417.5}
_A100 = {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0}
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "NVIDIA H200": _HOPPER_SXM,
    "NVIDIA H200 NVL": _HOPPER_NVL,
    "NVIDIA H100 80GB HBM3": _HOPPER_SXM,
    "NVIDIA H100 PCIe": _HOPPER_PCIE,
    "NVIDIA H100 NVL": _HOPPER_NVL,
    "NVIDIA H800": _HOPPER_SXM,
    "NVIDIA H800 PCIe": _HOPPER_PCIE,
    "NVIDIA GH200 480GB": _HOPPER_SXM,
    "NVIDIA B200": {"bfloat16": 2250.0, "float16": 2250.0, "float32": 1100.0},
    "NVIDIA A100-SXM4-40GB": _A100,
    "NVIDIA A100-SXM4-80GB": _A100,
    "NVIDIA A100-PCIE-40GB": _A100,
    "NVIDIA A100 80GB PCIe": _A100,
    "NVIDIA A10": {"bfloat16": 125.0, "float16": 125.0, "float32": 62.5},
    "NVIDIA L40S": {"bfloat16": 362.05, "float16": 362.05, "float32": 183.0},
    "NVIDIA L40": {"bfloat16": 181.05, "float16": 181.05, "float32": 90.5},
    "NVIDIA L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 60.0},
    # GeForce parts: the float32-accumulate rates, half of the FP16-accumulate ones on the box
    "NVIDIA GeForce RTX 4090": {"bfloat16": 165.2, "float16": 165.2, "float32": 82.6},
    "NVIDIA GeForce RTX 3090": {"bfloat16": 71.0, "float16": 71.0, "float32": 35.6},
    "Tesla V100-SXM2-16GB": {"float16": 125.0, "float32": 15.7},
    "Tesla V100-SXM2-32GB": {"float16": 125.0, "float32": 15.7},
    "Tesla V100-PCIE-16GB": {"float16": 112.0, "float32": 14.0},
    "Tesla V100-PCIE-32GB": {"float16": 112.0, "float32": 14.0},
    "Tesla T4": {"float16": 65.0, "float32": 8.1},
}

PRECISIONS = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


@attrs.frozen
class Peak:
    """Peak FLOP/s of one device at one precision, and where the figure comes from."""

    tflops: float | None
    source: str
    """"spec" (system.peak_tflops), "table:<exact device name>", "measured" (CPU), or "unknown: <why>"."""
    measurement: dict[str, Any] | None = None
    """For a measured peak, how it was measured (precision, threads, matrix size, time, load) and
    whether it was read from the cache file."""

    @property
    def flops(self) -> float | None:
        return None if self.tflops is None else self.tflops * 1e12


def peak_for(device: torch.device, dtype: torch.dtype, override_tflops: float | None = None) -> Peak:
    if override_tflops is not None:
        return Peak(override_tflops, "spec")
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device), dtype)
    if device.type == "cpu":
        return cpu_peak(dtype)
    return Peak(None, f"unknown: no peak known for {device.type} devices (set system.peak_tflops)")


def gpu_peak(name: str, dtype: torch.dtype) -> Peak:
    """The table's entry for exactly this device name, or no peak (and so no MFU)."""
    precision = PRECISIONS.get(dtype, "float32")
    peaks = GPU_PEAK_TFLOPS.get(name)
    if peaks is None:
        return Peak(None, f"unknown: {name!r} is not in the peak table (set system.peak_tflops)")
    if precision not in peaks:
        return Peak(None, f"unknown: {name!r} has no {precision} tensor-core rate in the peak table")
    return Peak(peaks[precision], f"table:{name}")


# ------------------------------------------------------------------------------ CPU peak


def cpu_peak_cache() -> Path:
    """The file measured CPU peaks are kept in: $XDG_CACHE_HOME/nanogpt (default ~/.cache/nanogpt)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "nanogpt" / "cpu_peak.json"


CPU_PEAK_METHOD = 2
"""Version of `measure_cpu_tflops`, part of the cache key: a changed measurement measures anew."""


@functools.cache
def cpu_peak(dtype: torch.dtype) -> Peak:
    """This CPU's matmul peak at `dtype` with this process's threads: from the cache, or measured now."""
    precision = PRECISIONS.get(dtype, "float32")
    threads = torch.get_num_threads()
    key = f"{cpu_model()} | torch {torch.__version__} | {threads} threads | {precision} | method {CPU_PEAK_METHOD}"
    path = cpu_peak_cache()
    entries = _read_cache(path)
    entry = entries.get(key)
    valid = isinstance(entry, dict) and isinstance(entry.get("tflops"), (int, float)) and entry["tflops"] > 0
    if valid and not _measure_again(entry.get("how") or {}):
        return Peak(float(entry["tflops"]), "measured", {**entry.get("how", {}), "cache": str(path), "from_cache": True})
    tflops, how = measure_cpu_tflops(dtype)
    how = {"cpu": cpu_model(), "torch": torch.__version__, "threads": threads, **how}
    if valid and entry["tflops"] > tflops:  # load only ever slows a multiply: the higher figure stands
        tflops, how = float(entry["tflops"]), {**entry["how"], "remeasured_lower": round(tflops, 4)}
    entries[key] = {"tflops": tflops, "how": how}
    try:
        from nanogpt.fileio import atomic_write_text

        atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
        cache = str(path)
    except OSError:  # a read-only home: measured again next time
        cache = None
    return Peak(tflops, "measured", {**how, "cache": cache, "from_cache": False})


def _measure_again(how: dict[str, Any]) -> bool:
    """Whether a cached peak was measured while other work crowded the CPU and it is quieter now.

    A peak measured under load is too low (and MFU too high); it is measured again, once the load
    average is below the one it was measured at, and the higher figure kept.
    """
    then = how.get("load_average")
    if not isinstance(then, (int, float)) or not hasattr(os, "getloadavg"):
        return False
    return then > (os.cpu_count() or 1) and os.getloadavg()[0] < then


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or torn by hand: measure again
        return {}
    return entries if isinstance(entries, dict) else {}


def measure_cpu_tflops(dtype: torch.dtype, *, n: int = 1024, seconds: float = 1.0) -> tuple[float, dict[str, Any]]:
    """Best `dtype` matmul throughput of this process's threads, in TFLOP/s, and how it was measured.

    n x n multiplies (2 GFLOP each at n = 1024: a few ms, long enough for every thread to be busy,
    short enough that many fit in a second), after 0.2 s of warm-up, timed one by one for
    `seconds`; the fastest counts. Load from other processes only ever slows a multiply down, so
    the fastest of a hundred or more is the figure least disturbed by it (benchmarks/cpu_peak.py
    measures how steady it is against the 25 small float32 multiplies it replaced).
    """
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    warm_until = time.perf_counter() + 0.2
    while time.perf_counter() < warm_until:
        torch.mm(a, b)
    best, count, start = float("inf"), 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
        count += 1
    tflops = 2 * n**3 / best / 1e12
    how = {
        "dtype": PRECISIONS.get(dtype, "float32"),
        "method": f"fastest of {count} {n}x{n} matmuls over {seconds:g} s, after 0.2 s of warm-up",
        "seconds": round(time.perf_counter() - start, 3),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return tflops, how


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX), not by emulation."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPUID checks
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory_in_process() -> bool:
    """Have glibc's malloc keep the memory a training step frees, for the next step; True if it was set.

    By default glibc hands big freed blocks back to the kernel (munmap, heap trimming), so every
    step page-faults its activations in afresh: 4-5x the page faults, about 8% of a CPU step
    (benchmarks/README.md). Blocks up to 32 MiB (glibc's ceiling) now come from the heap and stay
    there; the process keeps its peak memory instead of returning it between steps. Left alone
    when the user chose an allocator (LD_PRELOAD) or glibc's settings (MALLOC_*, GLIBC_TUNABLES).
    """
    chosen = os.environ.get("LD_PRELOAD") or "malloc" in os.environ.get("GLIBC_TUNABLES", "")
    if chosen or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows): nothing to tune
        return False
    # the mmap threshold first: setting either one freezes glibc's own adaptive threshold
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def mfu(flops_per_token: float, tokens_per_sec: float, peak: Peak, world_size: int) -> float | None:
    """Model FLOPs utilisation over the peak of all devices of the job; None when the peak is unknown.

    The FLOPs are the model's `flops_per_token()`, nanoGPT's formula (see `sizes.mfu_flops_per_token`).
    """
    if peak.flops is None or tokens_per_sec <= 0:
        return None
    return sizes.mfu(flops_per_token, tokens_per_sec, peak.flops * world_size)
