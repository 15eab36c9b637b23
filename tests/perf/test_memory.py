"""The memory planner (`nanogpt scaling memory`) against what PyTorch really holds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.perf import memory
from nanogpt.cli import main
from nanogpt.models.llama import Llama, LlamaConfig
from nanogpt.models.gpt import GPT, GPTConfig
from tests.conftest import REPO
from tests.tinyrun import PLUGINS



def measured_saved_bytes(config: GPTConfig | LlamaConfig, batch: int, half: bool, checkpoint_blocks: bool = False) -> int:
    """Bytes of every tensor the forward keeps for the backward, each storage once, parameters left out."""
    torch.manual_seed(0)
    model = Llama(config) if isinstance(config, LlamaConfig) else GPT(config)
    model.checkpoint_blocks = checkpoint_blocks
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    idx = torch.randint(0, config.vocab_size, (batch, config.block_size))
    targets = torch.randint(0, config.vocab_size, (batch, config.block_size))
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            model(idx, targets)
    return sum(kept.values())


@st.composite
def gpt_sizes(draw, min_block: int = 1) -> dict:
    n_head = draw(st.integers(1, 4))
    return dict(
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
        n_embd=n_head * draw(st.sampled_from([8, 16])),
        block_size=draw(st.integers(min_block, min_block + 80)),
        vocab_size=draw(st.integers(2, 400)),
        bias=draw(st.booleans()),
        tie_weights=draw(st.booleans()),
        **draw(gpt_options()),
    )


@st.composite
def gpt_options(draw) -> dict:
    """The GPT kind's architecture options (docs/architecture-options.md), each drawn on its own:
    every head size gpt_sizes draws is even, as RoPE needs."""
    return dict(
        position=draw(st.sampled_from(["learned", "rope"])),
        rope_theta=draw(st.sampled_from([10000.0, 500.0])),
        norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
        qk_norm=draw(st.booleans()),
        mlp=draw(st.sampled_from(["gelu", "relu2", "swiglu"])),
        logit_softcap=draw(st.sampled_from([None, 15.0])),
        zero_init_residual=draw(st.booleans()),
    )


@settings(max_examples=12, deadline=None)
@given(gpt_sizes(), st.integers(1, 3), st.booleans())
def test_saved_activations_are_counted_byte_for_byte_in_float32(sizes, batch, checkpointing):
    """In float32 the planner's activation count is exactly what autograd keeps (PyTorch's own
    hooks), for every architecture option, with the blocks checkpointed or not."""
    planned = memory.saved_bytes(memory.GPTSizes(**sizes), batch, half=False, checkpointing=checkpointing)
    assert planned == measured_saved_bytes(GPTConfig(**sizes), batch, half=False, checkpoint_blocks=checkpointing)


@settings(max_examples=12, deadline=None)
@given(gpt_sizes(min_block=129), st.integers(1, 2), st.booleans())
def test_saved_activations_are_counted_byte_for_byte_under_bf16_autocast(sizes, batch, checkpointing):
    """Under bf16 autocast too, with autocast's 16-bit copies of the weights on top (past 128
    positions, where a CPU computes bf16 attention as a GPU does, in 16 bits): every matmul's copy,
    or with checkpointed blocks only the head's (the checkpoint keeps the blocks' out of sight)."""
    s = memory.GPTSizes(**sizes)
    copies = s.vocab_size * s.n_embd if checkpointing else s.matmul_weight_elements()
    planned = memory.saved_bytes(s, batch, half=True, checkpointing=checkpointing) + copies * memory.HALF
    assert planned == measured_saved_bytes(GPTConfig(**sizes), batch, half=True, checkpoint_blocks=checkpointing)


@st.composite
def llama_sizes(draw, min_block: int = 1) -> dict:
    n_kv_head = draw(st.integers(1, 3))
    n_head = n_kv_head * draw(st.integers(1, 2))  # plain and grouped-query attention
    return dict(
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
        n_kv_head=n_kv_head,
        n_embd=n_head * draw(st.sampled_from([8, 16])),
        intermediate_size=draw(st.integers(1, 72)),
        block_size=draw(st.integers(min_block, min_block + 80)),
        vocab_size=draw(st.integers(2, 400)),
        tie_embeddings=draw(st.booleans()),
    )


@settings(max_examples=12, deadline=None)
@given(llama_sizes(), st.integers(1, 3))
def test_a_llamas_saved_activations_are_counted_byte_for_byte_in_float32(sizes, batch):
    """For a Llama too (GQA or not, tied or not) the planner's float32 count is what autograd keeps."""
    planned = memory.saved_bytes(memory.LlamaSizes(**sizes), batch, half=False)
    assert planned == measured_saved_bytes(LlamaConfig(**sizes), batch, half=False)


@settings(max_examples=12, deadline=None)
@given(llama_sizes(min_block=129), st.integers(1, 2))
def test_a_llamas_saved_activations_are_counted_byte_for_byte_under_bf16_autocast(sizes, batch):
    """And under bf16 autocast, with autocast's 16-bit weight copies on top, past 128 positions."""
    s = memory.LlamaSizes(**sizes)
    planned = memory.saved_bytes(s, batch, half=True) + s.matmul_weight_elements() * memory.HALF
    assert planned == measured_saved_bytes(LlamaConfig(**sizes), batch, half=True)


@pytest.fixture(scope="module")
def fsdp_of_one():
    """A one-process fsdp job in bfloat16 (DistEnv makes the process group in-process), left at the end."""
    from nanogpt.training.dist import DistEnv
    from nanogpt.config.tables import SystemSpec

    env = DistEnv.from_env(SystemSpec(device="cpu", dtype="bfloat16", parallel="fsdp"), environ={})
    yield env
    env.close()


def measured_fsdp_saved_bytes(config: GPTConfig | LlamaConfig, batch: int, env, checkpoint_blocks: bool) -> int:
    """Bytes the forward of the model sharded with FSDP2 in bfloat16 (`parallel.shard`) keeps for
    the backward, each storage once, FSDP's gathered weights (and views of them) left out: the
    planner counts those apart, and after a block's forward FSDP frees them under the saved views."""
    from torch.distributed.tensor import DTensor

    from nanogpt.training.parallel import shard

    torch.manual_seed(0)
    model = Llama(config) if isinstance(config, LlamaConfig) else GPT(config)
    model.checkpoint_blocks = checkpoint_blocks
    shard(model, env)
    idx = torch.randint(0, config.vocab_size, (batch, config.block_size))
    targets = torch.randint(0, config.vocab_size, (batch, config.block_size))
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        # the weights gathered right now: a module in its forward has its unsharded parameters
        gathered = {p.untyped_storage().data_ptr() for p in model.parameters() if not isinstance(p, DTensor)}
        storage = t.untyped_storage()
        if storage.data_ptr() not in gathered:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, targets)
    return sum(kept.values())


def cpu_layernorm_statistics(s: memory.GPTSizes, batch: int, checkpointing: bool) -> int:
    """Bytes by which a CPU's 16-bit LayerNorms keep less than a GPU's: CPU's layer_norm keeps mean
    and rstd in the input's dtype, CUDA's (which the planner counts) in float32."""
    if s.norm != "layernorm":
        return 0  # an RMSNorm keeps its statistics in float32 everywhere
    layernorms = 1 if checkpointing else 2 * s.n_layer + 1  # with checkpointing only ln_f's are kept
    return layernorms * 2 * batch * s.block_size * (memory.FLOAT32 - memory.HALF)


def planned_fsdp_saved_bytes(s: memory.Sizes, batch: int, checkpointing: bool) -> int:
    """What the fsdp row of `plan` (1 process, bf16) says the forward keeps: its activations less
    the weights FSDP holds gathered (the root's and two blocks', 16-bit), the logits' gradient
    (float32, then 16-bit) and, with checkpointing, the one block the backward recomputes."""
    fsdp = memory.plan(s, batch=batch, world_size=1, half=True, checkpointing=checkpointing)["fsdp"]
    gathered = sum(map(memory.elements, s.root_shapes())) + 2 * sum(map(memory.elements, s.block_shapes()))
    tokens = batch * s.block_size
    logits_grad = tokens * s.vocab_size * (memory.FLOAT32 + memory.HALF)
    recomputed = s.block_saved_bytes(tokens, True, batch, pure=True) if checkpointing else 0
    return fsdp.activations - gathered * memory.HALF - logits_grad - recomputed


@settings(max_examples=6, deadline=None)
@given(gpt_sizes(min_block=129), st.integers(1, 2), st.booleans())
def test_saved_activations_are_counted_byte_for_byte_under_fsdp_in_bf16(fsdp_of_one, sizes, batch, checkpointing):
    """Under fsdp in bfloat16 (FSDP's mixed precision, no autocast: the residual stream is 16-bit
    too), with and without activation checkpointing, the planner's fsdp row counts what autograd keeps."""
    s = memory.GPTSizes(**sizes)
    measured = measured_fsdp_saved_bytes(GPTConfig(**sizes), batch, fsdp_of_one, checkpointing)
    assert planned_fsdp_saved_bytes(s, batch, checkpointing) == measured + cpu_layernorm_statistics(s, batch, checkpointing)


@settings(max_examples=6, deadline=None)
@given(llama_sizes(min_block=129), st.integers(1, 2), st.booleans())
def test_a_llamas_saved_activations_are_counted_byte_for_byte_under_fsdp_in_bf16(fsdp_of_one, sizes, batch, checkpointing):
    """And a Llama's (GQA or not, tied or not), whose RMSNorms work in float32 whatever their input."""
    s = memory.LlamaSizes(**sizes)
    measured = measured_fsdp_saved_bytes(LlamaConfig(**sizes), batch, fsdp_of_one, checkpointing)
    assert planned_fsdp_saved_bytes(s, batch, checkpointing) == measured


@settings(max_examples=25, deadline=None)
@given(llama_sizes())
def test_a_llamas_parameter_shapes_are_the_models(sizes):
    """The planner's parameter shapes are the Llama's, each shared tensor once, and so are its bytes."""
    s = memory.LlamaSizes(**sizes)
    planned = sorted(s.root_shapes() + s.block_shapes() * s.n_layer)
    model = Llama(LlamaConfig(**sizes))
    assert planned == sorted(tuple(p.shape) for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())
    ddp = memory.plan(s, batch=1, world_size=1, half=True, checkpointing=False)["ddp"]
    assert (ddp.params, ddp.grads, ddp.optimizer) == (4 * n, 8 * n, 8 * n)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tie", [True, False])
def test_parameter_shapes_are_the_models(bias, tie):
    """The planner's parameter shapes are the GPT's, each shared tensor once."""
    sizes = dict(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=50, bias=bias, tie_weights=tie)
    s = memory.GPTSizes(**sizes)
    planned = sorted(s.root_shapes() + s.block_shapes() * s.n_layer)
    assert planned == sorted(tuple(p.shape) for p in GPT(GPTConfig(**sizes)).parameters())


@settings(max_examples=25, deadline=None)
@given(gpt_sizes())
def test_parameter_shapes_follow_the_architecture_options(sizes):
    """With the options too (no position table with RoPE, gain-only RMSNorms, SwiGLU's third matrix
    at its own width), the planner's shapes are the GPT's, its bytes follow them, and its matmul
    weights (autocast's 16-bit copies) are the GPT's nn.Linear weights and the head."""
    s = memory.GPTSizes(**sizes)
    model = GPT(GPTConfig(**sizes))
    assert sorted(s.root_shapes() + s.block_shapes() * s.n_layer) == sorted(tuple(p.shape) for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())
    ddp = memory.plan(s, batch=1, world_size=1, half=True, checkpointing=False)["ddp"]
    assert (ddp.params, ddp.grads, ddp.optimizer) == (4 * n, 8 * n, 8 * n)
    linears = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert s.matmul_weight_elements() == sum(linears.values())


@given(st.integers(1, 10_000), st.integers(1, 16))
def test_shards_cover_every_row_once_as_torch_chunk_cuts_them(rows, world):
    """Rank by rank the shards are torch.chunk's pieces, and together they are the whole tensor."""
    pieces = [shard_rows for shard_rows in (memory.shard_rows(rows, world, r) for r in range(world))]
    assert sum(pieces) == rows
    chunks = [c.shape[0] for c in torch.arange(rows).chunk(world)]
    assert pieces == chunks + [0] * (world - len(chunks))


FSDP_SIZES = {
    "gpt": dict(n_layer=2, n_head=2, n_embd=48, block_size=40, vocab_size=203, tie_weights=True),
    "llama": dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=48, intermediate_size=70, block_size=40, vocab_size=203),
    # the options that change shapes: no position table, gain-only norms, SwiGLU's third matrix, an untied head
    "gpt_options": dict(n_layer=2, n_head=2, n_embd=48, block_size=40, vocab_size=203, tie_weights=False, bias=False,
                        position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind, world", [("gpt", 2), ("gpt", 3), ("llama", 3), ("gpt_options", 3)])
def test_fsdp_shard_estimate_equals_what_fully_shard_holds(kind, world):
    """Under torchrun with FSDP2's fully_shard on every block and the root, each rank's parameter,
    gradient and AdamW shards hold exactly the elements the planner counts for that rank (a GPT's,
    one with the architecture options, and a grouped-query, untied Llama's)."""
    sizes = FSDP_SIZES[kind]
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
         str(PLUGINS / "fsdp_shards.py"), json.dumps({"kind": kind, **sizes})],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # the ranks print at once, so one line may hold several reports
    ranks = {r["rank"]: r for r in (json.loads(m) for m in re.findall(r"\{[^{}]*\}", out.stdout))}
    s = memory.LlamaSizes(**sizes) if kind == "llama" else memory.GPTSizes(**sizes)
    shapes = s.root_shapes() + s.block_shapes() * s.n_layer
    for rank in range(world):
        expected = memory.shard_elements(shapes, world, rank)
        counted = {k: ranks[rank][k] for k in ("rank", "params", "grads", "optimizer")}
        assert counted == {"rank": rank, "params": expected, "grads": expected, "optimizer": 2 * expected}
    plan = memory.plan(s, batch=1, world_size=world, half=True, checkpointing=False)["fsdp"]
    assert plan.params == ranks[0]["params"] * memory.FLOAT32
    assert plan.optimizer == ranks[0]["optimizer"] * memory.FLOAT32


@pytest.mark.slow
def test_fsdp_gradient_accumulation_holds_whole_float32_gradients():
    """With gradient sync off for the early micro-steps (train.grad_accum above the number of processes),
    FSDP2 keeps each gradient whole, upcast to float32, until the last micro-step reduce-scatters it: the
    planner's fsdp gradients grow by N x 4 bytes per process, measured on the tensors FSDP holds after
    such a micro-step in a 2-process bfloat16 job."""
    sizes = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "vocab_size": 64, "bias": True}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(PLUGINS / "fsdp_accumulated.py"), json.dumps(sizes)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [json.loads(m) for m in re.findall(r"\{[^{}]*\}", out.stdout)]
    assert len(ranks) == 2
    s = memory.GPTSizes(**sizes)
    one, several = (memory.plan(s, batch=1, world_size=2, half=True, checkpointing=False, micro_steps=m)["fsdp"] for m in (1, 2))
    for r in ranks:
        assert several.grads - one.grads == r["accumulated_bytes"] == r["params"] * memory.FLOAT32, r


def tensor_bytes(tensors) -> int:
    """Bytes of these tensors (a DTensor's local shard), each storage once."""
    from torch.distributed.tensor import DTensor

    storages = {}
    for t in tensors:
        local = t.to_local() if isinstance(t, DTensor) else t
        storages[local.untyped_storage().data_ptr()] = local.untyped_storage().nbytes()
    return sum(storages.values())


def measured_state_bytes(model: torch.nn.Module, wrapped: torch.nn.Module, vocab_size: int, block_size: int) -> dict[str, int]:
    """Parameter, gradient and optimizer bytes one process holds after a real training step of
    `wrapped` (the model under DDP or sharded by FSDP2) with the project's own AdamW: the tensors
    themselves, and DDP's reduction buckets as DDP reports them. AdamW's `step` counters (one scalar
    per tensor) are left out: the planner does not count them."""
    from nanogpt.config.tables import AdamWSpec
    from nanogpt.training.optimizers import build_adamw

    optimizer = build_adamw(AdamWSpec(), model=model)
    idx = torch.randint(0, vocab_size, (2, block_size))
    _, loss = wrapped(idx, idx)
    loss.backward()
    optimizer.step()
    params = list(model.parameters())
    grads = tensor_bytes(p.grad for p in params)
    if isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
        logged = wrapped._get_ddp_logging_data()
        assert not logged["gradient_as_bucket_view"]  # else the buckets are the gradients, not a copy
        grads += sum(int(size) for size in re.findall(r"\d+", str(logged["bucket_sizes"])))
    moments = [t for state in optimizer.state.values() for key, t in state.items() if key != "step"]
    return {"params": tensor_bytes(params), "grads": grads, "optimizer": tensor_bytes(moments)}


@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(["gpt", "llama"]), data=st.data())
def test_the_planned_state_is_what_a_training_step_holds(fsdp_of_one, kind, data):
    """ddp's and fsdp's parameter, gradient and optimizer bytes are what a real step leaves: a model
    under DDP (its gradients plus DDP's bucket copy) and one sharded by FSDP2 (float32 shards, here
    of one process; the shards of 2 and 3 are measured under torchrun below), for a GPT and a Llama."""
    from torch.nn.parallel import DistributedDataParallel

    from nanogpt.training.parallel import shard

    sizes = data.draw(gpt_sizes() if kind == "gpt" else llama_sizes(), label="sizes")
    s, config, build = ((memory.GPTSizes(**sizes), GPTConfig(**sizes), GPT) if kind == "gpt"
                        else (memory.LlamaSizes(**sizes), LlamaConfig(**sizes), Llama))
    planned = memory.plan(s, batch=1, world_size=1, half=True, checkpointing=False)
    torch.manual_seed(0)
    model = build(config)
    ddp = measured_state_bytes(model, DistributedDataParallel(model), config.vocab_size, config.block_size)
    assert ddp == {k: getattr(planned["ddp"], k) for k in ddp}
    sharded = shard(build(config), fsdp_of_one)
    fsdp = measured_state_bytes(sharded, sharded, config.vocab_size, config.block_size)
    assert fsdp == {k: getattr(planned["fsdp"], k) for k in fsdp}


@pytest.mark.parametrize("text,expected", [("80GB", 80 * 10**9), ("141GiB", 141 * 2**30), ("8e10", 8 * 10**10), ("1.5 TB", 1.5e12)])
def test_memory_sizes(text, expected):
    assert memory.parse_size(text) == expected


def run_memory(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["scaling", "memory", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_verb_prints_each_way_and_what_fits(capsys):
    """`scaling memory SPEC --world-size 8 --device-memory 80GB`: ddp and fsdp, with and without checkpointing."""
    code, out, _ = run_memory(capsys, str(REPO / "experiments/gpt2_owt.toml"), "--world-size", "8", "--device-memory", "80GB")
    assert code == 0
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()[2:6]}
    assert set(rows) == {"ddp", "fsdp", "ddp + ckpt", "fsdp + ckpt"}
    assert all(line.endswith("yes") for line in rows.values())


def test_verb_json_and_a_device_too_small(capsys):
    code, out, _ = run_memory(capsys, str(REPO / "experiments/gpt2_owt.toml"), "train.batch_size=64", "--device-memory", "24GB", "--json")
    assert code == 0
    report = json.loads(out)
    with torch.device("meta"):  # GPT-2's own tensors, with no memory behind them
        n = sum(p.numel() for p in GPT(GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304)).parameters())
    first = report["rows"][0]
    assert first["parallel"] == "ddp" and (first["params"], first["grads"], first["optimizer"]) == (4 * n, 8 * n, 8 * n)
    assert first["total"] == sum(first[k] for k in ("params", "grads", "optimizer", "activations")) > 24 * 10**9
    assert first["fits"] is False and first["activation_checkpointing"] == "none"
    assert report["world_size"] == 1 and report["micro_batch"] == 64


def test_verb_names_a_bad_memory_size(capsys):
    code, _, err = run_memory(capsys, str(REPO / "experiments/gpt2_owt.toml"), "--device-memory", "lots")
    assert code == 2
    assert "'lots' is not a memory size" in err


def fake_nvidia_smi(folder: Path, line: str) -> dict[str, str]:
    """A PATH on which `nvidia-smi` answers the query as a machine with this GPU would."""
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{line}'\n")
    smi.chmod(0o755)
    import os

    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def check(spec: str, *overrides: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nanogpt", "check", spec, *overrides],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )


def test_check_warns_when_the_spec_will_not_fit_the_gpu_it_finds(tmp_path):
    """`check` on a machine whose GPU is too small for the spec: ok, exit 0, and a warning naming both."""
    env = fake_nvidia_smi(tmp_path / "bin", "NVIDIA GeForce GTX 1080, 8192")
    out = check("experiments/gpt2_owt.toml", env=env)
    assert out.returncode == 0
    assert out.stdout == "ok: experiments/gpt2_owt.toml\n"
    assert out.stderr.startswith("warning: experiments/gpt2_owt.toml: needs about 12.16 GiB per process")
    assert "more than the 8.00 GiB of this machine's NVIDIA GeForce GTX 1080" in out.stderr
    assert "nanogpt scaling memory experiments/gpt2_owt.toml" in out.stderr


def test_check_is_quiet_when_it_fits_or_there_is_no_gpu(tmp_path):
    big = fake_nvidia_smi(tmp_path / "big", "NVIDIA H200, 143771")
    assert check("experiments/gpt2_owt.toml", env=big).stderr == ""
    small = fake_nvidia_smi(tmp_path / "small", "NVIDIA GeForce GTX 1080, 8192")
    assert check("experiments/gpt2_owt.toml", "system.device=cpu", env=small).stderr == ""
    assert check("experiments/gpt2_owt.toml", "train.batch_size=2", env=small).stderr == ""
    broken = fake_nvidia_smi(tmp_path / "broken", "NVIDIA-SMI has failed because it couldn't communicate with the driver")
    assert check("experiments/gpt2_owt.toml", env=broken).stderr == ""


def test_check_plans_the_spec_as_written_fsdp_over_the_machines_gpus(tmp_path):
    """Under system.parallel = "fsdp" the warning counts the spec's own sharding (over the GPUs
    nvidia-smi lists) and activation checkpointing: GPT-2 at batch 12 does not fit 8 GB as ddp or
    as fsdp over 4 GPUs, and does with its blocks recomputed."""
    four = fake_nvidia_smi(tmp_path / "four", "\n".join(["NVIDIA GeForce GTX 1080, 8192"] * 4))
    spec = "experiments/gpt2_owt.toml"
    sharded = check(spec, 'system.parallel="fsdp"', env=four)
    assert sharded.returncode == 0
    assert "per process under fsdp over this machine's 4 GPUs" in sharded.stderr
    assert check(spec, 'system.parallel="fsdp"', 'system.activation_checkpointing="blocks"', env=four).stderr == ""
