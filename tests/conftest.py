"""Shared test setup: the repository's location, Hypothesis without deadlines, a registry guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Timing belongs in benchmarks/: a slow first example (imports, a cold disk) must not fail a test.
settings.register_profile("nanogpt", deadline=None)
settings.load_profile("nanogpt")


@pytest.fixture(scope="session", autouse=True)
def cpu_peak_cache(tmp_path_factory) -> Path:
    """Measured CPU peaks go to a cache of the session's own, never the user's ~/.cache (child processes
    inherit it): the first run at each precision and thread count measures, the others read it."""
    cache_home = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache_home))
        yield cache_home / "nanogpt" / "cpu_peak.json"


@pytest.fixture(scope="session", autouse=True)
def same_threads_as_the_runs_tests_start():
    """torch in this process computes at the thread count tests.tinyrun gives the runs it starts (OMP_NUM_THREADS,
    1 unless set): a reference trained here and a resume in a subprocess then do the same float arithmetic, as
    exact resume is promised on the same software stack (MKL's sums at 2 threads and at 1 differ in the last bits)."""
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2 x 32 GPT-2 (GPT-2's vocabulary, 64 positions) saved as the hub serves
    them (safetensors + config.json): the local stand-in for OpenAI's weights."""
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64))
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    hf.save_pretrained(path)
    return path


@pytest.fixture
def repo() -> Path:
    """The repository root (experiments/, schema/, ...)."""
    return REPO


@pytest.fixture
def restore_registries():
    """Undo every kind a test registers (plugins register for the whole process)."""
    from nanogpt.registry import REGISTRIES

    saved = {r.table: (dict(r._specs), dict(r._builders)) for r in REGISTRIES.values()}
    yield
    for r in REGISTRIES.values():
        specs, builders = saved[r.table]
        r._specs.clear()
        r._specs.update(specs)
        r._builders.clear()
        r._builders.update(builders)
