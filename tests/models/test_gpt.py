"""The GPT model: causality, loss at initialisation, determinism, parameter counts, KV-cache generation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.config import sizes
from nanogpt.errors import InputError
from nanogpt.models.generation import sample_next
from nanogpt.models.gpt import GPT, GPTConfig, KVCache
from nanogpt.models.weights import build_gpt
from nanogpt.config.tables import GPTSpec


def tiny(vocab_size: int = 61, block_size: int = 16, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=block_size, vocab_size=vocab_size, **kw)
    return GPT(config).eval()


@pytest.fixture(scope="module")
def model() -> GPT:
    return tiny()


# ------------------------------------------------------------------------------ forward


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_changing_future_tokens_never_changes_past_logits(model, data):
    """Causality: logits at positions before t do not depend on tokens at t and after."""
    T = data.draw(st.integers(2, model.config.block_size), label="T")
    t = data.draw(st.integers(1, T - 1), label="t")
    tokens = st.lists(st.integers(0, model.config.vocab_size - 1), min_size=T, max_size=T)
    a = torch.tensor([data.draw(tokens, label="sequence")])
    b = a.clone()
    b[0, t:] = torch.tensor(data.draw(st.lists(st.integers(0, model.config.vocab_size - 1), min_size=T - t, max_size=T - t)))
    with torch.no_grad():
        la, _ = model(a, all_logits=True)
        lb, _ = model(b, all_logits=True)
    torch.testing.assert_close(la[:, :t], lb[:, :t], rtol=0, atol=1e-6)


@pytest.mark.parametrize("vocab_size, multiple", [(65, 64), (50257, 64), (97, 1)])
def test_loss_at_initialisation_is_near_ln_vocab(vocab_size, multiple):
    """With GPT-2's init the predictions start near uniform: loss ~ ln(vocab), padded rows excluded."""
    torch.manual_seed(0)
    config = GPTConfig(
        n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=vocab_size,
        padded_vocab_size=sizes.padded_vocab(vocab_size, multiple),
    )
    m = GPT(config)
    idx = torch.randint(0, vocab_size, (4, 32))
    targets = torch.randint(0, vocab_size, (4, 32))
    _, loss = m(idx, targets)
    assert loss.item() == pytest.approx(math.log(vocab_size), abs=0.05)


def test_padded_rows_are_never_scored_nor_returned():
    """With a padded vocabulary the logits have vocab_size columns and the loss ignores the padding rows."""
    torch.manual_seed(0)
    padded = tiny(vocab_size=100, padded_vocab_size=128)
    assert padded.lm_head.weight.shape[0] == 128
    idx = torch.randint(0, 100, (2, 16))
    logits, loss = padded(idx, idx)
    assert logits.shape == (2, 16, 100)
    # the same loss by hand over the 100 real columns only
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 100), idx.reshape(-1))
    torch.testing.assert_close(loss, expected)
    last, _ = padded(idx)
    assert last.shape == (2, 1, 100)


def test_inference_computes_only_the_last_position():
    """Without targets the logits are the last position's, equal to the full forward's last row."""
    m = tiny()
    idx = torch.randint(0, 61, (3, 10))
    with torch.no_grad():
        full, _ = m(idx, all_logits=True)
        last, loss = m(idx)
    assert loss is None and last.shape == (3, 1, 61)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_targets_minus_one_are_ignored():
    """Targets of -1 are left out of the mean, as in the seed."""
    m = tiny()
    idx = torch.randint(0, 61, (1, 8))
    targets = idx.clone()
    targets[0, 4:] = -1
    logits, loss = m(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits[0, :4], targets[0, :4])
    torch.testing.assert_close(loss, expected)


def test_eval_with_dropout_is_deterministic_and_training_is_not():
    """Eval mode (or dropout 0) gives identical outputs run to run; train mode with dropout does not."""
    m = tiny(dropout=0.3)
    idx = torch.randint(0, 61, (2, 16))
    m.eval()
    torch.testing.assert_close(m(idx, all_logits=True)[0], m(idx, all_logits=True)[0], rtol=0, atol=0)
    m.train()
    assert not torch.equal(m(idx, all_logits=True)[0], m(idx, all_logits=True)[0])
    no_dropout = tiny(dropout=0.0).train()
    torch.testing.assert_close(no_dropout(idx, all_logits=True)[0], no_dropout(idx, all_logits=True)[0], rtol=0, atol=0)


@pytest.mark.parametrize("block_size", [16, 48])
def test_cpu_bf16_attention_runs_in_float32_up_to_the_crossover(monkeypatch, block_size):
    """Under CPU bf16 autocast, short sequences take the float32 attention path, longer ones bf16 flash;
    both give the float32 model's loss and gradients to bf16 precision."""
    import nanogpt.models.gpt as model_module

    monkeypatch.setattr(model_module.CausalSelfAttention, "cpu_bf16_in_fp32_up_to", 32)
    seen: list[torch.dtype] = []
    sdpa = model_module.F.scaled_dot_product_attention

    def spy(q, *args, **kw):
        seen.append(q.dtype)
        return sdpa(q, *args, **kw)

    m = tiny(block_size=block_size).train()
    idx = torch.randint(0, 61, (3, block_size), generator=torch.Generator().manual_seed(1))
    _, reference = m(idx, idx)
    reference.backward()
    expected = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad(set_to_none=True)
    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = m(idx, idx)
    loss.backward()
    assert seen == [torch.float32 if block_size <= 32 else torch.bfloat16] * 2
    assert loss.item() == pytest.approx(reference.item(), rel=1e-2)
    for name, p in m.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], atol=2e-3, rtol=5e-2, msg=name)


def test_too_long_a_sequence_is_refused():
    """A sequence longer than the block raises a ValueError naming both lengths."""
    m = tiny(block_size=8)
    with pytest.raises(ValueError, match="length 9, the block size is only 8"):
        m(torch.zeros(1, 9, dtype=torch.long))


def test_same_seed_gives_the_same_weights_and_gpt2_init_scales_residuals():
    """Scratch init is a pure function of torch's seed; c_proj weights get std 0.02/sqrt(2*n_layer)."""
    spec = GPTSpec(n_layer=8, n_head=4, n_embd=128, block_size=32)
    torch.manual_seed(7)
    a = build_gpt(spec, vocab_size=65)
    torch.manual_seed(7)
    b = build_gpt(spec, vocab_size=65)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    c_proj = torch.cat([blk.mlp.c_proj.weight.flatten() for blk in a.transformer.h])
    assert c_proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert a.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert a.transformer.h[0].attn.c_attn.bias.abs().max().item() == 0.0


def test_pytorch_init_keeps_layer_defaults():
    """init = "pytorch" leaves nn.Linear's default uniform init (bounded by 1/sqrt(fan_in))."""
    torch.manual_seed(0)
    m = build_gpt(GPTSpec(n_layer=2, n_head=2, n_embd=64, block_size=16, init="pytorch"), vocab_size=65)
    w = m.transformer.h[0].mlp.c_fc.weight
    assert w.abs().max().item() <= 1 / math.sqrt(64)
    assert w.std().item() > 0.03  # far from GPT-2's 0.02


def test_weight_tying_shares_one_parameter():
    """Tied models hold the embedding and the head as one Parameter, listed once."""
    tied = tiny()
    assert tied.lm_head.weight is tied.transformer.wte.weight
    names = [n for n, _ in tied.named_parameters()]
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names
    untied = tiny(tie_weights=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight


def test_no_bias_model_has_no_biases():
    """bias=False drops every Linear and LayerNorm bias."""
    m = tiny(bias=False)
    assert not [n for n, _ in m.named_parameters() if n.endswith(".bias")]


# --------------------------------------------------------------------- counting parameters


@pytest.mark.parametrize(
    "n_layer, n_head, n_embd, block_size, vocab_size, multiple, bias, tie",
    [
        (1, 1, 8, 4, 10, 1, True, True),
        (2, 2, 32, 16, 65, 64, True, True),
        (3, 4, 48, 32, 50257, 64, True, True),
        (2, 2, 32, 16, 50257, 64, False, True),
        (2, 4, 64, 8, 1000, 8, True, False),
        (4, 2, 16, 64, 300, 1, False, False),
    ],
)
def test_parameter_count_formula_matches_the_instantiated_model(n_layer, n_head, n_embd, block_size, vocab_size, multiple, bias, tie):
    """sizes.model_params counts every tensor of the model (each shared one once); sizes.params counts
    all of them but the position table and, when untied, the token table: both equal the real numel sums."""
    padded = sizes.padded_vocab(vocab_size, multiple)
    config = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size,
                       padded_vocab_size=padded, bias=bias, tie_weights=tie)
    with torch.device("meta"):
        m = GPT(config)
    total = sum(p.numel() for p in m.parameters())  # parameters() yields a shared tensor once
    non_embedding = total - m.transformer.wpe.weight.numel() - (0 if tie else m.transformer.wte.weight.numel())
    shape = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=padded)
    assert m.num_params(non_embedding=False) == total == sizes.model_params(**shape, bias=bias, tie_weights=tie)
    assert m.num_params() == non_embedding == sizes.params(**shape, bias=bias)


def test_gpt2_124m_counts_and_flops():
    """GPT-2 124M: 124,439,808 parameters unpadded (123,653,376 without positions), and nanoGPT's FLOPs per token."""
    config = GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257)
    with torch.device("meta"):
        m = GPT(config)
    assert m.num_params(non_embedding=False) == 124_439_808
    assert m.num_params() == 123_653_376
    assert m.flops_per_token() == 6 * 123_653_376 + 12 * 12 * 12 * 64 * 1024
    # nanoGPT's estimate_mfu (now sizes.mfu, the one MFU) for one 1024-token sequence per second on an A100's 312 TFLOP/s
    assert sizes.mfu(m.flops_per_token(), tokens_per_sec=1024, peak_flops=312e12) == pytest.approx(m.flops_per_token() * 1024 / 312e12)


def test_arch_is_what_a_checkpoint_records():
    """GPT.arch() gives exactly the model_arch keys the runner stores: the [model] fields that fix the
    shapes (a padded table as the multiple that gives it), the architecture options, the kind and the real vocabulary."""
    m = tiny(vocab_size=50257, padded_vocab_size=50304, block_size=8)
    assert m.arch() == dict(kind="gpt", n_layer=2, n_head=2, n_embd=32, block_size=8, vocab_size=50257, bias=True,
                            tie_weights=True, padded_vocab_size=50304, pad_vocab_multiple=50304,
                            # the speedrun's options, at GPT-2's values (tests/models/test_gpt_options.py)
                            position="learned", rope_theta=10000.0, norm="layernorm", qk_norm=False, mlp="gelu",
                            logit_softcap=None, zero_init_residual=False)


def test_crop_block_size():
    """Cropping keeps the first positions' embeddings and the logits on a short context."""
    m = tiny(block_size=16)
    idx = torch.randint(0, 61, (2, 8))
    with torch.no_grad():
        before, _ = m(idx, all_logits=True)
    wpe = m.transformer.wpe.weight[:8].clone()
    m.crop_block_size(8)
    assert m.config.block_size == 8 and m.transformer.wpe.weight.shape == (8, 32)
    assert torch.equal(m.transformer.wpe.weight, wpe)
    with torch.no_grad():
        torch.testing.assert_close(m(idx, all_logits=True)[0], before)
    with pytest.raises(ValueError, match="block_size must be in 1..8"):
        m.crop_block_size(9)


def test_config_from_spec_pads_only_when_it_pays():
    """GPTConfig.from_spec pads 50257 to 50304 but leaves a 65-character vocabulary alone."""
    spec = GPTSpec(n_layer=1, n_head=1, n_embd=8, block_size=8)
    assert GPTConfig.from_spec(spec, 50257).padded_vocab_size == 50304
    assert GPTConfig.from_spec(spec, 65).padded_vocab_size == 65
    assert GPTConfig.from_spec(attrs_evolve(spec, pad_vocab_multiple=1), 50257).padded_vocab_size == 50257


def attrs_evolve(spec, **changes):
    import attrs

    return attrs.evolve(spec, **changes)


def test_build_gpt_scratch_vocab_rules():
    """From scratch the dataset's vocabulary is used; a spec vocab smaller than the data's is an InputError."""
    torch.manual_seed(0)
    m = build_gpt(GPTSpec(n_layer=1, n_head=1, n_embd=8, block_size=8, dropout=0.1), vocab_size=65)
    assert m.config.vocab_size == 65 and m.config.dropout == 0.1
    bigger = build_gpt(GPTSpec(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=100), vocab_size=65)
    assert bigger.config.vocab_size == 100
    with pytest.raises(InputError, match=r"model.vocab_size \(50\) is smaller than the dataset's vocabulary \(65\)"):
        build_gpt(GPTSpec(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=50), vocab_size=65)


# ------------------------------------------------------------------------------ generation


def generate_both(m: GPT, idx: torch.Tensor, n: int, seed: int | None = None, **kw):
    g1 = torch.Generator().manual_seed(seed) if seed is not None else None
    g2 = torch.Generator().manual_seed(seed) if seed is not None else None
    cached = m.generate(idx, n, generator=g1, use_cache=True, **kw)
    recomputed = m.generate(idx, n, generator=g2, use_cache=False, **kw)
    return cached, recomputed


def test_kv_cache_greedy_equals_full_recompute_past_the_block():
    """Greedy generation with the KV cache equals full recompute token for token, also past block_size."""
    m = tiny(block_size=16, seed=3)
    idx = torch.randint(0, 61, (3, 5))
    cached, recomputed = generate_both(m, idx, 40, temperature=0.0)
    assert cached.shape == (3, 45)
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("kw", [dict(), dict(top_k=5), dict(top_p=0.8, temperature=1.3), dict(top_k=10, top_p=0.5)])
def test_kv_cache_sampling_equals_full_recompute(kw):
    """Seeded sampling with the cache equals full recompute token for token, through and past the block."""
    m = tiny(block_size=16, seed=4)
    idx = torch.randint(0, 61, (2, 3))
    cached, recomputed = generate_both(m, idx, 30, seed=123, **kw)
    assert torch.equal(cached, recomputed)


def test_prompt_longer_than_the_block_is_cropped():
    """A prompt longer than block_size is conditioned on its last block_size tokens, with or without cache."""
    m = tiny(block_size=8, seed=5)
    idx = torch.randint(0, 61, (2, 20))
    cached, recomputed = generate_both(m, idx, 5, temperature=0.0)
    assert torch.equal(cached, recomputed)
    assert torch.equal(m.generate(idx[:, -8:], 1, temperature=0.0)[:, -1], cached[:, 20])


@settings(max_examples=15, deadline=None)
@given(chunks=st.lists(st.integers(1, 5), min_size=1, max_size=6))
def test_forward_in_chunks_through_the_cache_equals_one_forward(chunks):
    """Feeding a sequence through the KV cache in chunks of any sizes gives the logits of one full forward."""
    m = tiny(block_size=32, seed=6)
    T = sum(chunks)
    idx = torch.randint(0, 61, (2, T), generator=torch.Generator().manual_seed(T))
    cache = KVCache(m.config, batch_size=2)
    pieces, start = [], 0
    with torch.no_grad():
        full, _ = m(idx, all_logits=True)
        for n in chunks:
            logits, _ = m(idx[:, start:start + n], kv_cache=cache, all_logits=True)
            pieces.append(logits)
            start += n
    assert cache.length == T
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_same_seed_same_tokens_different_seed_different_tokens():
    """A torch.Generator with the same seed gives the same sample; another seed gives another."""
    m = tiny(seed=8)
    idx = torch.zeros(2, 1, dtype=torch.long)
    a = m.generate(idx, 30, generator=torch.Generator().manual_seed(1))
    b = m.generate(idx, 30, generator=torch.Generator().manual_seed(1))
    c = m.generate(idx, 30, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stream_yields_the_tokens_generate_returns():
    """generate_stream yields one (B,) tensor per step, and generate is their concatenation."""
    m = tiny(seed=9)
    idx = torch.randint(0, 61, (2, 4))
    steps = list(m.generate_stream(idx, 7, generator=torch.Generator().manual_seed(0)))
    assert len(steps) == 7 and all(s.shape == (2,) for s in steps)
    whole = m.generate(idx, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(whole[:, 4:], torch.stack(steps, dim=1))


def test_end_of_text_stops_each_row():
    """With eot_id a row pads with it once produced, matches the free run until then, and the stream ends when all rows have."""
    m = tiny(vocab_size=4, seed=10)
    idx = torch.zeros(3, 1, dtype=torch.long)
    free = m.generate(idx, 60, generator=torch.Generator().manual_seed(5))
    stopped = m.generate(idx, 60, eot_id=3, generator=torch.Generator().manual_seed(5))
    assert stopped.size(1) < free.size(1)  # every row met token 3 long before 60 steps
    for row in range(3):
        gen = stopped[row, 1:].tolist()
        first = gen.index(3)
        assert gen[: first + 1] == free[row, 1 : first + 2].tolist()
        assert all(t == 3 for t in gen[first:])
    assert (stopped[:, -1] == 3).all()


def test_top_k_one_and_tiny_top_p_are_greedy():
    """top_k=1 and a tiny top_p leave only the likeliest token: the same as temperature 0."""
    m = tiny(seed=11)
    idx = torch.randint(0, 61, (2, 3))
    greedy = m.generate(idx, 12, temperature=0.0)
    assert torch.equal(m.generate(idx, 12, top_k=1, generator=torch.Generator().manual_seed(0)), greedy)
    assert torch.equal(m.generate(idx, 12, top_p=1e-6, generator=torch.Generator().manual_seed(0)), greedy)


def test_top_p_keeps_the_smallest_nucleus():
    """top_p keeps the likeliest tokens until their mass reaches p, and samples only among them."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, top_p=0.8, generator=g).item() for _ in range(300)}
    assert draws == {0, 1}
    draws = {sample_next(logits, top_p=0.81, generator=g).item() for _ in range(300)}
    assert draws == {0, 1, 2}


def test_generation_restores_training_mode():
    """The model is put in eval mode for generation and back to training afterwards."""
    m = tiny(dropout=0.5).train()
    m.generate(torch.zeros(1, 1, dtype=torch.long), 3)
    assert m.training


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(temperature=-1.0), "temperature must be 0"),
        (dict(top_p=0.0), "top_p must be in"),
        (dict(top_k=-2), "top_k must be at least 1"),
    ],
)
def test_bad_sampling_arguments_are_input_errors(kw, message):
    """Bad sampling settings raise InputError with the value."""
    m = tiny()
    with pytest.raises(InputError, match=message):
        m.generate(torch.zeros(1, 1, dtype=torch.long), 2, **kw)


def test_zero_new_tokens_returns_the_prompt():
    """max_new_tokens=0 returns the prompt unchanged."""
    m = tiny()
    idx = torch.randint(0, 61, (2, 3))
    assert torch.equal(m.generate(idx, 0), idx)
