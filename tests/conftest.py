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


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """`tests.tinyrun.tiny_spec` as it is (40 iterations, evaluations and checkpoints every 10, pruned to the last
    two and the best) trained once for the whole session, in this process, with what it printed: the run the
    tests that read a completed run share, and the one every resumed run of that spec must reproduce bit for bit.

    Read only: a test that changes the run dir, its dataset or its folder copies what it changes first
    (shutil.copytree to tmp_path). At the end of the session every file is compared with what the run left,
    so a test that wrote into it fails the session by name."""
    import contextlib
    import io

    from nanogpt.cli import main
    from tests.tinyrun import ReferenceRun, assert_unchanged, only_run_dir, tiny_spec, tree_digest

    tmp = tmp_path_factory.mktemp("reference")
    spec = tiny_spec(tmp)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["run", str(spec)]) == 0
    run = ReferenceRun(tmp=tmp, spec=spec, dir=only_run_dir(tmp / "runs"), stdout=printed.getvalue())
    before = tree_digest(tmp)
    yield run
    assert_unchanged(tmp, before)


@pytest.fixture(scope="session")
def constant_lr_reference(tmp_path_factory):
    """The tiny spec on the faults plugin's `sleep` schedule (a constant lr), run to its 40 iterations without a
    stop in a subprocess: what the killed, signalled and restarted runs of that schedule must reproduce. It
    sleeps 0 s a step here; how long a step sleeps changes no number, only when a test can stop it.
    Read only, checked at the end of the session, as `reference_run`."""
    from tests.tinyrun import ReferenceRun, assert_unchanged, nanogpt, only_run_dir, tiny_spec, tree_digest

    tmp = tmp_path_factory.mktemp("constant-lr-reference")
    spec = tiny_spec(tmp, extra='plugins = ["faults"]', schedule={"kind": "sleep", "seconds": 0.0})
    printed = nanogpt("run", str(spec), check=True).stdout
    run = ReferenceRun(tmp=tmp, spec=spec, dir=only_run_dir(tmp / "runs"), stdout=printed)
    before = tree_digest(tmp)
    yield run
    assert_unchanged(tmp, before)


@pytest.fixture(scope="session")
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
