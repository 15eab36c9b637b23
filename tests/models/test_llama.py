"""The llama kind: transformers' LlamaForCausalLM as the oracle on random tiny configs, refusals of
variants it does not compute, its KV cache, and the parameter accounting it shares with GPT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt.config import sizes
from nanogpt.errors import InputError
from nanogpt.models.llama import Llama, LlamaConfig
from nanogpt.models.weights import from_hf_llama

VOCAB = 97


def hf_llama(path: Path, *, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, intermediate=48, block=64,
             tie=False, theta=10000.0, eps=1e-6, seed=0, **extra) -> transformers.LlamaForCausalLM:
    """A randomly initialised transformers Llama saved with save_pretrained at `path`: the local
    stand-in for a hub model."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=n_embd, intermediate_size=intermediate, num_hidden_layers=n_layer,
        num_attention_heads=n_head, num_key_value_heads=n_kv_head, max_position_embeddings=block,
        tie_word_embeddings=tie, rope_theta=theta, rms_norm_eps=eps, bos_token_id=None, eos_token_id=None,
        pad_token_id=None, **extra,
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(path)
    return hf


CONFIGS = {
    "mha-untied": dict(n_head=4, n_kv_head=4, tie=False),
    "gqa-tied": dict(n_head=4, n_kv_head=2, tie=True, theta=500.0),
    "mqa-untied": dict(n_head=4, n_kv_head=1, tie=False, eps=1e-5),
    "gqa-deep": dict(n_layer=3, n_head=8, n_kv_head=2, n_embd=64, intermediate=96, tie=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_and_loss_equal_transformers(tmp_path, name):
    """Loaded from a saved transformers Llama, logits and loss agree with LlamaForCausalLM to 1e-4 in float32."""
    hf = hf_llama(tmp_path, **CONFIGS[name])
    ours = from_hf_llama(str(tmp_path)).eval()
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == CONFIGS[name]["tie"]
    idx = torch.randint(0, VOCAB, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = ours(idx, all_logits=True)
        torch.testing.assert_close(logits, hf(idx).logits, rtol=0, atol=1e-4)
        _, loss = ours(idx[:, :-1], idx[:, 1:])
        torch.testing.assert_close(loss, hf(idx, labels=idx).loss, rtol=0, atol=1e-4)


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_kv_head=st.sampled_from([1, 2, 4]),
    tie=st.booleans(),
    theta=st.sampled_from([100.0, 10000.0, 500000.0]),
    T=st.integers(1, 32),
    seed=st.integers(0, 2**16),
)
def test_logits_property_any_small_config(tmp_path_factory, n_kv_head, tie, theta, T, seed):
    """For any head grouping, tying, rope_theta and length, our logits are transformers' to 1e-4."""
    path = tmp_path_factory.mktemp("llama")
    hf = hf_llama(path, n_kv_head=n_kv_head, tie=tie, theta=theta, seed=seed)
    ours = from_hf_llama(str(path)).eval()
    idx = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, all_logits=True)[0], hf(idx).logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["gqa-tied", "mha-untied"])
def test_greedy_generation_equals_transformers(tmp_path, name):
    """Greedy generation (KV cache on) matches transformers' greedy generate token for token."""
    hf = hf_llama(tmp_path, **CONFIGS[name])
    ours = from_hf_llama(str(tmp_path))
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    mine = ours.generate(prompt, 40, temperature=0.0)
    theirs = hf.generate(prompt, max_new_tokens=40, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert torch.equal(mine, theirs)


def test_kv_cache_matches_recomputation_past_the_block():
    """Sampling with the cache gives the cache-free tokens, also once the window slides past block_size."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, intermediate_size=64, block_size=16,
                              vocab_size=VOCAB))
    prompt = torch.randint(0, VOCAB, (3, 4))
    a = model.generate(prompt, 30, temperature=1.0, generator=torch.Generator().manual_seed(5))
    b = model.generate(prompt, 30, temperature=1.0, generator=torch.Generator().manual_seed(5), use_cache=False)
    assert torch.equal(a, b)


def test_causal():
    """Changing a later token never changes an earlier position's logits."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layer=2, n_head=2, n_kv_head=1, n_embd=16, intermediate_size=32, block_size=12,
                              vocab_size=VOCAB)).eval()
    idx = torch.randint(0, VOCAB, (1, 12))
    changed = idx.clone()
    changed[0, 7] = (idx[0, 7] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(idx, all_logits=True)[0], model(changed, all_logits=True)[0]
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("tie", [True, False])
def test_parameter_count_is_the_models(tie):
    """num_params(False) counts every tensor once; non-embedding leaves out only an untied token table."""
    c = LlamaConfig(n_layer=3, n_head=4, n_kv_head=2, n_embd=32, intermediate_size=80, block_size=8,
                    vocab_size=VOCAB, tie_embeddings=tie)
    model = Llama(c)
    total = sum(p.numel() for p in model.parameters())
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - (0 if tie else VOCAB * 32)
    assert model.flops_per_token() == 6 * model.num_params() + 12 * 3 * 32 * 8


def test_intermediate_size_as_llama_derives_it():
    """2/3 of 4·n_embd rounded up to 256: Llama 7B's 4096 -> 11008, transformers' default."""
    assert sizes.llama_intermediate_size(4096) == 11008 == transformers.LlamaConfig().intermediate_size
    assert sizes.llama_intermediate_size(384) == 1024
    assert sizes.llama_intermediate_size(64) == 256


def test_block_size_crop_and_dropout(tmp_path):
    """A model cropped to 16 positions gives transformers' logits on 16-token contexts; dropout is the caller's."""
    hf = hf_llama(tmp_path, **CONFIGS["gqa-tied"])
    ours = from_hf_llama(str(tmp_path), block_size=16, dropout=0.1).eval()
    assert ours.config.block_size == 16 and ours.config.dropout == 0.1
    idx = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, all_logits=True)[0], hf(idx).logits, rtol=0, atol=1e-4)
    with pytest.raises(InputError, match="exceeds the context"):
        from_hf_llama(str(tmp_path), block_size=65)


def test_bf16_and_sharded_files_load(tmp_path):
    """bf16 safetensors split over shards (with an index) load, as float32, to transformers' logits."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    hf = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = from_hf_llama(str(tmp_path)).eval()
    assert ours.lm_head.weight.dtype == torch.float32
    idx = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = hf.float()(idx).logits
        torch.testing.assert_close(ours(idx, all_logits=True)[0], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, "rope_parameters.rope_type"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling.rope_type"),
        ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0}}, "'llama3'"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"sliding_window": 4096}, "sliding_window"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"head_dim": 16}, "head_dim"),
        ({"model_type": "mistral"}, "model_type"),
    ],
)
def test_unsupported_variants_are_refused_naming_the_field(tmp_path, change, field):
    """A config this model would compute differently is refused with the field named, never mis-loaded."""
    hf_llama(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=field.replace(".", r"\.").replace("(", r"\(")) as e:
        from_hf_llama(str(tmp_path))
    assert str(tmp_path) in str(e.value)


def test_missing_weights_and_bin_only_are_refused(tmp_path):
    """A directory without safetensors is refused by name (a pytorch_model.bin would need unpickling)."""
    hf_llama(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError, match="no model.safetensors"):
        from_hf_llama(str(tmp_path))


def test_wrong_shapes_are_refused(tmp_path):
    """Weights that do not fit the config.json are an InputError naming the tensor."""
    hf_llama(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="gate_proj"):
        from_hf_llama(str(tmp_path))


# ------------------------------------------------------------------------ the spec's [model] table


def _spec(tmp_path: Path, model: str, data: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\n[model]\nkind = "llama"\n{model}\n[data]\n{data}\n', encoding="utf-8")
    return path


def hf_llama_with_tokenizer(path: Path, **sizes) -> str:
    """`hf_llama` with a BPE of its vocabulary saved beside it; returns the data.tokenizer line naming it."""
    from tests.data.test_hf_tokenizer import train_bpe
    from tests.tinyrun import write_corpus

    hf_llama(path, **sizes)
    train_bpe(path, write_corpus(path.parent / "corpus.txt"), vocab_size=VOCAB)
    return f'tokenizer = "hf:{path}"'


def test_spec_takes_the_architecture_from_a_hugging_face_llama(tmp_path):
    """A llama table naming a local Hugging Face Llama gets every architecture field from its config.json."""
    from nanogpt.config.load import load_spec

    tokenizer = hf_llama_with_tokenizer(tmp_path / "hf", **CONFIGS["gqa-tied"])
    exp, origin = load_spec(_spec(tmp_path, f'init_from = "{tmp_path / "hf"}"\nblock_size = 32', tokenizer))
    m = exp.model
    assert (m.n_layer, m.n_head, m.n_kv_head, m.n_embd, m.intermediate_size) == (2, 4, 2, 32, 48)
    assert (m.vocab_size, m.rope_theta, m.norm_eps, m.tie_embeddings, m.block_size) == (VOCAB, 500.0, 1e-6, True, 32)
    assert origin.source_of("model.n_kv_head") == f"pretrained {tmp_path / 'hf'}"


def test_spec_disagreeing_with_the_weights_is_reported_by_field(tmp_path):
    """Stated fields must equal the weights' (an int rope_theta is compared as a number); block_size only crops."""
    from nanogpt.config.problems import SpecError
    from nanogpt.config.load import load_spec

    tokenizer = hf_llama_with_tokenizer(tmp_path / "hf", **CONFIGS["gqa-tied"])
    stated = 'n_kv_head = 4\nrope_theta = 10000\nblock_size = 65\ntie_embeddings = false\nn_layer = 2'
    with pytest.raises(SpecError) as e:
        load_spec(_spec(tmp_path, f'init_from = "{tmp_path / "hf"}"\n{stated}', tokenizer))
    report = e.value.report()
    assert "model.n_kv_head: 4 must equal the pretrained model's (2), or be left out" in report
    assert "model.rope_theta: 10000 must equal the pretrained model's (500.0), or be left out" in report
    assert "model.block_size: 65 must not exceed the pretrained model's (64)" in report
    assert "model.tie_embeddings: false must equal the pretrained model's (true), or be left out" in report
    assert "n_layer" not in report and report.startswith(f"{tmp_path / 's.toml'}: 4 problems")


def test_check_refuses_an_unsupported_variant_naming_the_field(tmp_path):
    """`check` (torch-free) refuses a Llama with rope scaling, naming the config field, before any work."""
    from nanogpt.config.problems import SpecError
    from nanogpt.config.load import load_spec

    hf_llama(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SpecError) as e:
        load_spec(_spec(tmp_path, f'init_from = "{tmp_path / "hf"}"'))
    assert "model.init_from: " in e.value.report()
    assert "rope_parameters.rope_type is 'yarn' (only plain RoPE, 'default', is implemented)" in e.value.report()


def test_spec_cross_checks(tmp_path):
    """Head counts must divide and a head size must be even (RoPE rotates pairs)."""
    from nanogpt.config.problems import SpecError
    from nanogpt.config.load import load_spec

    with pytest.raises(SpecError) as e:
        load_spec(_spec(tmp_path, "n_head = 6\nn_kv_head = 4\nn_embd = 18"))
    assert e.value.report().splitlines()[1:] == [
        "  model.n_head: 6 must be divisible by model.n_kv_head (4)",
        "  model.n_embd: 18 / model.n_head (6) must be an even head size: RoPE rotates pairs",
    ]


def test_data_tokenized_otherwise_is_refused_for_a_pretrained_llama(tmp_path):
    """A Hugging Face Llama with its tokenizer.json takes data tokenized by that file only: char,
    gpt2 or another tokenizer.json is refused at check time, naming data.tokenizer."""
    from nanogpt.config.problems import SpecError
    from nanogpt.config.load import load_spec
    from tests.data.test_hf_tokenizer import train_bpe
    from tests.tinyrun import write_corpus

    hf_llama(tmp_path / "hf")
    corpus = write_corpus(tmp_path / "c.txt")
    train_bpe(tmp_path / "hf", corpus, vocab_size=VOCAB)
    train_bpe(tmp_path / "other", corpus, vocab_size=VOCAB, eos="<|endoftext|>")
    for tokenizer, expected in (("char", "'char' cannot give the ids"), ("gpt2", "'gpt2' cannot give the ids"),
                                (f"hf:{tmp_path / 'other'}", "is not the tokenizer of model.init_from")):
        path = tmp_path / "s.toml"
        path.write_text(f'name = "s"\n[model]\nkind = "llama"\ninit_from = "{tmp_path / "hf"}"\n'
                        f'[data]\ntokenizer = "{tokenizer}"\n', encoding="utf-8")
        with pytest.raises(SpecError) as e:
            load_spec(path)
        assert f"data.tokenizer: {tokenizer!r} " in e.value.report() and expected in e.value.report()
    path.write_text(f'name = "s"\n[model]\nkind = "llama"\ninit_from = "{tmp_path / "hf"}"\n'
                    f'[data]\ntokenizer = "hf:{tmp_path / "hf"}"\n', encoding="utf-8")
    assert load_spec(path)[0].data.tokenizer == f"hf:{tmp_path / 'hf'}"


def test_hub_id_offline_checks_and_fails_clearly_at_run(tmp_path, monkeypatch):
    """Offline, a hub id's architecture cannot be read: check accepts the stated fields, and loading
    the weights fails at once with a message naming the id and the way out."""
    from nanogpt.models.weights import build_llama
    from nanogpt.config.load import load_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    exp, _ = load_spec(_spec(tmp_path, 'init_from = "nobody/no-such-llama"\nn_layer = 30'))
    assert exp.model.n_layer == 30
    with pytest.raises(InputError, match="'nobody/no-such-llama'.*HF_HUB_OFFLINE is set"):
        build_llama(exp.model, vocab_size=100)


def test_activation_checkpointing_gives_the_same_gradients():
    """With checkpoint_blocks (system.activation_checkpointing = "blocks") loss and gradients are the same."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, intermediate_size=48, block_size=16,
                              vocab_size=VOCAB))
    idx = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    grads = []
    for on in (False, True):
        model.checkpoint_blocks = on
        model.zero_grad()
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
