"""`data.tokenizer = "hf:PATH_OR_ID"`: any Hugging Face tokenizer, with transformers' AutoTokenizer as
the oracle on a BPE trained here (offline), through prepare, the manifest, sample and perplexity."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import transformers
from hypothesis import given
from hypothesis import strategies as st

from nanogpt.cli import main
from nanogpt.data.tokenizers import HFTokenizer, hf_tokenizer, tokenizer_from_meta
from nanogpt.errors import DataError
from tests.tinyrun import only_run_dir, tiny_spec, write_corpus


def train_bpe(directory: Path, corpus: Path, *, vocab_size: int = 300, eos: str = "</s>") -> Path:
    """A byte-level BPE trained on `corpus`, saved as transformers saves a fast tokenizer (tokenizer.json +
    tokenizer_config.json naming its eos/bos): the local stand-in for a hub tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", eos],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(corpus)], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token=eos)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tok")
    return train_bpe(tmp / "tiny-bpe", write_corpus(tmp / "corpus.txt"))


@pytest.fixture(scope="module")
def oracle(bpe_dir):
    return transformers.AutoTokenizer.from_pretrained(bpe_dir)


@given(text=st.text(max_size=200) | st.lists(st.sampled_from(["<s>", "</s>", "a", " ", "<"]), max_size=6).map("".join))
def test_ids_equal_transformers(bpe_dir, oracle, text):
    """For any text, our ids are AutoTokenizer's (no special tokens added, a special token's text read
    as plain text, as test_identity_and_special_tokens wants) and decode back to the text."""
    tok = hf_tokenizer(f"hf:{bpe_dir}")
    ids = tok.encode(text)
    assert ids == oracle(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.encode_batch([text, text[::-1]]) == [ids, tok.encode(text[::-1])]


def test_identity_and_special_tokens(bpe_dir, oracle):
    """eos/bos come from tokenizer_config.json; a special token's text is plain text unless allowed."""
    tok = hf_tokenizer(f"hf:{bpe_dir}")
    assert (tok.eot_id, tok.bos_id) == (oracle.eos_token_id, oracle.bos_token_id) == (1, 0)
    assert tok.vocab_size == len(oracle)
    assert tok.encode("a</s>b", allowed_special=True) == [*tok.encode("a"), 1, *tok.encode("b")]
    assert 1 not in tok.encode("a</s>b")
    import hashlib

    assert tok.sha256 == hashlib.sha256((bpe_dir / "tokenizer.json").read_bytes()).hexdigest()
    rebuilt = tokenizer_from_meta(tok.meta())
    assert isinstance(rebuilt, HFTokenizer) and rebuilt.encode("the king") == tok.encode("the king")


def test_tokenizer_json_file_path_works_too(bpe_dir):
    """hf: may name the tokenizer.json file itself."""
    assert hf_tokenizer(f"hf:{bpe_dir / 'tokenizer.json'}").encode("the queen") == hf_tokenizer(f"hf:{bpe_dir}").encode("the queen")


def test_bad_meta_is_refused(bpe_dir):
    """A meta.json whose tokenizer_json does not have its recorded hash is refused, never decoded wrongly."""
    meta = hf_tokenizer(f"hf:{bpe_dir}").meta()
    with pytest.raises(DataError, match="tokenizer_sha256"):
        tokenizer_from_meta({**meta, "tokenizer_sha256": "0" * 64})
    with pytest.raises(DataError, match="tokenizer_json"):
        tokenizer_from_meta({k: v for k, v in meta.items() if k != "tokenizer_json"})


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    """Offline, a hub id that is not cached fails at once with a message naming it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="hub model 'nobody/no-such-tokenizer'"):
        hf_tokenizer("hf:nobody/no-such-tokenizer")


def test_documents_prepare_with_eos_and_run_samples(bpe_dir, oracle, tmp_path):
    """Documents are each tokenized as transformers does and followed by eos; meta.json and the
    manifest record the tokenizer's name and hash; sample and perplexity decode with it."""
    docs = ["the king sailed to france", "QUEEN: love and grief", "peace"] * 200
    with open(tmp_path / "docs.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    name = f"hf:{bpe_dir}"
    spec = tiny_spec(tmp_path, name="hftok", data={"dataset": "docs_bpe", "source": f"file:{tmp_path / 'docs.jsonl'}",
                                                     "tokenizer": name, "split": "random", "val_fraction": 0.1},
                     train={"max_iters": 4, "eval_interval": 4})
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(spec)]) == 0
    meta = json.loads((tmp_path / "data" / "docs_bpe" / "meta.json").read_text())
    assert meta["tokenizer"] == name and meta["tokenizer_sha256"] == hf_tokenizer(name).sha256
    assert (meta["eot_id"], meta["bos_id"], meta["vocab_size"]) == (1, 0, len(oracle))
    ids = np.concatenate([np.fromfile(tmp_path / "data" / "docs_bpe" / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")])
    expected = sum(len(oracle(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs)
    assert len(ids) == expected and int((ids == 1).sum()) == len(docs) and 0 not in ids
    run = only_run_dir(tmp_path / "runs", "hftok")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["tokenizer"] == name and manifest["data"]["tokenizer_sha256"] == meta["tokenizer_sha256"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["sample", str(run), "--start", "the king", "--num-samples", "1", "--max-new-tokens", "5"]) == 0
    assert out.getvalue().startswith("the king")
    (tmp_path / "text.txt").write_text("the king sailed to france\n", encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["perplexity", str(run), str(tmp_path / "text.txt"), "--json"]) == 0
    scored = json.loads(out.getvalue())
    assert scored["tokens"] == len(oracle("the king sailed to france\n", add_special_tokens=False)["input_ids"])


def test_stream_prepare_equals_one_encode(bpe_dir, oracle, tmp_path):
    """A single-text source is tokenized exactly as one encode of each split's text (no chunk seams)."""
    corpus = write_corpus(tmp_path / "c.txt", n_lines=300)
    spec = tiny_spec(tmp_path, name="stream", data={"dataset": "stream_bpe", "source": f"file:{corpus}", "tokenizer": f"hf:{bpe_dir}"})
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["prepare", str(spec)]) == 0
    text = corpus.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    train = np.fromfile(tmp_path / "data" / "stream_bpe" / "train.bin", dtype=np.uint16).tolist()
    assert train == oracle(text[:cut], add_special_tokens=False)["input_ids"]
