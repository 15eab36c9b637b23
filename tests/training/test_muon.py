"""`[optimizer] kind = "muon"`: torch's Muon on the blocks' matrices and AdamW on the rest, as one
optimizer; its groups by the model's declared roles, the schedule's multiplier on every group, an
exact resume in one process and under ddp, fsdp refused at `check`, and an AdamW checkpoint refused."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from nanogpt.cli import main
from nanogpt.config.load import loads_spec
from nanogpt.config.tables import MuonSpec
from nanogpt.config.problems import SpecError
from nanogpt.errors import InputError
from nanogpt.models.gpt import GPT, GPTConfig, roles_by_structure
from nanogpt.models.llama import Llama
from nanogpt.config.sizes import LlamaConfig, gpt_role_params, llama_role_params
from nanogpt.training.optimizers import MuonWithAdamW, StackedMuon, build_muon, group_record
from tests.tinyrun import env_with_plugins, final_weights, losses, nanogpt, only_run_dir, same_weights, tiny_spec

MUON = {"kind": "muon", "lr": 0.02, "adam_lr": 3e-3, "embed_lr": 6e-3}


def assert_groups_cover(model: nn.Module, optimizer: MuonWithAdamW) -> None:
    """Every parameter in exactly one group; every 2-D parameter inside the blocks in Muon's, nothing else there."""
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # parameters() yields a tied tensor once
    in_blocks = {id(p) for p in model.blocks.parameters() if p.ndim == 2}
    hidden = [g for g in optimizer.param_groups if g["role"] == "hidden"]
    assert len(hidden) == 1 and {id(p) for p in hidden[0]["params"]} == in_blocks
    assert hidden[0]["params"] and all(p.ndim == 2 for p in hidden[0]["params"])
    assert set(map(id, hidden[0]["params"])) == set(map(id, optimizer.parts[0].param_groups[0]["params"]))


@settings(max_examples=25, deadline=None)
@given(n_layer=st.integers(1, 3), n_head=st.integers(1, 4), head_size=st.integers(1, 4), vocab=st.integers(2, 40),
       bias=st.booleans(), tie=st.booleans())
def test_every_gpt_parameter_lands_in_one_group_and_block_matrices_in_muons(n_layer, n_head, head_size, vocab, bias, tie):
    """GPT of any size: each parameter in exactly one group, the blocks' matrices Muon's, a tied head an embedding."""
    model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_head * head_size, block_size=8, vocab_size=vocab,
                          bias=bias, tie_weights=tie))
    optimizer = build_muon(MuonSpec(head_lr=1e-3), model=model)
    assert_groups_cover(model, optimizer)
    roles = {g["role"]: g for g in optimizer.param_groups}
    assert ("head" in roles) == (not tie)
    assert {id(p) for p in roles["embedding"]["params"]} == {id(model.transformer.wte.weight), id(model.transformer.wpe.weight)}
    if not tie:
        assert roles["head"]["params"] == [model.lm_head.weight] and roles["head"]["base_lr"] == 1e-3
    # what `show` says from the spec alone (nanogpt.config.sizes) is what the optimizer got
    counts = gpt_role_params(n_layer=n_layer, n_embd=n_head * head_size, block_size=8, padded_vocab_size=vocab,
                             bias=bias, tie_weights=tie)
    assert {r["role"]: r["params"] for r in group_record(optimizer)} == {k: v for k, v in counts.items() if v}


@settings(max_examples=25, deadline=None)
@given(n_layer=st.integers(1, 3), n_kv_head=st.integers(1, 2), groups=st.integers(1, 2), head_size=st.integers(1, 3).map(lambda k: 2 * k),
       inter=st.integers(1, 20), vocab=st.integers(2, 40), tie=st.booleans())
def test_every_llama_parameter_lands_in_one_group_and_block_matrices_in_muons(n_layer, n_kv_head, groups, head_size, inter, vocab, tie):
    """Llama of any size: the same, its RMSNorm gains in AdamW's "other" group."""
    n_head = n_kv_head * groups
    model = Llama(LlamaConfig(n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head, n_embd=n_head * head_size,
                              intermediate_size=inter, block_size=8, vocab_size=vocab, tie_embeddings=tie))
    optimizer = build_muon(MuonSpec(), model=model)
    assert_groups_cover(model, optimizer)
    other = next(g for g in optimizer.param_groups if g["role"] == "other")
    assert all(p.ndim == 1 for p in other["params"]) and len(other["params"]) == 2 * n_layer + 1
    counts = llama_role_params(n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head, n_embd=n_head * head_size,
                               intermediate_size=inter, vocab_size=vocab, tie_embeddings=tie)
    assert {r["role"]: r["params"] for r in group_record(optimizer)} == {k: v for k, v in counts.items() if v}


class PluginModel(nn.Module):
    """A model kind from outside: a block stack of its own, declaring its roles through the contract."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)) for _ in range(2))
        self.out = nn.Linear(8, 10)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.layers

    def param_roles(self) -> dict[str, str]:
        return roles_by_structure(self, blocks=self.layers, head=self.out)


def test_a_plugin_model_gets_muon_through_its_declared_roles():
    """The builder needs nothing but `param_roles`: a plugin model's block matrices go to Muon, its head's bias to "other"."""
    model = PluginModel()
    optimizer = build_muon(MuonSpec(), model=model)
    assert_groups_cover(model, optimizer)
    assert [(r["role"], r["params"]) for r in group_record(optimizer)] == [
        ("hidden", 2 * 64), ("embedding", 80), ("head", 80), ("other", 2 * (8 + 16) + 10)]


def test_a_model_without_roles_or_with_wrong_ones_is_a_clear_error():
    """No `param_roles`, or roles that miss a parameter or put a vector in Muon's group: an InputError naming it."""
    with pytest.raises(InputError, match=r"Sequential has no param_roles\(\)"):
        build_muon(MuonSpec(), model=nn.Sequential(nn.Linear(2, 2)))
    model = PluginModel()
    roles = model.param_roles()
    del roles["embed.weight"]
    roles["out.bias"] = "hidden"
    model.param_roles = lambda: roles
    with pytest.raises(InputError) as e:
        build_muon(MuonSpec(), model=model)
    assert "'embed.weight' has no role" in str(e.value)
    assert "'out.bias' is hidden but has 1 dimensions (Muon takes 2-D matrices only)" in str(e.value)


def test_its_state_dict_round_trips_and_an_adamw_state_is_refused():
    """One state dict holds both parts' state (Muon's momentum buffers, Adam's moments) and loads back into a
    fresh one; an AdamW optimizer's state dict is refused with a message that says so."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab_size=7))
    optimizer = build_muon(MuonSpec(), model=model)
    x = torch.randint(0, 7, (2, 4))
    model(x, x)[1].backward()
    optimizer.step()
    saved = optimizer.state_dict()
    hidden = optimizer.param_groups[0]["params"][0]
    assert "momentum_buffer" in optimizer.state[hidden] and "exp_avg" in optimizer.state[model.transformer.wte.weight]
    fresh = build_muon(MuonSpec(), model=model)
    fresh.load_state_dict(saved)
    assert fresh.parts[0].state is fresh.state and fresh.parts[1].param_groups[0] is fresh.param_groups[1]
    assert torch.equal(fresh.state[hidden]["momentum_buffer"], optimizer.state[hidden]["momentum_buffer"])
    # the spec's settings, not the saved ones, are what the run trains with from here
    other = build_muon(MuonSpec(adam_lr=1e-2, momentum=0.9), model=model)
    other.load_state_dict(saved)
    assert [g["base_lr"] for g in other.param_groups] == [0.02, 1e-2, 1e-2]
    assert other.param_groups[0]["momentum"] == 0.9 and other.parts[0].param_groups[0]["momentum"] == 0.9
    assert torch.equal(other.state[hidden]["momentum_buffer"], optimizer.state[hidden]["momentum_buffer"])
    adamw = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="has no roles: another optimizer.kind saved it"):
        fresh.load_state_dict(adamw.state_dict())


@settings(max_examples=20, deadline=None)
@given(
    shapes=st.lists(st.sampled_from([(8, 8), (24, 8), (8, 32), (32, 8), (5, 3)]), min_size=1, max_size=6),
    nesterov=st.booleans(),
    adjust=st.sampled_from(["original", "match_rms_adamw"]),
    decay=st.sampled_from([0.0, 0.1]),
    ns_steps=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_stacked_muon_takes_torchs_steps(shapes, nesterov, adjust, decay, ns_steps, seed):
    """StackedMuon orthogonalises every matrix of one shape in one batched product: its parameters and
    momentum buffers after several steps are torch.optim.Muon's, for any mix of shapes and settings
    (to bfloat16's rounding of the update, the precision both compute it in)."""
    generator = torch.Generator().manual_seed(seed)
    start = [torch.randn(shape, generator=generator) for shape in shapes]
    grads = [[torch.randn(shape, generator=generator) for shape in shapes] for _ in range(3)]
    settings_ = dict(lr=0.02, momentum=0.95, nesterov=nesterov, ns_steps=ns_steps, adjust_lr_fn=adjust, weight_decay=decay)
    results = []
    for kind in (torch.optim.Muon, StackedMuon):
        params = [nn.Parameter(t.clone()) for t in start]
        optimizer = kind(params, **settings_)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            optimizer.step()
        results.append((params, [optimizer.state[p]["momentum_buffer"] for p in params]))
    (torch_params, torch_buffers), (ours, our_buffers) = results
    for theirs, mine, buffer, our_buffer in zip(torch_params, ours, torch_buffers, our_buffers):
        assert torch.equal(buffer, our_buffer)  # float32 arithmetic, the same in both
        torch.testing.assert_close(mine, theirs, rtol=0, atol=3 * 0.02 * 2**-7)


def test_muon_spec_errors_name_the_field_and_the_value():
    """Bad Muon fields are reported one line each, with the field and the value found."""
    with pytest.raises(SpecError) as e:
        loads_spec('name = "x"\n[data]\ndataset = "d"\n[optimizer]\nkind = "muon"\nlr = 0\nns_steps = 0\n'
                   'adjust_lr_fn = "moonshot"\nmomentum = 1.0\nhead_lr = -1.0\n')
    assert e.value.report().splitlines()[1:] == [
        "  optimizer.lr: must be > 0.0 (got 0.0)",
        "  optimizer.momentum: must be < 1.0 (got 1.0)",
        "  optimizer.ns_steps: must be >= 1 (got 0)",
        "  optimizer.adjust_lr_fn: must be one of 'original', 'match_rms_adamw' (got 'moonshot')",
        "  optimizer.head_lr: must be > 0.0 (got -1.0)",
    ]


def test_check_refuses_muon_under_fsdp_and_says_why(tmp_path, capsys):
    """`check` of a Muon spec with system.parallel = "fsdp" exits 2 naming the field and the reason."""
    spec = tiny_spec(tmp_path, optimizer=MUON)
    assert main(["check", str(spec), "system.parallel=fsdp"]) == 2
    err = capsys.readouterr().err
    assert ("system.parallel: 'fsdp' cannot run optimizer.kind = 'muon' yet: Muon orthogonalises each whole weight "
            "matrix, and fsdp gives each process only a shard of it; use 'ddp'") in err
    assert main(["check", str(spec)]) == 0


def test_show_prints_the_group_sizes_without_importing_torch(tmp_path):
    """`show` of a Muon spec ends with each group's parameter count (TOML comments, so it still reads back as the
    same spec), computed from the spec alone: no torch is imported."""
    spec = tiny_spec(tmp_path, optimizer=MUON, model={"vocab_size": 39})
    code = (
        "import sys\n"
        "from nanogpt.cli import main\n"
        f"assert main(['show', {str(spec)!r}]) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env_with_plugins(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-3:] == [
        "# optimizer groups (parameters): hidden 24,576, embedding 2,272, other 896",  # 2,272: 39 x 32 + 32 x 32
        "# vocabulary: 39 (model.vocab_size)",
        "[]",
    ]
    shown = tmp_path / "shown.toml"
    shown.write_text("\n".join(lines[:-1]) + "\n")
    assert loads_spec(shown.read_text()) == loads_spec(spec.read_text())


def test_the_schedule_scales_every_group_by_one_factor(tmp_path):
    """Each logged step, each group's rate is its base rate times the schedule's multiplier (the logged lr over the
    peak lr), and the manifest records each group's size and base rate."""
    spec = tiny_spec(tmp_path, optimizer=MUON, train={"max_iters": 8, "eval_interval": 8}, logging={"tensorboard": False})
    assert main(["run", str(spec)]) == 0
    run = only_run_dir(tmp_path / "runs")
    manifest = json.loads((run / "manifest.json").read_text())
    groups = manifest["optimizer"]["groups"]
    assert [(g["role"], g["base_lr"]) for g in groups] == [("hidden", 0.02), ("embedding", 6e-3), ("other", 3e-3)]
    assert groups[0]["params"] == 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    assert len(train) == 8 and len({r["lr"] for r in train}) > 3  # warm-up and decay: the factor moves
    for r in train:
        factor = r["lr"] / 0.02
        assert r["group_lrs"] == pytest.approx({g["role"]: g["base_lr"] * factor for g in groups}, rel=1e-12)


# ----------------------------------------------------------------------------- exact resume

HALF, FULL = 6, 12


def split_and_straight(spec: Path, launch: list[str]) -> tuple[Path, Path]:
    """`spec` run to HALF then resumed to FULL, and run to FULL without a stop, each by `launch`."""
    def run(*args: str) -> None:
        done = subprocess.run([*launch, *args], env=env_with_plugins(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-6000:]

    run(str(spec), f"train.max_iters={HALF}")
    split = only_run_dir(spec.parent / "runs", spec.stem)
    run("--resume", str(split), f"train.max_iters={FULL}")
    run(str(spec), f"train.max_iters={FULL}", "logging.run_id=straight")
    return split, spec.parent / "runs" / spec.stem / "straight"


SPEC = dict(optimizer=MUON, model={"dropout": 0.1}, train={"eval_interval": HALF, "log_interval": 1},
            logging={"tensorboard": False})


@pytest.mark.slow
def test_a_resumed_muon_run_is_the_unbroken_one(tmp_path):
    """Stopped at a checkpoint and resumed, a Muon run logs the unbroken run's losses and ends with its weights, bit
    for bit: the momentum buffers and Adam's moments travel in the checkpoint."""
    split, straight = split_and_straight(tiny_spec(tmp_path, **SPEC), [sys.executable, "-m", "nanogpt", "run"])
    assert losses(split) == losses(straight)
    assert same_weights(final_weights(split), final_weights(straight))
    state = torch.load(next((split / "checkpoints").glob("*.pt")), weights_only=True)
    assert [g["role"] for g in state["optimizer"]["param_groups"]] == ["hidden", "embedding", "other"]


@pytest.mark.slow
def test_a_resumed_muon_run_under_ddp_is_the_unbroken_one(tmp_path):
    """The same under torchrun with 2 gloo processes: DDP averages the gradients, each rank orthogonalises the same
    matrices, and the resumed run equals the unbroken one bit for bit."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nanogpt.run"]
    split, straight = split_and_straight(tiny_spec(tmp_path, **SPEC), launch)
    assert losses(split) == losses(straight)
    assert same_weights(final_weights(split), final_weights(straight))
    assert json.loads((split / "manifest.json").read_text())["hardware"]["world_size"] == 2


@pytest.mark.slow
def test_an_adamw_checkpoint_resumed_with_muon_is_a_clear_error(tmp_path):
    """`--resume ... optimizer.kind=muon --force` of an AdamW run stops with a message that names the cause."""
    spec = tiny_spec(tmp_path, train={"max_iters": HALF, "eval_interval": HALF}, logging={"tensorboard": False})
    nanogpt("run", str(spec), check=True)
    run = only_run_dir(tmp_path / "runs")
    refused = nanogpt("run", "--resume", str(run), f"train.max_iters={FULL}", "optimizer.kind=muon")
    assert refused.returncode == 2 and "spec.optimizer.kind: 'adamw' -> 'muon'" in refused.stderr, refused.stderr
    forced = nanogpt("run", "--resume", str(run), f"train.max_iters={FULL}", "optimizer.kind=muon", "--force")
    assert forced.returncode != 0
    assert "is not this Muon optimizer's" in forced.stderr and "another optimizer.kind saved it" in forced.stderr, forced.stderr
    assert "Traceback" not in forced.stderr


@pytest.mark.slow
def test_a_muon_run_killed_with_sigkill_resumes_bit_identically(tmp_path):
    """SIGKILL at a random iteration after the first checkpoint, then --resume: the losses and weights of the run that
    never stopped (the AdamW kill test's helpers and its slow constant-rate schedule)."""
    from tests.training.test_distributed import SLOW, logged_iters, start_run, wait_for

    tables = dict(schedule=SLOW, optimizer=MUON, train={"max_iters": 30, "eval_interval": 10}, logging={"tensorboard": False})
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', **tables)
    unbroken = tiny_spec(tmp_path, name="unbroken", extra='plugins = ["faults"]', **tables)  # the name has no effect on results
    nanogpt("run", str(unbroken), check=True)
    straight = only_run_dir(tmp_path / "runs", "unbroken")
    kill_after = random.Random().randint(11, 28)
    proc = start_run(spec)
    wait_for(lambda: logged_iters(tmp_path / "runs") >= kill_after, what=f"iteration {kill_after}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = only_run_dir(tmp_path / "runs")
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"  # killed: no chance to say
    nanogpt("run", "--resume", str(run), check=True)
    assert losses(run) == losses(straight), f"killed after iteration {kill_after}"
    assert same_weights(final_weights(run), final_weights(straight))
