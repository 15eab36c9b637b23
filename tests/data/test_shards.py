"""Sharded datasets: prepare writes shards of at most data.shard_tokens, meta.json lists them, and
reading them (batches included) is reading the one file they concatenate to."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.config.tables import TokensSpec
from nanogpt.data.batches import TokenBatches
from nanogpt.data.files import dataset_record, open_dataset, read_meta, write_meta
from nanogpt.data.prepare import prepare
from nanogpt.data.shards import ShardedTokens, ShardWriter, shard_name
from nanogpt.errors import DataError

TEXT = "".join(f"Speaker {i % 7}:\nLine number {i}, with words and more words.\n\n" for i in range(400))
CPU = SimpleNamespace(device_type="cpu", device="cpu", world_size=1, rank=0, is_main=True)


def _prepare(tmp_path: Path, dataset: str, **overrides) -> tuple[TokensSpec, Path]:
    spec = TokensSpec(dataset=dataset, source="file:t.txt", split="contiguous", val_fraction=0.1, **overrides)
    prepare(spec, say=lambda line: None)
    return spec, tmp_path / "data" / dataset


@pytest.fixture()
def pair(tmp_path, monkeypatch):
    """The same text prepared twice: as one file per split, and as shards of 500 tokens."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text(TEXT)
    return _prepare(tmp_path, "one"), _prepare(tmp_path, "many", shard_tokens=500)


def test_shards_concatenate_to_the_single_file(pair):
    """Each shard holds at most shard_tokens, all but the last exactly that; their bytes in order
    are the single file's; meta.json lists each with its tokens and sha256 and the split's totals."""
    (_, one), (_, many) = pair
    meta, single = read_meta(many), read_meta(one)
    for split in ("train", "val"):
        whole = (one / f"{split}.bin").read_bytes()
        entry = meta[split]
        shards = entry["shards"]
        assert [s["file"] for s in shards] == [shard_name(split, i) for i in range(len(shards))]
        assert all(s["tokens"] == 500 for s in shards[:-1]) and 0 < shards[-1]["tokens"] <= 500
        assert b"".join((many / s["file"]).read_bytes() for s in shards) == whole
        assert (entry["tokens"], entry["sha256"]) == (single[split]["tokens"], single[split]["sha256"])
        assert not (many / f"{split}.bin").exists()
    assert len(meta["train"]["shards"]) == -(-single["train"]["tokens"] // 500) > 1
    assert sorted(p.name for p in many.iterdir()) == sorted(
        ["meta.json"] + [s["file"] for split in ("train", "val") for s in meta[split]["shards"]]
    )


def test_a_split_that_fits_one_shard_keeps_todays_layout(pair):
    """The default shard size leaves a small dataset as it always was: train.bin, val.bin, no shards."""
    (spec, one), _ = pair
    meta = read_meta(one)
    assert sorted(p.name for p in one.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert "shards" not in meta["train"] and meta["train"]["file"] == "train.bin"
    assert "shard_tokens" not in meta["settings"]  # datasets prepared before shards existed stay current
    ds = open_dataset(spec)
    assert isinstance(ds.train, np.memmap)


def test_opened_shards_read_as_the_single_file(pair):
    """open_dataset gives the concatenation: same length, same tokens, decodes to the same text."""
    (one_spec, _), (many_spec, _) = pair
    one, many = open_dataset(one_spec), open_dataset(many_spec)
    assert isinstance(many.train, ShardedTokens)
    for split in ("train", "val"):
        assert len(many.split(split)) == len(one.split(split))
        assert np.array_equal(many.split(split)[:], one.split(split)[:])
    assert many.tokenizer.decode(many.train[:]) + many.tokenizer.decode(many.val[:]) == TEXT
    record = dataset_record(many)
    assert record["train"]["path"] == "data/many/train_*.bin"
    assert record["train"]["shards"] == len(many.meta["train"]["shards"])
    assert record["train"]["sha256"] == dataset_record(one)["train"]["sha256"]


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_batches_over_shards_are_the_single_files_batches(pair, world_size):
    """The batch at (seed, iteration, micro-step) is the same numbers from shards as from one file,
    on every rank of every world size (the starts are drawn over the concatenation)."""
    (one_spec, _), (many_spec, _) = pair
    made = {}
    for name, spec in (("one", one_spec), ("many", many_spec)):
        for rank in range(world_size):
            env = SimpleNamespace(device_type="cpu", device="cpu", world_size=world_size, rank=rank, is_main=rank == 0)
            data = TokenBatches(open_dataset(spec), seed=7, batch_size=16, block_size=64, env=env)
            for it in (0, 1, 250):
                for m, (x, y) in zip(data.micro_steps(4), data.train_batches(it, 4)):
                    made[name, it, m] = (x, y)
            for key in data.eval_keys("val", 5):
                made[name, "val", key] = data.batch("val", key)
    keys = {k[1:] for k in made}
    assert len(keys) == 3 * 4 + 5
    for key in keys:
        (x1, y1), (x2, y2) = made[("one", *key)], made[("many", *key)]
        assert torch_equal(x1, x2) and torch_equal(y1, y2)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=12).filter(lambda c: sum(c) >= 9),
    seed=st.integers(0, 2**32 - 1),
    max_open=st.integers(1, 4),
)
def test_sharded_reads_equal_the_concatenation(tmp_path_factory, counts, seed, max_open):
    """Whatever the shard sizes (empty ones too) and however few files may be open: windows, slices,
    fancy indexing and whole batches read the concatenation's numbers."""
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(seed)
    whole = rng.integers(0, 50257, size=sum(counts), dtype=np.uint16)
    paths, pos = [], 0
    for i, n in enumerate(counts):
        paths.append(folder / f"s{i}.bin")
        whole[pos : pos + n].tofile(paths[-1])
        pos += n
    (folder / "one.bin").write_bytes(whole.tobytes())
    tokens = ShardedTokens(paths, counts, "uint16", max_open=max_open)
    width = int(rng.integers(1, len(whole) + 1))
    starts = rng.integers(0, len(whole) - width + 1, size=8)
    assert np.array_equal(tokens.windows(starts, width), whole[starts[:, None] + np.arange(width)])
    idx = rng.integers(-len(whole), len(whole), size=(3, 5))
    assert np.array_equal(tokens[idx], whole[idx])
    a, b = sorted(rng.integers(0, len(whole) + 1, size=2).tolist())
    assert np.array_equal(tokens[a:b], whole[a:b]) and np.array_equal(tokens[::3], whole[::3])
    assert tokens[-1] == whole[-1] and len(tokens) == len(whole)
    assert tokens.open_files <= max_open

    block = min(8, len(whole) - 1)
    one = SimpleNamespace(train=np.memmap(folder / "one.bin", dtype=np.uint16, mode="r"), vocab_size=50257, dir=folder)
    one.val = one.train
    many = SimpleNamespace(train=tokens, val=tokens, vocab_size=50257, dir=folder)
    b1 = TokenBatches(one, seed=seed, batch_size=4, block_size=block, env=CPU).batch("train", (0, 3, 1))
    b2 = TokenBatches(many, seed=seed, batch_size=4, block_size=block, env=CPU).batch("train", (0, 3, 1))
    assert torch_equal(b1[0], b2[0]) and torch_equal(b1[1], b2[1])
    tokens.close()


def test_open_files_are_bounded(tmp_path):
    """Reading every shard of 50 keeps at most max_open descriptors open."""
    paths = []
    for i in range(50):
        paths.append(tmp_path / f"s{i}.bin")
        np.full(10, i, dtype=np.uint16).tofile(paths[-1])
    tokens = ShardedTokens(paths, [10] * 50, "uint16", max_open=4)
    assert np.array_equal(tokens[:], np.repeat(np.arange(50), 10))
    assert tokens.open_files == 4


def test_a_bad_shard_is_named(pair):
    """A shard that is missing, truncated or changed is refused at open, naming that shard."""
    _, (spec, many) = pair
    shard = many / shard_name("train", 2)
    good = shard.read_bytes()
    shard.write_bytes(good[:-2])
    with pytest.raises(DataError, match=r"train_000002\.bin holds 499 tokens but meta.json records 500"):
        open_dataset(spec)
    shard.write_bytes(good[:-2] + b"\xff\xff")
    with pytest.raises(DataError, match=r"train_000002\.bin has sha256 .* but meta.json records"):
        open_dataset(spec)
    shard.unlink()
    with pytest.raises(DataError, match=r"train_000002\.bin is missing"):
        open_dataset(spec)


def test_hostile_shard_lists_are_refused(pair):
    """meta.json's shard list is checked: files outside the folder, an empty list, totals that disagree."""
    _, (spec, many) = pair
    meta = read_meta(many)
    bad = json.loads(json.dumps(meta))
    bad["train"]["shards"][0]["file"] = "../one/train.bin"
    bad["val"]["shards"] = []
    bad["train"]["tokens"] += 1
    write_meta(many, bad)
    with pytest.raises(DataError) as e:
        open_dataset(spec)
    message = str(e.value)
    assert "train.shards.0.file: must name a file in the dataset's folder" in message
    assert "val.shards: must be a non-empty list of objects" in message
    assert "train.tokens: must be the sum of its shards' tokens" in message


def test_resharding_leaves_only_the_new_files(pair, tmp_path):
    """A prepare with another shard size rebuilds, and removes the shards the new build does not have;
    back at the default, the folder is train.bin and val.bin again."""
    _, (spec, many) = pair
    before = {p.name for p in many.glob("train_*.bin")}
    _prepare(tmp_path, "many", shard_tokens=3000)
    after = {p.name for p in many.glob("train_*.bin")}
    assert len(after) < len(before) and after == {s["file"] for s in read_meta(many)["train"]["shards"]}
    _prepare(tmp_path, "many")
    assert sorted(p.name for p in many.iterdir()) == ["meta.json", "train.bin", "val.bin"]


def test_writer_cuts_at_shard_tokens_across_arrays(tmp_path):
    """Arrays of any length are cut at exactly shard_tokens, whatever their boundaries."""
    writer = ShardWriter(lambda i: tmp_path / f"{i}.tmp", "uint16", 5)
    data = np.arange(23, dtype=np.uint16)
    writer.write_all([data[:2], data[2:2], data[2:13], data[13:]])
    shards = writer.finish()
    assert [s["tokens"] for s in shards] == [5, 5, 5, 5, 3] and writer.tokens == 23
    assert np.array_equal(np.concatenate([np.fromfile(s["tmp"], dtype=np.uint16) for s in shards]), data)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_fixed_validation_prefix_is_scored_in_full_and_in_order(pair, world_size):
    """data.val_tokens: the val batches of all ranks together are the first val_tokens tokens, each
    scored once, in order, with their next tokens as targets; the same from shards as from one file."""
    (one_spec, _), (many_spec, _) = pair
    block, batch, n = 16, 4, 5
    for spec in (one_spec, many_spec):
        ds = open_dataset(spec)
        rows = {}
        for rank in range(world_size):
            env = SimpleNamespace(device_type="cpu", device="cpu", world_size=world_size, rank=rank, is_main=rank == 0)
            data = TokenBatches(ds, seed=1, batch_size=batch, block_size=block, env=env, val_tokens=n * batch * block)
            assert data.eval_count("val", 200) == n and data.eval_count("train", 200) == 200
            for key in data.eval_keys("val", 200):
                rows[key] = data.batch("val", key)
        assert sorted(k[1] for k in rows) == list(range(n))
        x = np.concatenate([rows[k][0].numpy().reshape(-1) for k in sorted(rows)])
        y = np.concatenate([rows[k][1].numpy().reshape(-1) for k in sorted(rows)])
        val = np.asarray(ds.val[: n * batch * block + 1], dtype=np.int64)
        assert np.array_equal(x, val[:-1]) and np.array_equal(y, val[1:])


def test_fixed_validation_prefix_must_fit(pair):
    """A val_tokens that is not whole batches, or more than val holds, is refused with the numbers."""
    (spec, _), _ = pair
    ds = open_dataset(spec)
    with pytest.raises(DataError, match=r"data.val_tokens \(100\) must be a whole number of evaluation batches of batch_size x block_size = 64 tokens \(e.g. 64 or 128\)"):
        TokenBatches(ds, seed=1, batch_size=4, block_size=16, env=CPU, val_tokens=100)
    with pytest.raises(DataError, match=r"needs 6,401 validation tokens .* holds 681"):
        TokenBatches(ds, seed=1, batch_size=4, block_size=16, env=CPU, val_tokens=6400)


def test_evaluation_averages_over_the_fixed_validation_batches(pair):
    """TrainStep.estimate_loss takes its number of val batches from the fixed prefix, not eval_iters:
    the val loss is the mean over exactly those batches (a stand-in model's loss: the inputs' mean)."""
    import contextlib

    import torch

    from nanogpt.training.step import TrainStep

    (spec, _), _ = pair
    data = TokenBatches(open_dataset(spec), seed=1, batch_size=4, block_size=16, env=CPU, val_tokens=5 * 64)

    class MeanModel(torch.nn.Module):
        def forward(self, x, y):
            return None, x.double().mean()

    step = SimpleNamespace(
        model=MeanModel(), data=data, sharded=False, autocast=contextlib.nullcontext(),
        env=SimpleNamespace(world_size=1, rank=0, device="cpu", sum=lambda t: t),
    )
    out = TrainStep.estimate_loss(step, 3)
    val = np.asarray(open_dataset(spec).val[: 5 * 64], dtype=np.float64)
    assert out["val"] == pytest.approx(val.mean(), rel=1e-6)
    train = [data.batch("train", k)[0].double().mean().item() for k in data.eval_keys("train", 3)]
    assert out["train"] == pytest.approx(sum(train) / 3, rel=1e-6)


@pytest.fixture()
def documents(tmp_path, monkeypatch):
    """Documents of varied lengths (a .jsonl), prepared as one file and as shards of 300 tokens."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    with open("d.jsonl", "w") as f:
        for i in range(300):
            f.write(json.dumps({"text": f"Document {i}: " + " ".join(["word"] * int(rng.integers(1, 60)))}) + "\n")
    specs = [TokensSpec(dataset=name, source="file:d.jsonl", split="contiguous", val_fraction=0.1, **kw)
             for name, kw in (("docs_one", {}), ("docs_many", {"shard_tokens": 300}))]
    for spec in specs:
        prepare(spec, say=lambda line: None)
    return specs


def test_document_aligned_windows_start_at_documents(documents):
    """align = "document": every window's first token follows an end-of-text token (or opens the split),
    windows still vary, and shards give the same batches as one file."""
    one_spec, many_spec = documents
    made = []
    for spec in (one_spec, many_spec):
        ds = open_dataset(spec)
        data = TokenBatches(ds, seed=5, batch_size=32, block_size=24, env=CPU, align="document")
        whole = np.asarray(ds.train[:])
        batches = [data.batch("train", (0, it, 0)) for it in range(10)]
        for x, _ in batches:
            for row in x.numpy():
                start = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(whole, 24) == row, axis=1))[0])
                assert start == 0 or whole[start - 1] == ds.eot_id
        assert len({tuple(r) for x, _ in batches for r in x[:, :3].tolist()}) > 20
        made.append(batches)
    for (x1, y1), (x2, y2) in zip(*made):
        assert torch_equal(x1, x2) and torch_equal(y1, y2)
    free = TokenBatches(open_dataset(one_spec), seed=5, batch_size=32, block_size=24, env=CPU)
    assert not torch_equal(free.batch("train", (0, 0, 0))[0], made[0][0][0])  # the option changes the draw


def test_document_alignment_needs_documents(pair):
    """A dataset that is one stream of text has no documents to align to: a clear DataError."""
    (spec, _), _ = pair
    with pytest.raises(DataError, match=r'align = "document" needs documents .* is one stream of text'):
        TokenBatches(open_dataset(spec), seed=1, batch_size=4, block_size=16, env=CPU, align="document")


@pytest.mark.slow
def test_a_run_resumed_across_shard_boundaries_is_the_unbroken_one_and_the_one_files(tmp_path):
    """A tiny run on shards of 2,000 tokens, stopped at a checkpoint and resumed, logs the unbroken run's
    losses and ends with its weights; both equal the same run on the one-file dataset."""
    import subprocess
    import sys

    from tests.tinyrun import env_with_plugins, final_weights, losses, only_run_dir, same_weights, tiny_spec

    half, full = 6, 12
    spec = tiny_spec(tmp_path, train={"eval_interval": half, "log_interval": 1}, logging={"tensorboard": False})

    def run(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "nanogpt", "run", *args], env=env_with_plugins(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-6000:]

    sharded = ["data.dataset=tiny_sharded", "data.shard_tokens=2000"]
    run(str(spec), *sharded, f"train.max_iters={half}")
    split = only_run_dir(tmp_path / "runs", spec.stem)
    run("--resume", str(split), f"train.max_iters={full}")
    run(str(spec), *sharded, f"train.max_iters={full}", "logging.run_id=straight")
    run(str(spec), f"train.max_iters={full}", "logging.run_id=onefile")
    straight, onefile = (tmp_path / "runs" / spec.stem / name for name in ("straight", "onefile"))
    assert len(list((tmp_path / "data" / "tiny_sharded").glob("train_*.bin"))) > 5
    assert losses(split) == losses(straight) == losses(onefile)
    assert same_weights(final_weights(split), final_weights(straight))
    assert same_weights(final_weights(straight), final_weights(onefile))
