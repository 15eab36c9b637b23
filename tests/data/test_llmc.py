"""llm.c / modded-nanogpt token shards: `data.source = "bin:GLOB"` read in place and checked file by file,
and `nanogpt prepare --format bin` writing them."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nanogpt.config.tables import TokensSpec
from nanogpt.data.batches import TokenBatches
from nanogpt.data.files import dataset_record, open_dataset
from nanogpt.data.llmc import HEADER_BYTES, MAGIC, read_header, write_bin
from nanogpt.data.prepare import ensure_prepared, prepare_command
from nanogpt.errors import DataError, InputError

TEXT = "".join(f"Speaker {i % 7}:\nLine number {i}, with words and more words.\n\n" for i in range(400))
CPU = SimpleNamespace(device_type="cpu", device="cpu", world_size=1, rank=0, is_main=True)


@pytest.fixture()
def exported(tmp_path, monkeypatch):
    """A gpt2 dataset prepared and written as llm.c shards of 1,500 tokens; (its spec, the bin: spec)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text(TEXT)
    spec = TokensSpec(dataset="ds", source="file:t.txt", split="contiguous", val_fraction=0.1, shard_tokens=1500)
    assert prepare_command(spec, force=False, format="bin") == 0
    return spec, TokensSpec(dataset="fromllmc", source="bin:data/ds/bin/*.bin")


def test_export_then_read_back_is_the_same_dataset(exported):
    """--format bin writes headers llm.c reads; bin: reads them back to the same tokens and the same batches."""
    spec, bin_spec = exported
    folder = Path("data/ds/bin")
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "ds_train_000000.bin" and names[-1] == "ds_val_000000.bin"
    assert len(names) == -(-6125 // 1500) + 1  # train's 6,125 tokens in files of 1,500, val's 681 in one
    header = np.fromfile(folder / names[0], dtype="<i4", count=256)
    assert list(header[:3]) == [MAGIC, 1, 1500] and not header[3:].any()
    ours, theirs = open_dataset(spec), ensure_prepared(bin_spec)
    for split in ("train", "val"):
        assert np.array_equal(ours.split(split)[:], theirs.split(split)[:])
    a = TokenBatches(ours, seed=3, batch_size=8, block_size=32, env=CPU)
    b = TokenBatches(theirs, seed=3, batch_size=8, block_size=32, env=CPU)
    for key in [(0, 0, 0), (0, 9, 1), (1, 1, 2)]:
        for split in ("train", "val"):
            assert all(bool((x == y).all()) for x, y in zip(a.batch(split, key), b.batch(split, key)))
    record = dataset_record(theirs)
    assert record["train"]["path"] == "data/ds/bin/*.bin" and record["train"]["tokens"] == ours.meta["train"]["tokens"]
    assert record["train"]["shards"] == len(list(folder.glob("ds_train_*.bin")))


def _shard(path: Path, ids, *, magic=MAGIC, version=1, count=None) -> Path:
    header = np.zeros(256, dtype="<i4")
    header[:3] = (magic, version, len(ids) if count is None else count)
    path.write_bytes(header.tobytes() + np.asarray(ids, dtype="<u2").tobytes())
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _shard(p, range(100), magic=20240801), r"is not an llm.c token shard: its magic number is 20240801"),
        (lambda p: _shard(p, range(100), version=2), r"is token shard version 2"),
        (lambda p: p.write_bytes(_shard(p, range(100)).read_bytes()[:-3]), r"header counts 100 tokens .* the file is truncated"),
        (lambda p: _shard(p, range(100), count=2**31 - 1), r"header counts 2,147,483,647 tokens .* the file is truncated"),
        (lambda p: _shard(p, range(100), count=10), r"header counts 10 tokens .* longer than its header says"),
        (lambda p: _shard(p, [], count=0), r"header counts 0 tokens"),
        (lambda p: p.write_bytes(b"\x00" * 100), r"is 100 bytes, shorter than the 1024-byte header"),
    ],
    ids=["magic", "version", "truncated", "huge-count", "short-count", "empty", "no-header"],
)
def test_hostile_shards_are_refused_naming_the_file(tmp_path, make, message):
    """Each bad file is a DataError that names it; no token of it is read."""
    good = _shard(tmp_path / "x_train_000000.bin", range(100))
    bad = tmp_path / "x_val_000000.bin"
    make(bad)
    spec = TokensSpec(dataset="x", source=f"bin:{tmp_path}/*.bin")
    assert read_header(good, tmp_path) == 100
    with pytest.raises(DataError, match=message) as e:
        open_dataset(spec)
    assert str(bad) in str(e.value)


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    """A shard that is a symlink to a file outside the glob's folder is never followed."""
    inside, outside = tmp_path / "shards", tmp_path / "elsewhere"
    inside.mkdir(), outside.mkdir()
    _shard(inside / "a_train_000000.bin", range(100))
    os.symlink(_shard(outside / "secret.bin", range(100)), inside / "a_val_000000.bin")
    with pytest.raises(DataError, match=r"a_val_000000.bin leads to .*elsewhere/secret.bin, outside .*shards"):
        open_dataset(TokensSpec(dataset="x", source=f"bin:{inside}/*.bin"))


def test_a_glob_without_val_files_says_so(tmp_path):
    """A glob that finds no val file (or nothing) is an InputError saying how files are assigned."""
    _shard(tmp_path / "a_train_000000.bin", range(100))
    with pytest.raises(InputError, match=r"matches no val files \(files whose name holds \"val\" are val"):
        open_dataset(TokensSpec(dataset="x", source=f"bin:{tmp_path}/*.bin"))
    with pytest.raises(InputError, match=r"matches no files"):
        open_dataset(TokensSpec(dataset="x", source=f"bin:{tmp_path}/none*.bin"))


def test_write_bin_refuses_what_the_format_cannot_hold(tmp_path):
    """Ids above uint16 are refused; a written shard is the header plus two bytes a token."""
    with pytest.raises(DataError, match=r"token ids above 65,535"):
        write_bin(tmp_path / "x.bin", np.array([1, 70000], dtype=np.uint32))
    write_bin(tmp_path / "y.bin", np.arange(10))
    assert (tmp_path / "y.bin").stat().st_size == HEADER_BYTES + 20


def test_bin_source_needs_the_gpt2_tokenizer():
    """llm.c shards are GPT-2 ids: the spec check says so for another tokenizer."""
    problems = list(TokensSpec(dataset="x", source="bin:a/*.bin", tokenizer="char").cross_checks())
    assert [p.path for p in problems] == ["tokenizer"]
