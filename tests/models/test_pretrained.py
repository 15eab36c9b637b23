"""Pretrained weights: a local Hugging Face GPT-2 (transformers as the oracle), nanoGPT's ckpt.pt, our checkpoints, unsafe pickles."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys
from pathlib import Path

import attrs
import pytest
import torch
import transformers

from nanogpt.checkpoints.state import FORMAT
from nanogpt.errors import InputError
from nanogpt.models.gpt import GPT, GPTConfig
from nanogpt.models.weights import build_gpt, from_hf, load_pretrained
from nanogpt.config.problems import SpecError
from nanogpt.config.load import load_spec
from nanogpt.config.tables import GPTSpec
from tests.conftest import REPO


HF_SIZES = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)


@pytest.fixture(scope="module")
def hf_model(hf_dir):
    return transformers.GPT2LMHeadModel.from_pretrained(hf_dir, local_files_only=True).eval()


def load_seed_module():
    path = REPO / "benchmarks" / "seed_model.py"
    if "seed_model" not in sys.modules:
        spec = importlib.util.spec_from_file_location("seed_model", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["seed_model"] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules["seed_model"]


# ----------------------------------------------------------------------- Hugging Face GPT-2


@pytest.mark.parametrize("pad", [1, 64])
def test_logits_equal_transformers(hf_dir, hf_model, pad):
    """Our model loaded from a local HF GPT-2 gives transformers' logits to 1e-5, padded vocabulary or not."""
    ours = from_hf(str(hf_dir), pad_vocab_multiple=pad).eval()
    assert ours.config.padded_vocab_size == (50304 if pad == 64 else 50257)
    assert ours.lm_head.weight is ours.transformer.wte.weight
    idx = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = ours(idx, all_logits=True)
        expected = hf_model(idx).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    # and the loss, which the padding rows must not change
    with torch.no_grad():
        _, loss = ours(idx[:, :-1], idx[:, 1:])
        hf_loss = hf_model(idx, labels=idx).loss
    torch.testing.assert_close(loss, hf_loss, rtol=0, atol=1e-5)


def test_greedy_generation_equals_transformers(hf_dir, hf_model):
    """Greedy generation matches transformers' greedy generate token for token."""
    ours = from_hf(str(hf_dir), pad_vocab_multiple=64)
    prompt = torch.randint(0, 50257, (2, 6), generator=torch.Generator().manual_seed(1))
    mine = ours.generate(prompt, 30, temperature=0.0)
    theirs = hf_model.generate(prompt, max_new_tokens=30, do_sample=False, pad_token_id=50256,
                               attention_mask=torch.ones_like(prompt))
    assert torch.equal(mine, theirs)


def test_cropped_block_size_matches_on_the_cropped_context(hf_dir, hf_model):
    """A model cropped to block 16 keeps 16 positions and gives transformers' logits on 16-token contexts."""
    ours = from_hf(str(hf_dir), block_size=16, dropout=0.2).eval()
    assert ours.config.block_size == 16 and ours.transformer.wpe.weight.shape == (16, 32)
    assert ours.config.dropout == 0.2
    idx = torch.randint(0, 50257, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, all_logits=True)[0], hf_model(idx).logits, rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="exceeds the block size"):
        from_hf(str(hf_dir), block_size=65)


def test_untied_hf_model_stays_untied(tmp_path):
    """A HF GPT-2 saved with tie_word_embeddings=false loads with its own head, logits equal."""
    torch.manual_seed(3)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**HF_SIZES, "vocab_size": 300}, tie_word_embeddings=False))
    with torch.no_grad():
        hf.lm_head.weight.normal_()
    hf.save_pretrained(tmp_path)
    ours = from_hf(str(tmp_path)).eval()
    assert not ours.config.tie_weights and ours.lm_head.weight is not ours.transformer.wte.weight
    idx = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, all_logits=True)[0], hf.eval()(idx).logits, rtol=0, atol=1e-5)


def test_unsupported_hf_variant_is_refused(tmp_path):
    """A GPT-2 variant with another activation is an InputError naming it."""
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_SIZES, activation_function="relu"))
    hf.save_pretrained(tmp_path)
    with pytest.raises(InputError, match="activation_function 'relu'"):
        from_hf(str(tmp_path))


def test_unknown_name_is_refused():
    """A name that is neither a directory nor gpt2* is an InputError listing the names."""
    with pytest.raises(InputError, match="gpt2, gpt2-medium, gpt2-large, gpt2-xl"):
        from_hf("gpt3")


# ------------------------------------------------------------------------------- build_gpt


def test_build_gpt_from_hf_dir_crops_and_sets_dropout(hf_dir):
    """build_gpt with init_from a HF dir loads the weights, crops to spec.block_size and takes the spec's dropout."""
    spec = GPTSpec(n_layer=2, n_head=2, n_embd=32, block_size=32, dropout=0.1, init_from=str(hf_dir))
    m = build_gpt(spec, vocab_size=50257)
    assert (m.config.block_size, m.config.dropout, m.config.padded_vocab_size) == (32, 0.1, 50304)


def test_build_gpt_refuses_a_dataset_with_another_vocabulary(hf_dir):
    """GPT-2 weights with a 65-character dataset is an InputError naming both vocabularies."""
    spec = GPTSpec(n_layer=2, n_head=2, n_embd=32, block_size=64, init_from=str(hf_dir))
    with pytest.raises(InputError, match=r"vocabulary of 50257 tokens, but the dataset has 65"):
        build_gpt(spec, vocab_size=65)


def test_build_gpt_refuses_weights_that_contradict_the_spec(hf_dir):
    """Weights whose architecture differs from the spec's stated sizes are an InputError naming the field."""
    spec = GPTSpec(n_layer=3, n_head=2, n_embd=32, block_size=64, init_from=str(hf_dir))
    with pytest.raises(InputError, match=r"model.n_layer is 3 but the weights have 2"):
        build_gpt(spec, vocab_size=50257)


def test_spec_half_fills_the_architecture_from_a_hf_dir(hf_dir, tmp_path):
    """A spec naming only init_from gets the sizes from config.json, and build_gpt builds it."""
    spec_file = tmp_path / "ft.toml"
    spec_file.write_text(f'name = "ft"\n[model]\ninit_from = "{hf_dir}"\nblock_size = 32\n', encoding="utf-8")
    exp, _ = load_spec(spec_file)
    m = build_gpt(exp.model, vocab_size=50257)
    assert (m.config.n_layer, m.config.n_embd, m.config.block_size) == (2, 32, 32)


# -------------------------------------------------------------------------- nanoGPT ckpt.pt


def test_january_2023_nanogpt_checkpoint_loads_with_the_same_logits(tmp_path):
    """A seed-era ckpt.pt (untied head, mask buffers, `_orig_mod.` keys, no "bias" arg) gives the seed model's logits."""
    seed = load_seed_module()
    torch.manual_seed(4)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=97, dropout=0.0)
    ref = seed.SeedGPT(seed.SeedConfig(**args)).eval()
    sd = {f"_orig_mod.{k}": v for k, v in ref.state_dict().items()}
    assert any(k.endswith("attn.bias") and v.dim() == 4 for k, v in sd.items())  # the seed's mask buffers
    optimizer = torch.optim.AdamW(ref.parameters())
    ckpt = dict(model=sd, optimizer=optimizer.state_dict(), model_args=args, iter_num=100, best_val_loss=torch.tensor(2.5),
                config=dict(batch_size=12, dataset="shakespeare"))
    torch.save(ckpt, tmp_path / "ckpt.pt")

    ours = load_pretrained(str(tmp_path / "ckpt.pt")).eval()
    assert not ours.config.tie_weights and ours.config.vocab_size == 97
    idx = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, all_logits=True)[0], ref(idx)[0], rtol=0, atol=1e-5)


def test_later_nanogpt_checkpoint_with_a_padded_vocabulary(tmp_path):
    """A tied, bias-free nanoGPT ckpt padded to 50304 loads as GPT-2's 50257 when the dataset says so."""
    torch.manual_seed(5)
    ref = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50304, bias=False)).eval()
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50304, bias=False, dropout=0.0)
    torch.save(dict(model={f"_orig_mod.{k}": v for k, v in ref.state_dict().items()}, model_args=args, iter_num=1),
               tmp_path / "ckpt.pt")
    spec = GPTSpec(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=False, vocab_size=50304,
                   init_from=str(tmp_path / "ckpt.pt"))
    ours = build_gpt(spec, vocab_size=50257).eval()
    assert (ours.config.vocab_size, ours.config.padded_vocab_size, ours.config.tie_weights) == (50257, 50304, True)
    idx = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, all_logits=True)[0], ref(idx, all_logits=True)[0][..., :50257])


def test_nanogpt_checkpoint_that_disagrees_with_its_model_args(tmp_path):
    """model_args that do not describe the state dict are an InputError naming what is missing."""
    torch.manual_seed(6)
    ref = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50))
    args = dict(n_layer=3, n_head=2, n_embd=32, block_size=16, vocab_size=50)
    torch.save(dict(model=ref.state_dict(), model_args=args), tmp_path / "ckpt.pt")
    with pytest.raises(InputError, match=r"missing transformer\.h\.2\."):
        load_pretrained(str(tmp_path / "ckpt.pt"))
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64)
    torch.save(dict(model=ref.state_dict(), model_args=args), tmp_path / "ckpt2.pt")
    with pytest.raises(InputError, match="model_args says vocab_size 64, but transformer.wte.weight has 50 rows"):
        load_pretrained(str(tmp_path / "ckpt2.pt"))


# ---------------------------------------------------------------------- our own checkpoints


def save_ours(model: GPT, run_dir: Path, step: int = 10) -> Path:
    path = run_dir / "checkpoints" / f"ckpt-{step:08d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(format=FORMAT, model=model.state_dict(), model_arch=model.arch(), iter_num=step), path)
    return path


def test_our_checkpoint_round_trips_by_file_and_by_run_dir(tmp_path):
    """A nanogpt checkpoint loads from its file or its run dir with the same logits, tying and padding kept."""
    torch.manual_seed(7)
    ref = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=1000, padded_vocab_size=1008)).eval()
    run_dir = tmp_path / "run"
    path = save_ours(ref, run_dir)
    idx = torch.randint(0, 1000, (2, 16))
    for source in (str(path), str(run_dir)):
        m = load_pretrained(source).eval()
        assert m.arch() == ref.arch() and m.lm_head.weight is m.transformer.wte.weight
        with torch.no_grad():
            torch.testing.assert_close(m(idx, all_logits=True)[0], ref(idx, all_logits=True)[0], rtol=0, atol=0)
    spec = GPTSpec(n_layer=2, n_head=2, n_embd=32, block_size=8, dropout=0.1, init_from=str(run_dir))
    m = build_gpt(spec, vocab_size=1000)
    assert (m.config.block_size, m.config.dropout, m.config.padded_vocab_size) == (8, 0.1, 1008)


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    """A torch file without model_args or our format is an InputError saying what it lacks."""
    torch.save({"weights": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(InputError, match="neither a nanogpt checkpoint"):
        load_pretrained(str(tmp_path / "x.pt"))
    with pytest.raises(InputError, match="no such file or directory"):
        load_pretrained(str(tmp_path / "missing.pt"))


# ----------------------------------------------------------------------- malicious pickles


class _CreatesFile:
    """Unpickling this calls open(path, "w"): it would create the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsShell:
    """Unpickling this calls os.system: it would create the file through a shell."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [_CreatesFile, _RunsShell])
@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, payload, container):
    """A checkpoint whose unpickling would create a file is refused with a clear error; the file never appears."""
    target = tmp_path / "pwned"
    evil = dict(model_args=dict(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=10), model=payload(target))
    path = tmp_path / "ckpt.pt"
    if container == "torch.save":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=2))  # a legacy (non-zip) torch file
    spec = GPTSpec(n_layer=1, n_head=1, n_embd=8, block_size=8, init_from=str(path))
    with pytest.raises(InputError, match="refusing to load"):
        build_gpt(spec, vocab_size=10)
    assert not target.exists()


def test_malicious_checkpoint_in_a_spec_is_refused_before_anything_runs(tmp_path):
    """Named by a spec, the same file is refused by the spec half already, and the file never appears."""
    target = tmp_path / "pwned"
    torch.save(dict(model_args=dict(n_layer=1), model=_CreatesFile(target)), tmp_path / "ckpt.pt")
    spec_file = tmp_path / "s.toml"
    spec_file.write_text(json_toml(name="evil", init_from=str(tmp_path / "ckpt.pt")), encoding="utf-8")
    with pytest.raises(SpecError, match="model.init_from"):
        load_spec(spec_file)
    assert not target.exists()


def json_toml(name: str, init_from: str) -> str:
    return f"name = {json.dumps(name)}\n[model]\ninit_from = {json.dumps(init_from)}\n"


def test_gpt2_names_go_to_the_hub_and_fail_cleanly_offline(monkeypatch):
    """Without the network (hub offline mode), loading "gpt2" is an InputError, not a traceback."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at call time; the env var only at import
    try:
        m = from_hf("gpt2")
    except InputError as e:
        assert "cannot load GPT-2 weights 'gpt2'" in str(e)
    else:  # the weights were in the local cache after all: then they must be GPT-2 124M
        assert attrs.astuple(m.config)[:5] == (12, 12, 768, 1024, 50257)
