"""The peak FLOP/s behind MFU: exact GPU names only, and a CPU peak measured at the run's precision and cached."""

from __future__ import annotations

import json

import pytest
import torch

from nanogpt.training import hardware
from nanogpt.training.hardware import GPU_PEAK_TFLOPS, Peak, mfu, peak_for

CUDA0 = torch.device("cuda", 0)


def peak_on(monkeypatch, name: str, dtype: torch.dtype = torch.bfloat16) -> Peak:
    """The peak `peak_for` gives a CUDA device that reports `name`."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    return peak_for(CUDA0, dtype)


@pytest.mark.parametrize(
    ("name", "bf16"),
    [
        ("NVIDIA H200", 989.4),
        ("NVIDIA H200 NVL", 835.5),  # not the SXM part's 989
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.5),  # not the SXM part's
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40", 181.05),  # not the L4's, nor the L40S's
        ("NVIDIA L40S", 362.05),
    ],
)
def test_gpu_peak_is_the_entry_of_the_exact_name(monkeypatch, name, bf16):
    """A GPU's peak is the table entry of exactly its name, and the peak says which entry it is."""
    assert peak_on(monkeypatch, name) == Peak(bf16, f"table:{name}")


@pytest.mark.parametrize("name", ["NVIDIA H200 SXM 141GB (new)", "NVIDIA H20", "NVIDIA L4 Ti", "NVIDIA GeForce RTX 4090 D", "Quadro RTX 8000"])
def test_an_unknown_gpu_gets_no_mfu_rather_than_a_near_names(monkeypatch, name):
    """A name not in the table (however near one that is) has no peak, so MFU is left out, not made up."""
    peak = peak_on(monkeypatch, name)
    assert peak.tflops is None and peak.source.startswith("unknown:") and repr(name) in peak.source
    assert mfu(1e9, 1e5, peak, world_size=1) is None


def test_a_precision_without_a_tensor_core_rate_has_no_peak(monkeypatch):
    """A V100 has no bfloat16 tensor cores: no bf16 peak, rather than its float16 one."""
    assert peak_on(monkeypatch, "Tesla V100-SXM2-16GB", torch.bfloat16).tflops is None
    assert peak_on(monkeypatch, "Tesla V100-SXM2-16GB", torch.float16) == Peak(125.0, "table:Tesla V100-SXM2-16GB")


def test_table_rates_are_dense_and_ordered():
    """Every entry gives float32 at most its half-precision rate: the figures are tensor-core rates of one kind."""
    for name, peaks in GPU_PEAK_TFLOPS.items():
        half = peaks.get("bfloat16", peaks.get("float16"))
        assert half is not None and peaks["float32"] <= half, name


# --------------------------------------------------------------------------------- the CPU


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache file, no peak remembered by this process, and a quiet machine (load average 0)."""
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    hardware.cpu_peak.cache_clear()
    yield tmp_path / "nanogpt" / "cpu_peak.json"
    hardware.cpu_peak.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.slow
def test_cpu_peak_is_measured_at_the_runs_precision(cache, dtype):
    """A float16 run is measured against float16 matmuls, not float32 ones; the peak says how it was measured."""
    peak = peak_for(torch.device("cpu"), dtype)
    assert peak.source == "measured" and peak.tflops > 0
    how = peak.measurement
    assert how["dtype"] == str(dtype).removeprefix("torch.") and how["threads"] == torch.get_num_threads()
    assert how["cpu"] == hardware.cpu_model() and how["torch"] == torch.__version__
    assert "after 0.2 s of warm-up" in how["method"] and how["seconds"] >= 1.0 and how["from_cache"] is False


def test_cpu_peak_is_cached_per_cpu_torch_threads_and_precision(cache, monkeypatch):
    """Measured once, a peak is read back by later processes; another thread count or precision is measured anew."""
    first = peak_for(torch.device("cpu"), torch.float32)
    entries = json.loads(cache.read_text())
    key = f"{hardware.cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | float32 | method 2"
    assert list(entries) == [key] and entries[key]["tflops"] == first.tflops

    hardware.cpu_peak.cache_clear()  # as a new process would start
    measured = []

    def measure(dtype, **kw):
        measured.append(dtype)
        return 0.125, {"dtype": str(dtype).removeprefix("torch."), "method": "stand-in"}

    monkeypatch.setattr(hardware, "measure_cpu_tflops", measure)
    again = peak_for(torch.device("cpu"), torch.float32)
    assert again.tflops == first.tflops and again.measurement["from_cache"] is True and measured == []
    assert again.measurement["cache"] == str(cache)

    assert peak_for(torch.device("cpu"), torch.bfloat16).tflops == 0.125 and measured == [torch.bfloat16]
    threads = torch.get_num_threads()
    hardware.cpu_peak.cache_clear()
    torch.set_num_threads(threads + 1)
    try:
        assert peak_for(torch.device("cpu"), torch.float32).tflops == 0.125
    finally:
        torch.set_num_threads(threads)
    assert measured == [torch.bfloat16, torch.float32] and len(json.loads(cache.read_text())) == 3


def test_a_damaged_cache_is_measured_again(cache, monkeypatch):
    """A cache file that is not JSON, or an entry without a positive figure, is replaced by a new measurement."""
    monkeypatch.setattr(hardware, "measure_cpu_tflops", lambda dtype, **kw: (0.5, {"method": "stand-in"}))
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert peak_for(torch.device("cpu"), torch.float32).tflops == 0.5
    key = next(iter(json.loads(cache.read_text())))
    cache.write_text(json.dumps({key: {"tflops": -1}}))
    hardware.cpu_peak.cache_clear()
    assert peak_for(torch.device("cpu"), torch.float32).tflops == 0.5


def test_an_unwritable_cache_still_gives_a_peak(tmp_path, monkeypatch):
    """A cache directory that cannot be written (a read-only home) costs a measurement per process, not the run."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # nanogpt/ cannot be made under a file
    monkeypatch.setattr(hardware, "measure_cpu_tflops", lambda dtype, **kw: (0.5, {"method": "stand-in"}))
    hardware.cpu_peak.cache_clear()
    try:
        peak = peak_for(torch.device("cpu"), torch.float32)
    finally:
        hardware.cpu_peak.cache_clear()
    assert peak.tflops == 0.5 and peak.measurement["cache"] is None


def test_a_peak_measured_under_load_is_measured_again_when_quieter(cache, monkeypatch):
    """A cached peak taken while the load average exceeded the CPU count is measured again once the load is
    lower, keeping the higher figure (load only slows a multiply); one taken on a quiet machine is kept."""
    import os

    figures = iter([0.1, 0.3, 0.2])
    monkeypatch.setattr(hardware, "measure_cpu_tflops", lambda dtype, **kw: (next(figures), {"load_average": load[0]}))
    cores = os.cpu_count() or 1
    load = [cores + 2.0]
    monkeypatch.setattr(os, "getloadavg", lambda: (load[0], load[0], load[0]))
    cpu = torch.device("cpu")
    assert peak_for(cpu, torch.float32).tflops == 0.1  # measured under load, cached
    hardware.cpu_peak.cache_clear()
    assert peak_for(cpu, torch.float32).tflops == 0.1  # still as busy: the cache stands
    load[0] = 0.5
    hardware.cpu_peak.cache_clear()
    assert peak_for(cpu, torch.float32).tflops == 0.3  # quieter: measured again, higher
    hardware.cpu_peak.cache_clear()
    assert peak_for(cpu, torch.float32).tflops == 0.3  # measured quiet: kept, never measured again
    assert next(figures) == 0.2
