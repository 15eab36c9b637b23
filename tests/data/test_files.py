"""Prepared datasets on disk: verification at open, the stat cache, interrupted prepares, records, locking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanogpt.data import files
from nanogpt.data import prepare as prepare_module
from nanogpt.data.files import dataset_record, open_dataset
from nanogpt.data.prepare import ensure_prepared
from nanogpt.data.prepare import prepare
from nanogpt.errors import DataError, InputError
from nanogpt.config.tables import TokensSpec
from tests.conftest import REPO

TEXT = "".join(f"Speaker {i % 7}:\nLine number {i}, with words and more words.\n\n" for i in range(400))


@pytest.fixture()
def prepared(tmp_path, monkeypatch):
    """A small gpt2 dataset prepared under tmp_path/data/ds from tmp_path/t.txt (cwd = tmp_path)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text(TEXT)
    spec = TokensSpec(dataset="ds", source="file:t.txt", split="contiguous", val_fraction=0.1)
    prepare(spec, say=lambda line: None)
    return spec, tmp_path / "data" / "ds"


def test_open_gives_read_only_maps_and_the_tokenizer(prepared):
    """open_dataset maps both splits read-only with meta.json's dtype; the tokenizer decodes them."""
    spec, folder = prepared
    ds = open_dataset(spec)
    assert isinstance(ds.train, np.memmap) and ds.train.dtype == np.uint16 and not ds.train.flags.writeable
    assert (len(ds.train), len(ds.val)) == (ds.meta["train"]["tokens"], ds.meta["val"]["tokens"])
    assert ds.tokenizer.decode(ds.train) + ds.tokenizer.decode(ds.val) == TEXT
    assert (ds.vocab_size, ds.eot_id, ds.tokenizer_name, ds.dir) == (50257, 50256, "gpt2", Path("data/ds"))
    with pytest.raises(ValueError):
        ds.train[0] = 1


def test_dataset_record(prepared):
    """The manifest's record: paths as the spec gives them, token counts and hashes of the files."""
    spec, folder = prepared
    record = dataset_record(open_dataset(spec))
    assert record == {
        "train": {"path": "data/ds/train.bin", "tokens": record["train"]["tokens"],
                  "sha256": files.sha256_file(folder / "train.bin")},
        "val": {"path": "data/ds/val.bin", "tokens": record["val"]["tokens"],
                "sha256": files.sha256_file(folder / "val.bin")},
        "tokenizer": "gpt2",
        "vocab_size": 50257,
    }
    assert record["train"]["tokens"] * 2 == (folder / "train.bin").stat().st_size


def test_missing_dataset_says_to_prepare(tmp_path):
    """A dataset that is not there is a DataError that says to run `nanogpt prepare`."""
    spec = TokensSpec(dataset="nothing", data_dir=str(tmp_path), source="embedded:shakespeare")
    with pytest.raises(DataError, match=r"nothing does not exist; run `nanogpt prepare SPEC`"):
        open_dataset(spec)
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "train.bin").write_bytes(b"\0\0")
    with pytest.raises(DataError, match=r"has no meta.json \(an unfinished prepare, or files from elsewhere\)"):
        open_dataset(spec)


def test_truncated_and_corrupt_files(prepared):
    """Odd sizes, lost tokens and changed bytes are each refused with the file and what is wrong."""
    spec, folder = prepared
    train = folder / "train.bin"
    good = train.read_bytes()

    train.write_bytes(good[:-1])
    with pytest.raises(DataError, match=r"train.bin is [\d,]+ bytes, not a whole number of uint16 tokens \(2 bytes each\)"):
        open_dataset(spec)

    train.write_bytes(good[:-2])
    n = len(good) // 2
    with pytest.raises(DataError, match=rf"train.bin holds {n - 1:,} tokens but meta.json records {n:,}"):
        open_dataset(spec)

    train.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    with pytest.raises(DataError, match=r"train.bin has sha256 [0-9a-f]{64}, but meta.json records [0-9a-f]{64}"):
        open_dataset(spec)

    (folder / "val.bin").unlink()
    train.write_bytes(good)
    with pytest.raises(DataError, match=r"val.bin is missing; run `nanogpt prepare SPEC`"):
        open_dataset(spec)


def test_hash_only_when_size_or_mtime_changed(prepared, monkeypatch):
    """Unchanged stat skips hashing; a touched but intact file is hashed once and its mtime recorded."""
    spec, folder = prepared
    calls: list[str] = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path, **kw: calls.append(Path(path).name) or real(path, **kw))
    open_dataset(spec)
    assert calls == []
    st = (folder / "val.bin").stat()
    os.utime(folder / "val.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    open_dataset(spec)
    assert calls == ["val.bin"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["val"]["mtime_ns"] == st.st_mtime_ns + 5_000_000_000
    open_dataset(spec)
    assert calls == ["val.bin"]


def test_failure_before_meta_leaves_nothing_accepted(prepared, monkeypatch):
    """A prepare that dies after the .bin files are in place but before meta.json leaves no dataset."""
    spec, folder = prepared

    def crash(directory, meta):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(prepare_module, "write_meta", crash)
        with pytest.raises(KeyboardInterrupt):
            prepare(spec, force=True, say=lambda line: None)
    with pytest.raises(DataError, match="has no meta.json"):
        open_dataset(spec)
    assert sorted(p.name for p in folder.iterdir()) == ["train.bin", "val.bin"]
    lines: list[str] = []
    prepare(spec, say=lines.append)
    assert lines[0].endswith("(no meta.json: an unfinished prepare)")
    open_dataset(spec)


KILL = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from nanogpt.data import prepare as p
from nanogpt.config.tables import TokensSpec
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
p.{target} = die
p.prepare(TokensSpec(dataset="ds", source="file:t.txt", split="contiguous", val_fraction={vf}), say=print)
"""


@pytest.mark.parametrize("target, accepted", [("write_meta", False), ("_commit", True)])
def test_sigkill_mid_prepare(prepared, target, accepted):
    """SIGKILL between renames and meta.json leaves no dataset; killed before the renames, the old one stays good."""
    spec, folder = prepared
    before = open_dataset(spec).meta["train"]["sha256"]
    script = KILL.format(repo=str(REPO), target=target, vf=0.2)
    done = subprocess.run([sys.executable, "-c", script], cwd=folder.parents[1], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    if accepted:
        assert open_dataset(spec).meta["train"]["sha256"] == before
        assert any(p.name.endswith(".tmp") for p in folder.iterdir())
    else:
        with pytest.raises(DataError, match="has no meta.json"):
            open_dataset(spec)
    rebuilt = prepare(TokensSpec(dataset="ds", source="file:t.txt", split="contiguous", val_fraction=0.2),
                      say=lambda line: None)
    assert rebuilt["train"]["sha256"] != before
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "train.bin", "val.bin"]


def test_ensure_prepared(tmp_path, monkeypatch):
    """ensure_prepared builds what is missing, opens what is current, and without a source only opens."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text(TEXT)
    lines: list[str] = []
    spec = TokensSpec(dataset="ds", source="file:t.txt", split="contiguous", val_fraction=0.1, tokenizer="char")
    ds = ensure_prepared(spec, say=lines.append)
    assert ds.tokenizer.decode(ds.train) + ds.tokenizer.decode(ds.val) == TEXT
    assert len(lines) == 2
    ensure_prepared(spec, say=lines.append)
    assert len(lines) == 2  # up to date: silent
    no_source = TokensSpec(dataset="ds", tokenizer="char")
    assert ensure_prepared(no_source).meta["train"]["sha256"] == ds.meta["train"]["sha256"]
    with pytest.raises(DataError, match="other does not exist; set data.source and run `nanogpt prepare SPEC`"):
        ensure_prepared(TokensSpec(dataset="other"))
    with pytest.raises(InputError, match="data.source is not set, so there is nothing to prepare data/other from"):
        prepare(TokensSpec(dataset="other"))


def test_source_gone_but_dataset_intact(prepared):
    """A deleted source file does not stop a run from using the intact dataset; --force needs the source."""
    spec, folder = prepared
    Path("t.txt").unlink()
    lines: list[str] = []
    ds = ensure_prepared(spec, say=lines.append)
    assert len(ds.train) > 0
    assert lines == [f"{Path('data/ds')}: data.source 'file:t.txt': no such file 't.txt' (relative to {os.getcwd()}); "
                     f"using the dataset already prepared ({ds.meta['train']['tokens']:,} train + "
                     f"{ds.meta['val']['tokens']:,} val tokens, gpt2 vocab 50,257, uint16)"]
    with pytest.raises(InputError, match="no such file 't.txt'"):
        prepare(spec, force=True, say=lines.append)


SLOW_PREPARE = """
import sys, time
sys.path.insert(0, {repo!r})
from nanogpt.data import prepare as p
from nanogpt.config.tables import TokensSpec
from tests.conftest import REPO
commit = p._commit
def slow_commit(*args):
    time.sleep({delay})
    commit(*args)
p._commit = slow_commit
p.prepare(TokensSpec(dataset="ds", source="file:t.txt", split="contiguous", val_fraction=0.1),
          say=lambda line: print(line, flush=True))
"""


def test_concurrent_prepares_take_turns(tmp_path):
    """A second prepare started while the first holds the lock waits, then finds the dataset up to date."""
    (tmp_path / "t.txt").write_text(TEXT)
    repo = str(REPO)
    first = subprocess.Popen([sys.executable, "-c", SLOW_PREPARE.format(repo=repo, delay=1.5)], cwd=tmp_path,
                             stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().startswith("preparing data/ds")  # it holds the lock now
    second = subprocess.run([sys.executable, "-c", SLOW_PREPARE.format(repo=repo, delay=0)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    rest = first.communicate(timeout=120)[0]
    assert first.returncode == 0 and rest.startswith("wrote data/ds")
    assert second.returncode == 0 and second.stdout.startswith("data/ds is up to date"), second.stdout
    open_dataset(TokensSpec(dataset="ds", data_dir=str(tmp_path / "data")))
