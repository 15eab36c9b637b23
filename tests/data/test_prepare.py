"""prepare: the seed's numbers, splits, end-of-text, idempotence, rebuilds, dtypes and bad input."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanogpt.data.files import dtype_for, open_dataset
from nanogpt.data.prepare import prepare
from nanogpt.data.tokenizers import gpt2_tokenizer
from nanogpt.errors import DataError, InputError
from nanogpt.config.tables import TokensSpec

from tests.conftest import REPO

TINY_SHAKESPEARE = REPO / "tests" / "fixtures" / "tinyshakespeare.txt.gz"
"""The seed's tiny Shakespeare (Karpathy's char-rnn corpus, 1,115,394 characters), gzipped."""
EOT = 50256


def tokens_spec(tmp_path: Path, **fields) -> TokensSpec:
    fields.setdefault("data_dir", str(tmp_path / "data"))
    fields.setdefault("dataset", "ds")
    return TokensSpec(**fields)


def quiet(spec: TokensSpec, **kwargs) -> dict:
    return prepare(spec, say=lambda line: None, **kwargs)


def ids(spec: TokensSpec, split: str) -> list[int]:
    return open_dataset(spec).split(split).tolist()


def write_jsonl(path: Path, docs: list[str], column: str = "text") -> Path:
    path.write_text("".join(json.dumps({column: d, "n": i}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    return path


DOCS = [f"Document {i}: " + "the quick brown fox jumps. " * (i % 5) + "😀 ñ" * (i % 3) for i in range(60)]


def expected_document_ids(docs: list[str]) -> list[int]:
    enc = gpt2_tokenizer().encoding
    return [t for d in docs for t in enc.encode_ordinary(d) + [EOT]]


def test_seed_tiny_shakespeare_token_counts(tmp_path):
    """tiny Shakespeare, gpt2, contiguous 90/10: exactly the seed's 301,966 train and 36,059 val tokens."""
    (tmp_path / "input.txt").write_bytes(gzip.decompress(TINY_SHAKESPEARE.read_bytes()))
    spec = tokens_spec(tmp_path, source=f"file:{tmp_path / 'input.txt'}", tokenizer="gpt2",
                       split="contiguous", val_fraction=0.1)
    meta = quiet(spec)
    assert (meta["train"]["tokens"], meta["val"]["tokens"]) == (301_966, 36_059)
    assert meta["source"]["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert meta["dtype"] == "uint16" and meta["eot_id"] == EOT
    ds = open_dataset(spec)
    text = (tmp_path / "input.txt").read_text()
    cut = int(len(text) * 0.9)
    enc = gpt2_tokenizer().encoding
    assert ds.train.tolist() == enc.encode_ordinary(text[:cut])
    assert ds.val.tolist() == enc.encode_ordinary(text[cut:])


def test_stream_contiguous_cut_is_floor(tmp_path):
    """A stream is cut at floor(len * (1 - val_fraction)) characters, with no end-of-text added."""
    text = "abcdefghij" * 7 + "xyz"  # 73 characters
    (tmp_path / "t.txt").write_text(text)
    spec = tokens_spec(tmp_path, source=f"file:{tmp_path / 't.txt'}", tokenizer="char", split="contiguous",
                       val_fraction=0.15)
    meta = quiet(spec)
    cut = math.floor(73 * 0.85)
    assert (meta["train"]["tokens"], meta["val"]["tokens"]) == (cut, 73 - cut)
    assert meta["eot_id"] is None and meta["chars"] == sorted(set(text)) and meta["vocab_size"] == 13
    tok = open_dataset(spec).tokenizer
    assert tok.decode(ids(spec, "train")) + tok.decode(ids(spec, "val")) == text


def test_idempotent_and_says_so(tmp_path):
    """A second prepare with the same settings touches nothing and says it is up to date."""
    text = "hello there, general kenobi\n" * 50
    (tmp_path / "t.txt").write_text(text)
    spec = tokens_spec(tmp_path, source=f"file:{tmp_path / 't.txt'}", split="contiguous", val_fraction=0.1)
    enc = gpt2_tokenizer().encoding
    train, val = len(enc.encode_ordinary(text[:1260])), len(enc.encode_ordinary(text[1260:]))
    lines: list[str] = []
    prepare(spec, say=lines.append)
    folder = tmp_path / "data" / "ds"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    prepare(spec, say=lines.append)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert lines[0].startswith(f"preparing {folder} from file:") and "(not prepared yet)" in lines[0]
    summary = f"{train:,} train + {val:,} val tokens, gpt2 vocab 50,257, uint16"
    assert lines[1].startswith(f"wrote {folder}: {summary} in ")
    assert lines[2] == f"{folder} is up to date ({summary}); nothing to do (--force rebuilds it)"
    assert sorted(before) == ["meta.json", "train.bin", "val.bin"]


def test_rebuilds_on_changed_settings_source_and_force(tmp_path):
    """A changed setting, a changed source file or --force rebuilds, saying why; num_proc does not."""
    src = tmp_path / "t.txt"
    src.write_text("one two three four five six seven eight nine ten\n" * 20)
    spec = tokens_spec(tmp_path, source=f"file:{src}", split="contiguous", val_fraction=0.1)
    quiet(spec)
    lines: list[str] = []
    prepare(tokens_spec(tmp_path, source=f"file:{src}", split="contiguous", val_fraction=0.1, num_proc=1), say=lines.append)
    assert "up to date" in lines[-1]
    prepare(tokens_spec(tmp_path, source=f"file:{src}", split="contiguous", val_fraction=0.2), say=lines.append)
    assert lines[-2].endswith("(changed: val_fraction 0.1 -> 0.2)")
    prepare(tokens_spec(tmp_path, source=f"file:{src}", split="contiguous", val_fraction=0.2, tokenizer="char"), say=lines.append)
    assert lines[-2].endswith("(changed: tokenizer 'gpt2' -> 'char')")
    spec = tokens_spec(tmp_path, source=f"file:{src}", split="contiguous", val_fraction=0.2, tokenizer="char")
    src.write_text("something else entirely\n" * 20)
    meta = prepare(spec, say=lines.append)
    assert lines[-2].endswith("(the source's content changed)")
    assert open_dataset(spec).tokenizer.decode(ids(spec, "train"))[:9] == "something"
    assert meta["vocab_size"] == len(set("something else entirely\n"))
    prepare(spec, force=True, say=lines.append)
    assert lines[-2].endswith("(--force)")


def test_uint32_when_the_vocabulary_needs_it(tmp_path):
    """A char corpus of more than 65,536 distinct characters is written as uint32 and reads back."""
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 70_000) if not 0xD800 <= c < 0xE000]
    text = "".join(chars) * 2
    (tmp_path / "wide.txt").write_text(text, encoding="utf-8")
    spec = tokens_spec(tmp_path, source=f"file:{tmp_path / 'wide.txt'}", tokenizer="char", split="contiguous",
                       val_fraction=0.1)
    meta = quiet(spec)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == len(chars)
    ds = open_dataset(spec)
    assert ds.train.dtype == np.uint32 and int(ds.train.max()) == len(chars) - 1
    assert (tmp_path / "data/ds/train.bin").stat().st_size == 4 * meta["train"]["tokens"]
    assert ds.tokenizer.decode(ds.train) + ds.tokenizer.decode(ds.val) == text


def test_dtype_limits():
    """uint16 holds 65,536 ids, uint32 the rest, and beyond that the vocabulary is refused."""
    assert dtype_for(50257) == dtype_for(65536) == "uint16"
    assert dtype_for(65537) == dtype_for(1 << 32) == "uint32"
    with pytest.raises(DataError, match="a vocabulary of 4,294,967,297 ids does not fit uint32"):
        dtype_for((1 << 32) + 1)


def test_empty_corpus_and_empty_splits(tmp_path):
    """An empty file, a val split that rounds to nothing, a train split with no documents: DataErrors, nothing left."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "t.txt").write_text("some text")
    write_jsonl(tmp_path / "one.jsonl", ["a single document"])
    write_jsonl(tmp_path / "blank.jsonl", ["", ""])
    cases = [
        (dict(source=f"file:{tmp_path / 'empty.txt'}", split="contiguous"), r"empty.txt' is empty: there is no text to prepare"),
        (dict(source=f"file:{tmp_path / 't.txt'}", split="contiguous", val_fraction=1e-17),
         r"the val split comes out empty: data.val_fraction 1e-17 of 9 characters is less than one character"),
        (dict(source=f"file:{tmp_path / 'one.jsonl'}"), r"the train split comes out empty: 1 document\(s\) with data.val_fraction 0.0005"),
        (dict(source=f"file:{tmp_path / 'one.jsonl'}", split="contiguous", val_fraction=0.1),
         r"the train split comes out empty: the first document of .* already holds more than"),
        (dict(source=f"file:{tmp_path / 'blank.jsonl'}", split="contiguous"), r"holds no text: all its 2 documents are empty"),
    ]
    for fields, message in cases:
        with pytest.raises(DataError, match=message):
            quiet(tokens_spec(tmp_path, **fields))
        assert not (tmp_path / "data").exists(), fields


def test_random_split_of_a_stream_is_refused(tmp_path):
    """split = "random" on one text stream is an InputError pointing at "contiguous"."""
    (tmp_path / "t.txt").write_text("text")
    with pytest.raises(InputError, match=r'data.split = "random" shuffles documents, .* set data.split = "contiguous"'):
        quiet(tokens_spec(tmp_path, source=f"file:{tmp_path / 't.txt'}", split="random"))
    with pytest.raises(InputError, match="one stream"):
        quiet(tokens_spec(tmp_path, source="embedded:shakespeare", split="random"))


def test_jsonl_documents_contiguous(tmp_path):
    """jsonl rows are documents, each followed by end-of-text; contiguous keeps their order, whole."""
    write_jsonl(tmp_path / "docs.jsonl", DOCS, column="body")
    spec = tokens_spec(tmp_path, source=f"file:{tmp_path / 'docs.jsonl'}", text_column="body", split="contiguous",
                       val_fraction=0.1, num_proc=2)
    meta = quiet(spec)
    ends = np.cumsum([len(d) for d in DOCS])
    k = int(np.searchsorted(ends, math.floor(ends[-1] * 0.9), side="right"))
    assert ids(spec, "train") == expected_document_ids(DOCS[:k])
    assert ids(spec, "val") == expected_document_ids(DOCS[k:])
    assert (meta["train"]["documents"], meta["val"]["documents"]) == (k, len(DOCS) - k)
    assert meta["settings"]["text_column"] == "body"


def test_parquet_documents_random_split_is_the_seeds(tmp_path):
    """parquet rows split at random exactly as the seed's OpenWebText train_test_split, on 2 workers."""
    import datasets
    import pandas as pd

    pd.DataFrame({"text": DOCS}).to_parquet(tmp_path / "docs.parquet")
    spec = tokens_spec(tmp_path, source=f"file:{tmp_path / 'docs.parquet'}", val_fraction=0.1, split_seed=2357, num_proc=2)
    meta = quiet(spec)
    oracle = datasets.Dataset.from_dict({"text": DOCS}).train_test_split(test_size=0.1, seed=2357, shuffle=True)
    assert ids(spec, "train") == expected_document_ids(oracle["train"]["text"])
    assert ids(spec, "val") == expected_document_ids(oracle["test"]["text"])
    assert meta["val"]["documents"] == math.ceil(0.1 * len(DOCS))


def test_hf_source_on_a_local_stand_in(tmp_path, monkeypatch):
    """hf: loads through datasets.load_dataset (a local folder here) and tokenizes with num_proc=2 like the seed's OWT."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    folder = tmp_path / "owt-standin"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", DOCS)
    spec = tokens_spec(tmp_path, source=f"hf:{folder}", val_fraction=0.05, num_proc=2)
    meta = quiet(spec)
    oracle = datasets.Dataset.from_dict({"text": DOCS}).train_test_split(test_size=0.05, seed=2357, shuffle=True)
    assert ids(spec, "train") == expected_document_ids(oracle["train"]["text"])
    assert ids(spec, "val") == expected_document_ids(oracle["test"]["text"])
    assert meta["source"]["kind"] == "hf" and meta["source"]["id"] == str(folder) and meta["source"]["num_rows"] == 60
    lines: list[str] = []
    prepare(spec, say=lines.append)
    assert "up to date" in lines[0]


def test_hf_offline_error(tmp_path, monkeypatch):
    """An hf: dataset that cannot be loaded is a DataError naming it and the cache it must be in."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"could not load the Hugging Face dataset nobody/nothing: .*Hugging Face cache"):
        quiet(tokens_spec(tmp_path, source="hf:nobody/nothing"))
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------- hub datasets that are scripts

OWT = "Skylion007/openwebtext"


def script_refusal(tmp_path: Path) -> RuntimeError:
    """The error the installed `datasets` itself raises for a dataset that is a loading script (here a
    local folder holding `<name>.py`, which it refuses exactly as it refuses the hub's openwebtext.py)."""
    import datasets

    folder = tmp_path / "owt_script"
    folder.mkdir()
    (folder / "owt_script.py").write_text("import datasets  # a loading script\n")
    with pytest.raises(RuntimeError) as e:
        datasets.load_dataset_builder(str(folder))
    return e.value


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """`datasets.load_dataset_builder` answering for Skylion007/openwebtext as the hub does today, offline: its
    main branch (or a named revision but refs/convert/parquet) is a dataset script, refused with the very error
    the installed `datasets` raises for one; its parquet conversion is a local folder of parquet files."""
    import datasets
    import pandas as pd

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    refusal = script_refusal(tmp_path)
    parquet = tmp_path / "owt-parquet" / "plain_text"
    parquet.mkdir(parents=True)
    pd.DataFrame({"text": DOCS}).to_parquet(parquet / "train-00000-of-00001.parquet")
    real = datasets.load_dataset_builder
    asked: list = []

    def load_dataset_builder(path, name=None, *, revision=None, **kwargs):
        if path != OWT:
            return real(path, name, revision=revision, **kwargs)
        asked.append(revision)
        if revision not in ("refs/convert/parquet", "v-parquet"):  # v-parquet: a named revision without the script
            raise refusal
        return real(str(parquet.parent), name, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset_builder", load_dataset_builder)
    return {"asked": asked, "refusal": refusal, "hash": real(str(parquet.parent)).hash}


def test_a_dataset_script_is_read_from_the_parquet_conversion(tmp_path, hub):
    """datasets >= 4 refuses Skylion007/openwebtext (a loading script): prepare reads refs/convert/parquet by
    itself, says so, and records the revision read and what it resolved to; a second prepare does nothing."""
    from nanogpt.data.files import dataset_record
    from nanogpt.data.sources import is_script_refusal

    assert is_script_refusal(hub["refusal"]), hub["refusal"]  # the installed library's own message
    spec = tokens_spec(tmp_path, source=f"hf:{OWT}", val_fraction=0.05, num_proc=1)
    lines: list[str] = []
    meta = prepare(spec, say=lines.append)
    assert hub["asked"] == [None, "refs/convert/parquet"]
    assert lines[1] == (
        f"{OWT} is a dataset script, which datasets {__import__('datasets').__version__} no longer runs "
        f"({hub['refusal']}); reading the hub's parquet conversion (refs/convert/parquet) instead"
    )
    import datasets

    oracle = datasets.Dataset.from_dict({"text": DOCS}).train_test_split(test_size=0.05, seed=2357, shuffle=True)
    assert ids(spec, "train") == expected_document_ids(oracle["train"]["text"])
    source = meta["source"]
    assert (source["id"], source["revision"], source["revision_read"]) == (OWT, None, "refs/convert/parquet")
    assert source["resolved_revision"] == hub["hash"] and source["num_rows"] == len(DOCS)
    # the manifest's data record carries them too
    assert dataset_record(open_dataset(spec))["source"] == {
        "spec": f"hf:{OWT}", "revision": None, "revision_read": "refs/convert/parquet", "resolved_revision": hub["hash"],
    }
    lines.clear()
    prepare(spec, say=lines.append)
    assert "up to date" in lines[0] and hub["asked"] == [None, "refs/convert/parquet"]


def test_a_named_revision_is_read_and_recorded(tmp_path, hub):
    """hf:ID@REVISION reads that revision (no fallback needed), records it, and another revision rebuilds."""
    spec = tokens_spec(tmp_path, source=f"hf:{OWT}@v-parquet", val_fraction=0.05, num_proc=1)
    meta = quiet(spec)
    assert hub["asked"] == ["v-parquet"]
    assert (meta["source"]["revision"], meta["source"]["revision_read"]) == ("v-parquet", "v-parquet")
    lines: list[str] = []
    prepare(tokens_spec(tmp_path, source=f"hf:{OWT}@refs/convert/parquet", val_fraction=0.05, num_proc=1), say=lines.append)
    assert "the source changed" in lines[0] and hub["asked"] == ["v-parquet", "refs/convert/parquet"]


def test_a_named_revision_that_is_a_script_is_not_swapped(tmp_path, hub):
    """A revision the user named is never replaced silently: a script there is an error that says what to write."""
    with pytest.raises(DataError) as e:
        quiet(tokens_spec(tmp_path, source=f"hf:{OWT}@main", num_proc=1))
    assert str(e.value).startswith(f"could not load the Hugging Face dataset {OWT}@main: Dataset scripts are no longer supported")
    assert str(e.value).endswith(f'data.source = "hf:{OWT}@refs/convert/parquet"')
    assert hub["asked"] == ["main"] and not (tmp_path / "data" / "ds" / "meta.json").exists()


def test_a_local_script_with_no_parquet_conversion(tmp_path, monkeypatch):
    """The real library end to end: a local folder that is a script falls back, the fallback fails the same
    way (a folder has no hub conversion), and the error names the revision it tried."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    refusal = script_refusal(tmp_path)
    lines: list[str] = []
    with pytest.raises(DataError) as e:
        prepare(tokens_spec(tmp_path, source=f"hf:{tmp_path / 'owt_script'}", num_proc=1), say=lines.append)
    assert "reading the hub's parquet conversion (refs/convert/parquet) instead" in lines[1]
    assert str(e.value).startswith(
        f"could not load the Hugging Face dataset {tmp_path / 'owt_script'} (at refs/convert/parquet): RuntimeError: {refusal}"
    )


def test_worker_count_does_not_change_the_files(tmp_path):
    """num_proc 1 and 2 write byte-identical files, for documents and for a stream."""
    write_jsonl(tmp_path / "docs.jsonl", DOCS * 5)
    (tmp_path / "t.txt").write_text("\n\n".join(DOCS * 20))
    digests = set()
    for source, split in ((f"file:{tmp_path / 'docs.jsonl'}", "random"), (f"file:{tmp_path / 't.txt'}", "contiguous")):
        digests.clear()
        for n in (1, 2):
            spec = tokens_spec(tmp_path, dataset=f"n{n}", source=source, split=split, val_fraction=0.1, num_proc=n)
            meta = quiet(spec)
            digests.add((meta["train"]["sha256"], meta["val"]["sha256"]))
        assert len(digests) == 1, source


def test_glob_of_text_files_is_documents(tmp_path):
    """Each file of a glob is one document, in sorted path order, followed by end-of-text (char gets its own id)."""
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    texts = {"b.txt": "second file", "a.txt": "first file", "sub/c.txt": "third\r\nfile", "d.txt": "fourth"}
    for name, text in texts.items():
        (folder / name).write_text(text, newline="")
    spec = tokens_spec(tmp_path, source=f"file:{folder}/**/*.txt", split="contiguous", val_fraction=0.2)
    meta = quiet(spec)
    order = ["first file", "second file", "fourth", "third\r\nfile"]  # a.txt, b.txt, d.txt, sub/c.txt
    assert ids(spec, "train") + ids(spec, "val") == expected_document_ids(order)
    assert meta["train"]["documents"] + meta["val"]["documents"] == 4
    assert meta["train"]["chars"] + meta["val"]["chars"] == sum(map(len, order))

    char = tokens_spec(tmp_path, dataset="chars", source=f"file:{folder}/*.txt", tokenizer="char", split="contiguous",
                       val_fraction=0.3)
    meta = quiet(char)
    tok = open_dataset(char).tokenizer
    assert meta["eot_id"] == len(meta["chars"]) == meta["vocab_size"] - 1
    assert tok.decode(ids(char, "train") + ids(char, "val")) == "first file<|endoftext|>second file<|endoftext|>fourth<|endoftext|>"


def test_text_column_errors(tmp_path):
    """A missing or non-text column is an InputError naming the columns; a null row is a DataError."""
    (tmp_path / "rows.jsonl").write_text('{"body": "a", "n": 1}\n{"body": "b", "n": 2}\n')
    (tmp_path / "nulls.jsonl").write_text('{"text": "a"}\n{"text": null}\n{"text": "c"}\n')
    with pytest.raises(InputError, match=r"data.text_column 'text' is not a column of .*rows.jsonl' \(columns: body, n\)"):
        quiet(tokens_spec(tmp_path, source=f"file:{tmp_path / 'rows.jsonl'}"))
    with pytest.raises(InputError, match=r"data.text_column 'n' of .* holds int64, not text"):
        quiet(tokens_spec(tmp_path, source=f"file:{tmp_path / 'rows.jsonl'}", text_column="n"))
    with pytest.raises(DataError, match=r"has no text \(null in column 'text'\)"):
        quiet(tokens_spec(tmp_path, source=f"file:{tmp_path / 'nulls.jsonl'}", val_fraction=0.4))
    assert not (tmp_path / "data").exists()


def test_embedded_shakespeare_prepares_offline(tmp_path):
    """`nanogpt prepare` of the quickstart's corpus succeeds with every network path made to fail."""
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(
        'name = "offline"\n[data]\nkind = "tokens"\ndataset = "shakespeare_char"\ndata_dir = "data"\n'
        'source = "embedded:shakespeare"\ntokenizer = "char"\nval_fraction = 0.1\nsplit = "contiguous"\n'
    )
    no_network = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise OSError('network disabled by the test')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\nsocket.getaddrinfo = refuse\n"
        "from nanogpt.cli import main\nsys.exit(main(['prepare', 'spec.toml']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    done = subprocess.run([sys.executable, "-c", no_network], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote data/shakespeare_char: 4,303,978 train + 478,220 val tokens, char vocab 76, uint16" in done.stdout
    meta = json.loads((tmp_path / "data/shakespeare_char/meta.json").read_text())
    assert meta["source"]["kind"] == "embedded" and meta["chars"][:3] == ["\n", " ", "!"]


def test_cli_exit_codes(tmp_path):
    """`nanogpt prepare`: bad input before work exits 2, a failure during work exits 1, both one line, no traceback."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "text.txt").write_text("text")
    cases = (("file:text.txt", "random", 2, 'data.split = "random" shuffles documents'),
             ("file:empty.txt", "contiguous", 1, "error: data.source 'file:empty.txt' is empty"))
    for source, split, code, message in cases:
        (tmp_path / "spec.toml").write_text(f'name = "x"\n[data]\nsource = "{source}"\nsplit = "{split}"\n')
        done = subprocess.run([sys.executable, "-m", "nanogpt", "prepare", "spec.toml"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == code and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "data").exists()
