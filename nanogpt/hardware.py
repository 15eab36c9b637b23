"""The peak FLOP/s that MFU is measured against.

On a known GPU, the vendor's dense (no sparsity) tensor-core peak at the run's precision. On a
CPU there is no such table worth trusting, so the peak is measured: the best matmul throughput
of this process at the run's precision over a few short multiplies (so CPU MFU reads as "share
of what this CPU's matmul can do", not of a datasheet figure). `system.peak_tflops` overrides both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time

import attrs
import torch

from nanogpt import scaling

# Dense TFLOP/s by (name fragment, precision); first match wins, so specific names come first.
# bf16/fp16 are tensor-core figures; float32 assumes TF32 tensor cores where the GPU has them.
GPU_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5}),
    ("H100 PCIe", {"bfloat16": 756.0, "float16": 756.0, "float32": 378.0}),
    ("H100", {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5}),  # SXM
    ("H800", {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5}),
    ("GH200", {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5}),
    ("B200", {"bfloat16": 2250.0, "float16": 2250.0, "float32": 1100.0}),
    ("A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0}),
    ("A800", {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0}),
    ("A10G", {"bfloat16": 70.0, "float16": 70.0, "float32": 35.0}),
    ("A10", {"bfloat16": 125.0, "float16": 125.0, "float32": 62.5}),
    ("L40S", {"bfloat16": 362.0, "float16": 362.0, "float32": 183.0}),
    ("L4", {"bfloat16": 121.0, "float16": 121.0, "float32": 60.0}),
    ("RTX 4090", {"bfloat16": 165.2, "float16": 165.2, "float32": 82.6}),
    ("RTX 3090", {"bfloat16": 71.0, "float16": 71.0, "float32": 35.6}),
    ("V100", {"float16": 125.0, "float32": 15.7}),
    ("T4", {"float16": 65.0, "float32": 8.1}),
]


@attrs.frozen
class Peak:
    """Peak FLOP/s of one device at one precision, and where the figure comes from."""

    tflops: float | None
    source: str
    """"spec" (system.peak_tflops), "table:<name>", "measured" (CPU), or "unknown"."""

    @property
    def flops(self) -> float | None:
        return None if self.tflops is None else self.tflops * 1e12


def peak_for(device: torch.device, dtype: torch.dtype, override_tflops: float | None = None) -> Peak:
    if override_tflops is not None:
        return Peak(override_tflops, "spec")
    precision = {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "float32")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, peaks in GPU_PEAK_TFLOPS:
            if fragment in name and precision in peaks:
                return Peak(peaks[precision], f"table:{fragment}")
        return Peak(None, "unknown")
    if device.type == "cpu":
        return Peak(measured_cpu_tflops(torch.bfloat16 if dtype == torch.bfloat16 else torch.float32), "measured")
    return Peak(None, "unknown")


@functools.cache
def measured_cpu_tflops(dtype: torch.dtype = torch.float32, n: int = 512, repeats: int = 25) -> float:
    """Best `dtype` matmul throughput of this process's threads, in TFLOP/s (well under 0.1 s).

    The best of many short multiplies, so that a moment of load from another process does not
    lower the peak (and raise the MFU) as much as an average would.
    """
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm up the kernels and caches
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


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

    The FLOPs are the model's `flops_per_token()`, nanoGPT's formula (see `scaling.mfu_flops_per_token`).
    """
    if peak.flops is None or tokens_per_sec <= 0:
        return None
    return scaling.mfu(flops_per_token, tokens_per_sec, peak.flops * world_size)
