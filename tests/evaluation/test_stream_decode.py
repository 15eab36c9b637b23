"""`sample`'s streamed text is the tokenizer's decoding of all the tokens, for every kind of tokenizer:
char, tiktoken GPT-2, and Hugging Face byte-level BPE, SentencePiece (Metaspace `▁`) and WordPiece,
the last three built here from a few lines of text (offline)."""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.data.tokenizers import HFTokenizer, gpt2_tokenizer, tokenizer_for
from nanogpt.models.generation import IncrementalDecoder

TEXT = ("ROMEO: But soft, what light through yonder window breaks?\n"
        "JULIET: O Romeo, Romeo, wherefore art thou Romeo? 日本語のテキスト, café, naïve.\n") * 20


def _hf(kind: str) -> HFTokenizer:
    from tokenizers import (
        BertWordPieceTokenizer,
        ByteLevelBPETokenizer,
        SentencePieceBPETokenizer,
    )

    made = {"sentencepiece": SentencePieceBPETokenizer, "bytelevel": ByteLevelBPETokenizer,
            "wordpiece": BertWordPieceTokenizer}[kind]()
    made.train_from_iterator([TEXT], vocab_size=300 if kind != "wordpiece" else 200, min_frequency=1)
    return HFTokenizer(f"hf:{kind}", made.to_str())


@functools.cache
def tokenizer(kind: str):
    if kind == "char":
        return tokenizer_for("char", TEXT)
    if kind == "gpt2":
        return gpt2_tokenizer()
    return _hf(kind)


KINDS = ["char", "gpt2", "bytelevel", "sentencepiece", "wordpiece"]


def streamed(tok, ids: list[int]) -> str:
    pieces: list[str] = []
    stream = IncrementalDecoder(tok, pieces.append)
    for i in ids:
        stream.push(i)
    stream.close()
    return "".join(pieces)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_streamed_text_is_the_decoding_of_all_tokens(kind: str, data):
    tok = tokenizer(kind)
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
    assert streamed(tok, ids) == tok.decode(ids)


@pytest.mark.parametrize("kind", KINDS)
def test_real_text_streams_as_itself(kind: str):
    """Tokens of real text (spaces between words, multi-byte characters) stream to their decoding."""
    tok = tokenizer(kind)
    ids = tok.encode(TEXT[:200])
    assert streamed(tok, ids) == tok.decode(ids)


def test_sentencepiece_keeps_its_spaces():
    """The reported bug: decoded token by token, a `▁` tokenizer printed `ROMEO:Butsoft,...`."""
    tok = tokenizer("sentencepiece")
    assert "▁" in json.dumps(json.loads(tok.tokenizer_json)["decoder"], ensure_ascii=False)
    text = streamed(tok, tok.encode("ROMEO: But soft, what light"))
    assert text == "ROMEO: But soft, what light"
