"""The GPT kind's speedrun options (position, norm, qk_norm, mlp, logit_softcap, zero_init_residual):
each against a forward written here independently (transformers' Llama parts where they coincide),
cached generation against recomputation for every combination, the defaults bit for bit as before
the options existed, the checkpoint's arch record, and the spec's refusals."""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F
from transformers.models.llama import modeling_llama

from nanogpt.config import sizes
from nanogpt.models.gpt import GPT, GPTConfig
from nanogpt.models.weights import rebuild

OPTIONS = dict(
    position=("learned", "rope"), norm=("layernorm", "rmsnorm"), qk_norm=(False, True),
    mlp=("gelu", "relu2", "swiglu"), logit_softcap=(None, 3.0), zero_init_residual=(False, True),
)
EPS = 1e-5


def combos() -> list[dict]:
    return [dict(zip(OPTIONS, values)) for values in itertools.product(*OPTIONS.values())]


def tiny(seed: int = 0, padded: int = 40, **options) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=37, padded_vocab_size=padded, **options)
    return GPT(cfg).eval()


def _llama_config(model: GPT) -> transformers.LlamaConfig:
    c = model.config
    return transformers.LlamaConfig(
        hidden_size=c.n_embd, intermediate_size=c.mlp_hidden, num_attention_heads=c.n_head,
        num_key_value_heads=c.n_head, max_position_embeddings=c.block_size, rope_theta=c.rope_theta,
        rms_norm_eps=EPS, mlp_bias=c.bias, hidden_act="silu",
    )


def reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The model's forward written out from its parameters: GPT-2's formulas, and for the options
    transformers' LlamaRMSNorm, LlamaMLP and apply_rotary_pos_emb where they are the same function."""
    c, sd = model.config, dict(model.named_parameters(remove_duplicate=False))
    B, T = idx.shape
    hs = c.n_embd // c.n_head
    llama = _llama_config(model)

    def norm(x, prefix):
        if c.norm == "rmsnorm":
            ref = modeling_llama.LlamaRMSNorm(c.n_embd, eps=EPS)
            ref.weight.data.copy_(sd[prefix + ".weight"])
            return ref(x)
        return F.layer_norm(x, (c.n_embd,), sd[prefix + ".weight"], sd.get(prefix + ".bias"), eps=EPS)

    def linear(x, prefix):
        return x @ sd[prefix + ".weight"].T + (sd[prefix + ".bias"] if prefix + ".bias" in sd else 0)

    x = sd["transformer.wte.weight"][idx]
    if c.position == "learned":
        x = x + sd["transformer.wpe.weight"][:T]
    else:
        rotary = modeling_llama.LlamaRotaryEmbedding(llama)
        cos, sin = rotary(x, torch.arange(T).unsqueeze(0))  # (1, T, hs)
    for i in range(c.n_layer):
        p = f"transformer.h.{i}."
        h = norm(x, p + "ln_1")
        q, k, v = linear(h, p + "attn.c_attn").split(c.n_embd, dim=2)
        q, k, v = (t.view(B, T, c.n_head, hs).transpose(1, 2) for t in (q, k, v))
        if c.qk_norm:
            q = q / torch.sqrt(q.pow(2).mean(-1, keepdim=True) + EPS)
            k = k / torch.sqrt(k.pow(2).mean(-1, keepdim=True) + EPS)
        if c.position == "rope":
            q, k = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, c.n_embd)
        x = x + linear(y, p + "attn.c_proj")
        h = norm(x, p + "ln_2")
        if c.mlp == "swiglu":
            mlp = modeling_llama.LlamaMLP(llama)
            mlp.gate_proj.weight.data.copy_(sd[p + "mlp.c_gate.weight"])
            mlp.up_proj.weight.data.copy_(sd[p + "mlp.c_fc.weight"])
            mlp.down_proj.weight.data.copy_(sd[p + "mlp.c_proj.weight"])
            if c.bias:
                mlp.gate_proj.bias.data.copy_(sd[p + "mlp.c_gate.bias"])
                mlp.up_proj.bias.data.copy_(sd[p + "mlp.c_fc.bias"])
                mlp.down_proj.bias.data.copy_(sd[p + "mlp.c_proj.bias"])
            x = x + mlp(h)
        else:
            u = linear(h, p + "mlp.c_fc")
            if c.mlp == "relu2":
                u = torch.clamp(u, min=0) ** 2
            else:  # GPT-2's gelu_new
                u = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))
            x = x + linear(u, p + "mlp.c_proj")
    logits = norm(x, "transformer.ln_f") @ sd["lm_head.weight"].T
    if c.logit_softcap is not None:
        logits = c.logit_softcap * torch.tanh(logits / c.logit_softcap)
    return logits[..., : c.vocab_size]


def _perturbed(model: GPT) -> GPT:
    # zero-initialised projections and unit gains hide mistakes: make every parameter count
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("options", combos(), ids=lambda o: "-".join(map(str, o.values())))
def test_forward_equals_the_reference(options):
    """Every combination of options computes what its formulas (and transformers' Llama parts) say, to 1e-5."""
    for bias in (True, False) if options["mlp"] == "swiglu" else (True,):
        torch.manual_seed(1)
        cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=37, padded_vocab_size=40,
                        bias=bias, **options)
        model = _perturbed(GPT(cfg).eval())
        idx = torch.randint(0, 37, (2, 9))
        logits, _ = model(idx, all_logits=True)
        with torch.no_grad():
            expected = reference_logits(model, idx)
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_softcap_bounds_the_logits_and_keeps_the_padding_out():
    """cap * tanh(logits / cap): every logit within [-cap, cap], and the padded rows (37..39) out of the loss."""
    model = _perturbed(tiny(logit_softcap=0.5))
    idx = torch.randint(0, 37, (2, 9))
    with torch.no_grad():
        model.lm_head.weight.mul_(100)  # logits far beyond the cap
        logits, loss = model(idx, idx)
        uncapped = GPT(attrs_evolve(model.config, logit_softcap=None))
        uncapped.load_state_dict(model.state_dict())
        raw, _ = uncapped.eval()(idx, all_logits=True)
    assert logits.shape[-1] == 37 and logits.abs().max() <= 0.5 and raw.abs().max() > 5
    torch.testing.assert_close(logits, 0.5 * torch.tanh(raw / 0.5))
    # had the cap turned the padding's -inf into -0.5, three more rows would share the probability
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 37), idx.reshape(-1)))


def attrs_evolve(config, **changes):
    import attrs

    return attrs.evolve(config, **changes)


def test_zero_init_residual_starts_every_block_as_the_identity():
    model = tiny(zero_init_residual=True)
    projections = [m for n, m in model.named_modules() if n.endswith(".c_proj")]
    assert len(projections) == 4 and all(not p.weight.any() and not p.bias.any() for p in projections)
    x = torch.randn(2, 5, 16)
    for block in model.transformer.h:
        torch.testing.assert_close(block(x), x, atol=0, rtol=0)
    # the other weights are GPT-2's init as before: the same draws as without the option
    plain = dict(tiny().named_parameters())
    for name, p in model.named_parameters():
        if ".c_proj." not in name:
            assert torch.equal(p, plain[name]), name


def test_rope_and_swiglu_sizes():
    """RoPE has no position table; SwiGLU's width is Llama's rule (2/3 of 4 * n_embd, rounded up to 256)."""
    model = tiny(position="rope", mlp="swiglu")
    names = {n for n, _ in model.named_parameters()}
    assert "transformer.wpe.weight" not in names and "transformer.h.0.mlp.c_gate.weight" in names
    assert model.transformer.h[0].mlp.c_fc.out_features == sizes.llama_intermediate_size(16) == 256
    assert sizes.gpt_mlp_hidden(384, "swiglu") == 1024 and sizes.gpt_mlp_hidden(768, "swiglu") == 2048
    assert sizes.gpt_mlp_hidden(384, "relu2") == sizes.gpt_mlp_hidden(384) == 1536


def _fingerprint(**kw) -> str:
    torch.manual_seed(1234)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=37, padded_vocab_size=40, **kw)
    m = GPT(cfg).eval()
    idx = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(5))
    logits, loss = m(idx, idx)
    h = hashlib.sha256()
    for k, v in m.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    h.update(logits.detach().contiguous().numpy().tobytes())
    h.update(loss.detach().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("kw, digest", [
    ({}, "f4afdb45448468f89ece0adff6160d5cb45644b1c44847f3b44ff5be4a6d6e58"),
    ({"bias": False, "tie_weights": False}, "9b9892470bd667f9906ddd1300f76f66e4e381e463af0f128ef351e54fe29154"),
    ({"init": "pytorch"}, "b26641ee980a5996dd8a51d4cc687239a1b6e371532e293e025d6477ae1010ea"),
])
def test_defaults_are_bit_identical_to_the_model_before_the_options(kw, digest):
    """Weights (names, init draws) and logits and loss, hashed: the digests were computed with the
    model as it was before the options existed (torch 2.13, CPU float32)."""
    assert _fingerprint(**kw) == digest


@settings(max_examples=25, deadline=None)
@given(
    options=st.sampled_from(combos()),
    n_head=st.sampled_from([1, 2]),
    bias=st.booleans(),
    prompt=st.integers(1, 6),
    new=st.integers(1, 14),
    seed=st.integers(0, 2**16),
)
def test_cached_greedy_generation_equals_recomputation(options, n_head, bias, prompt, new, seed):
    """KV-cache greedy generation == recomputing every step, for every option (RoPE at the cache's
    offset), also past the block size where the window slides."""
    torch.manual_seed(seed)
    cfg = GPTConfig(n_layer=2, n_head=n_head, n_embd=8, block_size=8, vocab_size=11, bias=bias, **options)
    model = _perturbed(GPT(cfg).eval())
    idx = torch.randint(0, 11, (2, prompt))
    cached = model.generate(idx, new, top_k=1, use_cache=True)
    recomputed = model.generate(idx, new, top_k=1, use_cache=False)
    assert torch.equal(cached, recomputed)


@settings(max_examples=30, deadline=None)
@given(options=st.sampled_from(combos()), chunks=st.lists(st.integers(1, 3), min_size=2, max_size=4), seed=st.integers(0, 99))
def test_forward_in_chunks_through_the_cache_equals_one_forward(options, chunks, seed):
    """Chunks of any sizes fed through the KV cache give one full forward's logits, for every option:
    RoPE rotates each chunk at its place in the sequence (the cache's length), not from 0."""
    model = _perturbed(tiny(seed=seed, **options))
    idx = torch.randint(0, 37, (2, sum(chunks)), generator=torch.Generator().manual_seed(seed))
    cache, pieces, start = model.new_kv_cache(2), [], 0
    with torch.no_grad():
        full, _ = model(idx, all_logits=True)
        for n in chunks:
            pieces.append(model(idx[:, start:start + n], kv_cache=cache, all_logits=True)[0])
            start += n
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [
    dict(position="rope", rope_theta=500.0, norm="rmsnorm", qk_norm=True, mlp="swiglu", logit_softcap=15.0,
         zero_init_residual=True),
    dict(mlp="relu2"),
])
def test_the_arch_record_rebuilds_the_same_model(options):
    model = tiny(padded=37, **options)
    arch = model.arch()
    assert {k: arch[k] for k in options} == options
    again = rebuild(arch)
    assert again.config == model.config
    again.load_state_dict(model.state_dict())  # the same tensors, names and shapes


def test_an_old_arch_record_rebuilds_gpt2():
    """A checkpoint written before the options recorded none of them: it rebuilds GPT-2's blocks."""
    model = tiny(padded=37)
    arch = {k: v for k, v in model.arch().items() if k not in model.config.options()}
    assert "position" not in arch and "norm" not in arch
    assert rebuild(arch).config == model.config


def _spec(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\n[model]\nkind = "gpt"\nvocab_size = 50\n{model}\n[data]\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("model, problem", [
    ('position = "rope"\nn_embd = 18\nn_head = 2',
     "model.position: 'rope' needs an even head size, but model.n_embd / model.n_head = 18 / 2 = 9: RoPE rotates pairs"),
    ('mlp = "swish"', "model.mlp"),
    ('norm = "batchnorm"', "model.norm"),
    ('position = "alibi"', "model.position"),
    ("logit_softcap = 0.0", "model.logit_softcap"),
    ("rope_theta = -1.0", "model.rope_theta"),
])
def test_spec_refuses_bad_options_naming_field_and_value(tmp_path, model, problem):
    from nanogpt.config.load import load_spec
    from nanogpt.config.problems import SpecError

    with pytest.raises(SpecError) as e:
        load_spec(_spec(tmp_path, model))
    report = e.value.report()
    assert problem in report
    value = model.split("\n")[0].split(" = ")[1]
    assert value.strip('"') in report


def test_config_refuses_an_odd_head_size_for_rope():
    with pytest.raises(ValueError, match=r"position = 'rope' needs an even head size n_embd / n_head \(got 3\)"):
        GPTConfig(n_layer=1, n_head=2, n_embd=6, block_size=4, vocab_size=5, position="rope")


# ------------------------------------------------------------------------------------ counts


@pytest.mark.parametrize("options", combos()[::5] + [dict(position="rope", norm="rmsnorm", mlp="swiglu")],
                         ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("bias, tie", [(True, True), (False, False)])
def test_counts_are_the_models_tensors(options, bias, tie):
    """sizes' params / model_params / role counts equal the model's real tensors for every option."""
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=37, bias=bias, tie_weights=tie, **options)
    with torch.device("meta"):
        model = GPT(cfg)
    named = dict(model.named_parameters())
    total = sum(p.numel() for p in named.values())
    shape = dict(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=37)
    assert total == model.num_params(non_embedding=False) == sizes.model_params(
        **shape, bias=bias, tie_weights=tie, **options)
    table = named.get("transformer.wpe.weight")
    untied = 0 if tie else named["transformer.wte.weight"].numel()
    assert model.num_params() == total - (table.numel() if table is not None else 0) - untied
    by_role: dict[str, int] = {}
    for name, role in model.param_roles().items():
        by_role[role] = by_role.get(role, 0) + named[name].numel()
    counted = sizes.gpt_role_params(**shape, padded_vocab_size=37, bias=bias, tie_weights=tie, **options)
    assert {k: v for k, v in counted.items() if v} == by_role


def test_chinchilla_mlp_term_is_the_mlps_matmuls():
    """The SwiGLU MLP's FLOPs (real width) are 2 * 3 (fwd+bwd) * T * its weight elements, per layer."""
    model = tiny(mlp="swiglu")
    mlp_weights = sum(m.weight.numel() for m in model.transformer.h[0].mlp.modules() if isinstance(m, torch.nn.Linear))
    shape = dict(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=37)
    h = sizes.gpt_mlp_hidden(16, "swiglu")
    with_mlp = sizes.chinchilla_flops(**shape, ffw_size=h, mlp_matrices=3)
    assert with_mlp - sizes.chinchilla_flops(**shape, ffw_size=0) == 2 * 3 * 12 * 2 * mlp_weights


MODERN = 'n_layer = 2\nn_head = 2\nn_embd = 32\nblock_size = 16\nposition = "rope"\nmlp = "swiglu"\nnorm = "rmsnorm"\nqk_norm = true'


def test_scaling_params_counts_the_options(tmp_path, capsys):
    import json

    from nanogpt.cli import main

    path = _spec(tmp_path, MODERN)
    assert main(["scaling", "params", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, position="rope", mlp="swiglu",
                    norm="rmsnorm", qk_norm=True)
    with torch.device("meta"):
        model = GPT(cfg)
    assert report["params_model_total"] == sum(p.numel() for p in model.parameters())
    assert report["params_model_non_embedding"] == model.num_params()
    assert report["flops_per_token_mfu"] == model.flops_per_token()


def test_scaling_memory_plans_the_options(tmp_path, capsys):
    """`scaling memory` plans a spec with the options (once refused): the ddp row's state is the
    model's own tensors, and its activations are the planner's count for these options (which
    tests/perf/test_memory.py checks against autograd), not GPT-2's."""
    import json

    from nanogpt.cli import main
    from nanogpt.perf import memory

    assert main(["scaling", "memory", str(_spec(tmp_path, MODERN)), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ddp, batch, half = report["rows"][0], report["micro_batch"], report["precision"] == "16-bit"
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, position="rope", mlp="swiglu",
                    norm="rmsnorm", qk_norm=True)
    with torch.device("meta"):
        n = sum(p.numel() for p in GPT(cfg).parameters())
    assert (ddp["parallel"], ddp["params"], ddp["grads"], ddp["optimizer"]) == ("ddp", 4 * n, 8 * n, 8 * n)
    s = memory.GPTSizes(**cfg.sizes(), bias=cfg.bias, tie_weights=cfg.tie_weights, **cfg.options())
    plain = memory.GPTSizes(**cfg.sizes())
    expected = memory.activation_bytes(s, batch, half, checkpointing=False, weight_copies=True)
    assert ddp["activations"] == expected != memory.activation_bytes(plain, batch, half, checkpointing=False, weight_copies=True)


def test_checks_fit_warning_plans_the_options(tmp_path, monkeypatch):
    """On a machine with a (tiny) GPU the fit warning plans a model with the options as it plans
    GPT-2's, each with its own figure."""
    from nanogpt.config.load import load_spec
    from nanogpt.perf import memory, scaling

    monkeypatch.setattr(memory, "local_gpus", lambda: [("tiny GPU", 1)])
    exp, _ = load_spec(_spec(tmp_path, MODERN))
    modern = scaling.fit_warning(exp, "s.toml")
    plain, _ = load_spec(_spec(tmp_path, "n_layer = 2\nn_head = 2\nn_embd = 32\nblock_size = 16"))
    gpt2 = scaling.fit_warning(plain, "s.toml")
    assert "needs about" in modern and "needs about" in gpt2 and modern != gpt2


# ------------------------------------------------------------------------------------ export


def test_export_takes_relu2_and_zero_init_as_gpt2(tmp_path):
    """relu2 is transformers' "relu2" activation and zero init only a start: GPT2LMHeadModel gives the same logits."""
    from nanogpt.models.export import export_hf

    model = _perturbed(tiny(padded=37, mlp="relu2", zero_init_residual=True))
    export_hf(model, None, tmp_path / "out")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    idx = torch.randint(0, 37, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx, all_logits=True)[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("options, named", [
    (dict(position="rope"), 'model.position = "rope"'),
    (dict(norm="rmsnorm"), 'model.norm = "rmsnorm"'),
    (dict(qk_norm=True), "model.qk_norm = true"),
    (dict(mlp="swiglu"), 'model.mlp = "swiglu"'),
    (dict(logit_softcap=15.0), "model.logit_softcap = 15.0"),
])
def test_export_refuses_what_gpt2_cannot_compute_naming_the_option(tmp_path, options, named):
    from nanogpt.errors import InputError
    from nanogpt.models.export import export_hf

    with pytest.raises(InputError, match="GPT2LMHeadModel") as e:
        export_hf(tiny(padded=37, **options), None, tmp_path / "out")
    assert named in str(e.value)
    assert not (tmp_path / "out").exists()


def test_export_names_every_option_it_refuses(tmp_path):
    from nanogpt.errors import InputError
    from nanogpt.models.export import export_hf

    with pytest.raises(InputError) as e:
        export_hf(tiny(padded=37, position="rope", mlp="swiglu"), None, tmp_path / "out")
    assert 'model.position = "rope"' in str(e.value) and 'model.mlp = "swiglu"' in str(e.value)


def test_scaling_memory_plans_options_that_change_no_tensor(tmp_path, capsys):
    """zero_init_residual (a start) and rope_theta (angles) save the same tensors: planned, same figures as without."""
    from nanogpt.cli import main

    plain = "n_layer = 2\nn_head = 2\nn_embd = 32\nblock_size = 16"
    assert main(["scaling", "memory", str(_spec(tmp_path, plain)), "--json"]) == 0
    expected = capsys.readouterr().out
    assert main(["scaling", "memory", str(_spec(tmp_path, plain + "\nzero_init_residual = true\nrope_theta = 500.0")),
                 "--json"]) == 0
    assert capsys.readouterr().out == expected


def test_crop_block_size_with_rope_keeps_the_logits():
    """RoPE has no table to cut: a model cropped to 6 positions gives the uncropped logits on 6 tokens."""
    model = _perturbed(tiny(position="rope", qk_norm=True))
    idx = torch.randint(0, 37, (2, 6))
    with torch.no_grad():
        before, _ = model(idx, all_logits=True)
        model.crop_block_size(6)
        after, _ = model(idx, all_logits=True)
    assert model.rope_cos.shape == (6, 8) and model.config.block_size == 6
    torch.testing.assert_close(after, before, rtol=0, atol=0)
