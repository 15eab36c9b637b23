"""`system.activation_checkpointing = "blocks"`: the same numbers, and only the blocks' inputs kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.perf import memory
from nanogpt.models.llama import LlamaConfig
from nanogpt.models.gpt import GPT, GPTConfig
from tests.perf.test_memory import gpt_sizes, llama_sizes, measured_saved_bytes
from tests.tinyrun import env_with_plugins, losses, nanogpt, tiny_spec


@settings(max_examples=10, deadline=None)
@given(gpt_sizes(min_block=129), st.integers(1, 2), st.booleans())
def test_the_forward_keeps_the_blocks_inputs_only(sizes, batch, half):
    """What a checkpointed forward keeps is the planner's count: each block's float32 input, and the
    embedding, head and loss as without (under autocast, the head's 16-bit weight copy too)."""
    s = memory.GPTSizes(**sizes)
    planned = memory.saved_bytes(s, batch, half, checkpointing=True)
    if half:
        planned += s.vocab_size * s.n_embd * memory.HALF
    assert planned == measured_saved_bytes(GPTConfig(**sizes), batch, half, checkpoint_blocks=True)
    assert planned < measured_saved_bytes(GPTConfig(**sizes), batch, half)


@settings(max_examples=10, deadline=None)
@given(llama_sizes(min_block=129), st.integers(1, 2), st.booleans())
def test_a_checkpointed_llama_keeps_the_blocks_inputs_only(sizes, batch, half):
    """A Llama's checkpointed forward too: each block's float32 input, and RoPE's float32 tables,
    which every block takes as inputs."""
    s = memory.LlamaSizes(**sizes)
    planned = memory.saved_bytes(s, batch, half, checkpointing=True)
    if half:
        planned += s.vocab_size * s.n_embd * memory.HALF
    assert planned == measured_saved_bytes(LlamaConfig(**sizes), batch, half, checkpoint_blocks=True)
    assert planned < measured_saved_bytes(LlamaConfig(**sizes), batch, half)


@pytest.mark.parametrize("half", [False, True])
def test_recomputing_the_blocks_gives_the_same_loss_and_gradients(half):
    """With dropout too: the recomputation replays the forward's random numbers."""
    config = GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=24, vocab_size=97, dropout=0.1)
    x = torch.randint(0, 97, (3, 24), generator=torch.Generator().manual_seed(1))
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = GPT(config)
        model.checkpoint_blocks = recompute
        torch.manual_seed(2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            _, loss = model(x, x)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)


def test_sampling_ignores_the_switch():
    """Generation (no gradients, a KV cache) runs the blocks as they are: the same tokens."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=30)).eval()
    idx = torch.zeros(2, 1, dtype=torch.long)
    plain = model.generate(idx, 12, generator=torch.Generator().manual_seed(3))
    model.checkpoint_blocks = True
    assert torch.equal(model.generate(idx, 12, generator=torch.Generator().manual_seed(3)), plain)


@pytest.mark.slow
def test_a_run_with_checkpointed_blocks_trains_the_same_numbers(tmp_path: Path):
    """End to end, the runner checkpoints every block of every micro-step's forward, its losses are
    bit-identical to a run without, and a resume may switch it off."""
    spec = tiny_spec(tmp_path, train={"max_iters": 20})
    nanogpt("run", str(spec), "logging.run_id=plain", "system.dtype=float32", check=True)
    counted = tmp_path / "recomputed"
    run = nanogpt(
        "run", str(spec), "logging.run_id=ckpt", "system.dtype=float32", "system.activation_checkpointing=blocks",
        "train.max_iters=10", 'plugins=["count_recompute"]', env=env_with_plugins(COUNT_RECOMPUTE_FILE=str(counted)),
    )
    assert run.returncode == 0, run.stderr
    exp = json.loads((tmp_path / "runs" / "tiny" / "ckpt" / "manifest.json").read_text())["spec"]
    assert int(counted.read_text()) == 10 * exp["train"]["grad_accum"] * exp["model"]["n_layer"]
    runs = tmp_path / "runs" / "tiny"
    resumed = nanogpt("run", "--resume", str(runs / "ckpt"), "train.max_iters=20", "system.activation_checkpointing=none")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(runs / "ckpt") == losses(runs / "plain")
