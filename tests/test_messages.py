"""Where a traceback used to be, a message: run dirs that cannot be made, a full disk, `schema -o` and
`bench --profile` to places that cannot take them, NaN weights, a --tokenizer-meta that is none, and
sizes no machine can hold. Each is a line that names what is wrong and where, and an exit status."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanogpt.cli import main
from tests.tinyrun import env_with_plugins, nanogpt, only_run_dir, tiny_spec


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    """A tiny spec whose dataset is prepared (the first run prepares it)."""
    return tiny_spec(tmp_path_factory.mktemp("messages"), train={"max_iters": 10, "eval_interval": 5})


# ------------------------------------------------------------------------------ the run dir


def test_out_dir_that_is_a_file_or_under_one(spec, tmp_path, capsys):
    """logging.out_dir a file, or a path through a file: exit 2 naming the field and the file, nothing made."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    for out_dir in (blocker, blocker / "runs"):
        status, _, err = run_main(capsys, "run", str(spec), f'logging.out_dir="{out_dir}"')
        assert status == 2 and "Traceback" not in err
        assert err.splitlines()[-1] == (
            f"error: logging.out_dir {str(out_dir)!r}: cannot create the directory {str(out_dir / 'tiny')!r}: "
            f"{str(blocker)!r} is a file, not a directory"
        )
    assert blocker.read_text() == "not a folder"


def test_out_dir_that_cannot_be_written(spec, tmp_path, capsys):
    """A logging.out_dir the process may not write into: exit 2 with the system's reason, not a PermissionError
    traceback (/sys refuses even root; a folder without write permission refuses anyone else)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        where, why = locked, "Permission denied"
    elif Path("/sys").is_dir():
        where, why = Path("/sys/nanogpt-test-runs"), "Operation not permitted"
    else:  # pragma: no cover - root without /sys
        pytest.skip("no directory here refuses root")
    status, _, err = run_main(capsys, "run", str(spec), f'logging.out_dir="{where}"')
    assert status == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"error: logging.out_dir {str(where)!r}: cannot create")
    assert err.splitlines()[-1].endswith(why)


def test_a_full_disk_mid_run_is_a_message(spec, tmp_path):
    """The disk filling up while a checkpoint is written (ENOSPC from the kernel: it is written to /dev/full)
    ends the run failed with the earlier checkpoint kept, and a message, not a traceback."""
    runs = tmp_path / "runs"
    done = nanogpt("run", str(spec), 'plugins=["disk_full"]', f'logging.out_dir="{runs}"',
                   env=env_with_plugins(DISK_FULL_AT_STEP="10"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "error: [Errno 28] No space left on device; free some space and run it again (files are written whole "
        "or not at all); the run is marked failed, its last good checkpoint kept"
    )
    run_dir = only_run_dir(runs)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "No space left on device" in manifest["error"]
    assert [c["step"] for c in manifest["checkpoints"]] == [5]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt-00000005.pt"]  # no torn file


# ------------------------------------------------------------------------- verbs' outputs


def test_schema_output_to_a_directory_or_a_missing_folder(tmp_path, capsys):
    """`schema -o DIR` and `schema -o missing/x.json`: exit 2 saying which, nothing written."""
    status, _, err = run_main(capsys, "schema", "-o", str(tmp_path))
    assert (status, err) == (2, f"error: schema -o {str(tmp_path)!r}: cannot write the schema there: it is a directory\n")
    target = tmp_path / "missing" / "schema.json"
    status, _, err = run_main(capsys, "schema", "-o", str(target))
    assert (status, err) == (
        2, f"error: schema -o {str(target)!r}: cannot write the schema there: its folder {str(target.parent)!r} does not exist\n"
    )


def test_bench_profile_into_a_file(spec, tmp_path, capsys):
    """`bench --profile FILE`: refused before any step runs (the trace is written only after them)."""
    blocker = tmp_path / "trace"
    blocker.write_text("")
    status, out, err = run_main(capsys, "bench", str(spec), "--steps", "2", "--profile", str(blocker))
    assert (status, out) == (2, "")
    assert err == f"error: --profile {str(blocker)!r}: cannot create the directory {str(blocker)!r}: {str(blocker)!r} is a file, not a directory\n"


# ----------------------------------------------------------------------------- sampling


def test_sampling_or_scoring_nan_weights(reference_run, tmp_path, capsys):
    """A checkpoint whose weights went NaN: `sample` (multinomial's traceback) and `perplexity` (a NaN figure)
    both refuse it, naming the checkpoint and the first bad tensor."""
    from nanogpt.checkpoints.catalog import checkpoint_for

    state = torch.load(checkpoint_for(reference_run.dir, "latest"), weights_only=True)
    state["model"]["transformer.h.1.mlp.c_fc.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(state, bad)
    text = tmp_path / "text.txt"
    text.write_text("KING:\nthe queen and the king.\n")
    expected = f"error: checkpoint {bad}: its weights are not finite (NaN or inf, first in transformer.h.1.mlp.c_fc.weight); nothing can be computed from them\n"
    for args in (["sample", str(bad), "--max-new-tokens", "5"], ["perplexity", str(bad), str(text)]):
        status, out, err = run_main(capsys, *args)
        assert (status, out, err) == (2, "", expected)


def test_tokenizer_meta_that_is_not_one(reference_run, tmp_path, capsys):
    """--tokenizer-meta naming a binary meta.json (nanoGPT's pickle renamed), its folder, or /dev/zero: exit 2
    naming it, not a UnicodeDecodeError traceback or a read that never ends."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "meta.json").write_bytes(b"\x80\x04\x95pickled")
    for given in (folder / "meta.json", folder):
        status, out, err = run_main(capsys, "sample", str(reference_run.dir), "--tokenizer-meta", str(given))
        assert (status, out) == (2, "")
        assert err.startswith(f"error: --tokenizer-meta {str(given)!r}: cannot read {str(folder / 'meta.json')!r} as JSON: 'utf-8' codec can't decode")
    status, _, err = run_main(capsys, "sample", str(reference_run.dir), "--tokenizer-meta", "/dev/zero")
    assert (status, err) == (2, "error: --tokenizer-meta '/dev/zero': '/dev/zero' is not a regular file\n")


# ----------------------------------------------------------------------------- sizes


def test_check_refuses_sizes_no_machine_holds(spec, capsys):
    """train.batch_size=99999999999 or model.n_embd=4000000000 passed `check`, then failed in the allocator:
    `check` now says they cannot fit."""
    status, _, err = run_main(capsys, "check", str(spec), "train.batch_size=99999999999")
    assert status == 2 and err == (
        f"{spec}: 1 problem\n  train.batch_size: 99999999999 sequences of 32 tokens make a micro-batch whose token ids "
        "alone are 46.6 TiB, more than any one machine holds (16.0 TiB) (override train.batch_size=99999999999)\n"
    )
    status, _, err = run_main(capsys, "check", str(spec), "model.n_embd=4000000000")
    assert status == 2 and err == (
        f"{spec}: 1 problem\n  model: has 3.84e+20 parameters: with their gradients and optimizer state, 5,329.1 EiB, "
        "more than any one machine holds (16.0 TiB); each process holds the whole model\n"
    )


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (24 << 30, 24 << 30))


@pytest.mark.parametrize(("override", "what"), [("model.n_embd=100000", "DefaultCPUAllocator: can't allocate memory"),
                                                 ("train.batch_size=10000000000", "Unable to allocate")])
def test_sizes_this_machine_cannot_hold_fail_with_a_message(spec, tmp_path, override, what):
    """Sizes `check` lets through that this process cannot allocate (24 GiB of address space here): a one-line
    out-of-memory message and exit 1, not an allocator traceback."""
    done = subprocess.run([sys.executable, "-m", "nanogpt", "run", str(spec), override, f'logging.out_dir="{tmp_path}"'],
                          capture_output=True, text=True, timeout=300, env=env_with_plugins(), preexec_fn=_limit_memory)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert last.startswith("error: out of memory: ") and what in last and "(a smaller model or train.batch_size may fit)" in last
