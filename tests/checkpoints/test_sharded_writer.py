"""How the sharded checkpoint writer hands its state to DCP: the file writer it picks makes no CUDA
calls of its own, synchronous or asynchronous."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanogpt.checkpoints.sharded import SUFFIX, ShardedCheckpointWriter
from nanogpt.config.tables import SystemSpec
from nanogpt.models.gpt import GPT, GPTConfig
from nanogpt.training.dist import DistEnv
from nanogpt.training.parallel import shard


@pytest.fixture
def sharded_of_one():
    """A one-process fsdp job (its process group made in-process), a tiny sharded GPT and its AdamW."""
    env = DistEnv.from_env(SystemSpec(device="cpu", dtype="float32", parallel="fsdp"), environ={})
    try:
        torch.manual_seed(0)
        model = shard(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=32)), env)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, 32, (2, 8))
        model(x, x)[1].backward()
        optimizer.step()
        yield env, model, optimizer
    finally:
        env.close(barrier=False)


@pytest.mark.parametrize("asynchronous", [True, False])
def test_the_dcp_writer_makes_no_cuda_calls_where_cuda_is_available(tmp_path: Path, monkeypatch, sharded_of_one, asynchronous):
    """DCP's default writer, wherever CUDA is available, loads tensors with a loader that copies ahead
    on a CUDA stream made in its writing thread (current device: GPU 0, on every rank). The writer
    the product passes loads them serially: with CUDA said to be available, the copy-ahead loader is
    never made, and the checkpoint is written."""
    from torch.distributed.checkpoint import filesystem

    made = []

    class CopyAheadLoader:
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            raise AssertionError("DCP's CUDA copy-ahead loader was chosen")

    env, model, optimizer = sharded_of_one
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(filesystem, "_OverlappingCpuLoader", CopyAheadLoader)
    written = []
    writer = ShardedCheckpointWriter(tmp_path, is_main=True, group=env.checkpoints, asynchronous=asynchronous)
    writer.save(5, {"iter_num": 5}, model, optimizer, on_written=lambda path, digest, files: written.append(path))
    writer.wait()
    assert made == []
    assert written == [tmp_path / "checkpoints" / f"ckpt-00000005{SUFFIX}"]
    assert sorted(p.name for p in written[0].iterdir()) == [".metadata", "__0_0.distcp", "state.pt"]


def test_asynchronous_saves_share_one_stager_for_the_run(tmp_path: Path, monkeypatch, sharded_of_one):
    """DCP's async_save makes (and closes) a fresh stager for each save unless given one: every save
    allocated the whole state again. The writer keeps one for the run, closed at the end, and what a
    later save writes is that save's state, not the copy kept from the first."""
    from torch.distributed.checkpoint import staging, state_dict_saver

    from nanogpt.checkpoints.sharded import load_whole

    made, closed = [], []

    class CountedStager(staging.DefaultStager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def close(self):
            closed.append(self)
            super().close()

    monkeypatch.setattr(staging, "DefaultStager", CountedStager)
    monkeypatch.setattr(state_dict_saver, "DefaultStager", CountedStager)
    env, model, optimizer = sharded_of_one
    writer = ShardedCheckpointWriter(tmp_path, is_main=True, group=env.checkpoints, asynchronous=True)
    written = []
    for iteration in (5, 6):
        if iteration == 6:
            x = torch.randint(0, 32, (2, 8))
            model(x, x)[1].backward()
            optimizer.step()
        writer.save(iteration, {"iter_num": iteration}, model, optimizer, on_written=lambda path, digest, files: written.append(path))
    writer.close()
    assert len(made) == 1 and closed == made
    expected = {k: v.full_tensor() for k, v in model.state_dict().items()}
    saved = load_whole(written[1])["model"]
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in expected)
    first = load_whole(written[0])["model"]
    assert not torch.equal(first["lm_head.weight"], expected["lm_head.weight"])
