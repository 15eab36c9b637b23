"""`nanogpt export --format hf`: transformers' AutoModelForCausalLM / AutoTokenizer load what it writes
and give our logits (to 1e-4) and our token ids."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.cli import main
from nanogpt.data.tokenizers import CharTokenizer, gpt2_tokenizer
from nanogpt.errors import InputError
from nanogpt.models.export import export_hf, to_transformers_tokenizer
from nanogpt.models.llama import Llama, LlamaConfig
from nanogpt.models.weights import from_hf_llama
from nanogpt.models.gpt import GPT, GPTConfig
from nanogpt.models.loading import load_model
from tests.tinyrun import only_run_dir, tiny_spec


def same_logits(model, directory: Path, vocab: int, T: int = 24) -> None:
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    idx = torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model.eval()(idx, all_logits=True)[0], rtol=0, atol=1e-4)
    return hf


@pytest.mark.parametrize("bias, tie, padded", [(True, True, 1000), (False, False, 1024), (False, True, 1024)])
def test_gpt_exports_as_gpt2(tmp_path, bias, tie, padded):
    """A GPT (with or without biases, tied or not, padded vocabulary or not) loads as GPT2LMHeadModel with its logits."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=1000, padded_vocab_size=padded,
                          bias=bias, tie_weights=tie))
    with torch.no_grad():  # nonzero biases and LayerNorm weights, so a dropped or misplaced one shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    export_hf(model, None, tmp_path / "out")
    hf = same_logits(model, tmp_path / "out", 1000)
    assert type(hf).__name__ == "GPT2LMHeadModel" and hf.config.vocab_size == 1000


@pytest.mark.parametrize("n_kv_head, tie", [(4, False), (2, True), (1, False)])
def test_llama_exports_and_imports_back(tmp_path, n_kv_head, tie):
    """A Llama loads as LlamaForCausalLM with its logits, and our own loader reads the export back exactly."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=32, intermediate_size=40,
                              block_size=32, vocab_size=97, rope_theta=300.0, tie_embeddings=tie))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    export_hf(model, None, tmp_path / "out")
    hf = same_logits(model, tmp_path / "out", 97)
    assert type(hf).__name__ == "LlamaForCausalLM"
    back = from_hf_llama(str(tmp_path / "out"))
    assert back.arch() == model.arch()
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))


@settings(max_examples=30)
@given(text=st.text(max_size=80))
def test_gpt2_tokenizer_exports_with_tiktokens_ids(text):
    """The exported GPT-2 tokenizer gives tiktoken's ids (what our gpt2 tokenizer gives) for any text."""
    fast = _gpt2_fast()
    assert fast(text)["input_ids"] == gpt2_tokenizer().encode(text)


_FAST = {}


def _gpt2_fast():
    if "gpt2" not in _FAST:
        _FAST["gpt2"] = to_transformers_tokenizer(gpt2_tokenizer())
    return _FAST["gpt2"]


@given(text=st.text(alphabet="abc \n", max_size=40))
def test_char_tokenizer_exports_one_token_per_character(text):
    """A char vocabulary exports as a tokenizer with the same ids and an exact decode, end-of-text included."""
    tok = CharTokenizer.from_text("abc \n", with_eot=True)
    fast = to_transformers_tokenizer(tok)
    assert fast(text)["input_ids"] == tok.encode(text)
    assert fast.decode(tok.encode(text)) == text
    assert fast.eos_token_id == tok.eot_id and fast("a<|endoftext|>b")["input_ids"] == tok.encode("a<|endoftext|>b", allowed_special=True)


# a Llama table starts from Llama's defaults (12 x 768, 1024 positions), so it names the tiny spec's size itself
LLAMA = {"kind": "llama", "n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 32, "block_size": 32, "tie_embeddings": True}


@pytest.mark.parametrize("model", [{}, LLAMA])
def test_export_verb_end_to_end(tmp_path, model):
    """`export RUN -o DIR` on a trained run: transformers loads model and tokenizer; logits and ids are ours."""
    spec = tiny_spec(tmp_path, model=model, train={"max_iters": 4, "eval_interval": 4})
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(spec)]) == 0
    run = only_run_dir(tmp_path / "runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export", str(run), "--format", "hf", "-o", str(tmp_path / "hf")]) == 0
    assert out.getvalue() == f"{tmp_path / 'hf'}\n"
    ours = load_model(str(run))
    hf = same_logits(ours.model, tmp_path / "hf", ours.tokenizer.vocab_size, T=32)
    assert type(hf).__name__ == ("LlamaForCausalLM" if model else "GPT2LMHeadModel")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("KING:\nthe queen")["input_ids"] == ours.tokenizer.encode("KING:\nthe queen")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]  # the temporary dir is gone


def test_export_refuses_what_it_cannot_do(tmp_path, capsys):
    """A non-empty output directory and an unknown format exit 2 with a message; nothing is written."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    (tmp_path / "ckpt.pt").write_bytes(b"")
    assert main(["export", str(tmp_path / "ckpt.pt"), "-o", str(tmp_path / "full")]) == 2
    assert "already exists and is not an empty directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "ckpt.pt"), "--format", "gguf", "-o", str(tmp_path / "new")]) == 2
    assert "--format must be one of hf (got 'gguf')" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and (tmp_path / "full" / "x").read_text() == "keep me"


def test_export_picks_the_exporter_of_the_models_kind(tmp_path, monkeypatch):
    """The format follows the kind the model's arch() records, from HF_EXPORTERS as imports follow
    weights.HF_IMPORTERS: a kind with no exporter is refused naming it, and one given an exporter exports."""
    from nanogpt.models import export

    class Bigram(torch.nn.Module):  # a plugin kind's model, as far as export reads one
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(11, 11)

        def arch(self):
            return {"kind": "bigram", "block_size": 8, "vocab_size": 11}

    with pytest.raises(InputError) as e:
        export.to_transformers(Bigram())
    assert str(e.value) == "cannot export a Bigram (model kind 'bigram'): only 'gpt', 'llama' models have a Hugging Face form"
    monkeypatch.setitem(export.HF_EXPORTERS, "bigram", lambda model: ("hf", model.arch()["kind"]))
    assert export.to_transformers(Bigram()) == ("hf", "bigram")
