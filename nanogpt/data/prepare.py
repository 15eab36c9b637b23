"""`nanogpt prepare`: turn a `[data]` table's source into `<data_dir>/<dataset>/{train,val}.bin` + meta.json.

Splits (`data.split`, `data.val_fraction`):

- one stream, "contiguous": the raw text is cut at character floor(len * (1 - val_fraction));
  the head is train, the tail val, each tokenized on its own (nanoGPT's Shakespeare).
- one stream, "random": refused before any work. A stream has no documents to shuffle, and
  shuffling chunks of it would leak text across the cut; use "contiguous".
- documents, "random": `datasets`' `train_test_split(test_size=val_fraction, seed=split_seed,
  shuffle=True)`: ceil(val_fraction * n) documents become val, both splits in shuffled order.
  This is exactly nanoGPT's OpenWebText split (val_fraction 0.0005, seed 2357).
- documents, "contiguous": documents keep their order; val is the document that holds
  character floor(total * (1 - val_fraction)) of their concatenated text and every document
  after it. Documents stay whole, so val gets at least val_fraction of the text.

Every document is followed by one end-of-text token (the char tokenizer gets an id for it after
the characters); a stream gets none.

Files are written under temporary names; at the end meta.json is deleted, the .bin files are
renamed into place and meta.json is written last, so a prepare interrupted at any moment leaves
no dataset that `open_dataset` (and so `run`) would accept. meta.json records the source's
fingerprint and the settings; a prepare that finds both unchanged and the files intact does
nothing and says so. Concurrent prepares of one dataset (every rank of a torchrun) take turns
on a lock of the dataset folder; the later ones find it up to date.

Tokenizing uses the machine's cores (`data.num_proc`, 0 = all): threads over safely cut chunks
of a stream (tiktoken releases the GIL), worker processes through `Dataset.map` for documents.
Either way the ids are exactly those of a plain single-threaded encode.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import math
import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import attrs
import numpy as np

from nanogpt.data.files import (
    FORMAT,
    META,
    SPLITS,
    PreparedDataset,
    dataset_dir,
    dtype_for,
    open_dataset,
    read_meta,
    verify,
    write_meta,
)
from nanogpt.fileio import fsync_dir, progress_bar, want_progress
from nanogpt.data.shards import ShardWriter, is_shard_name, shard_name
from nanogpt.data.llmc import export_bin, is_bin_source
from nanogpt.data.sources import (
    Documents,
    Source,
    SourceMissing,
    TextStream,
    available_cores,
    datasets_progress,
    fetch,
    fingerprint,
    hf_record,
    load_corpus,
    resolve_source,
    unchanged,
)
from nanogpt.data.tokenizers import (
    EOS_CANDIDATES,
    HF_PREFIX,
    CharTokenizer,
    HFTokenizer,
    Tokenizer,
    tokenizer_for,
    tokenizer_from_meta,
)
from nanogpt.errors import DataError, InputError
from nanogpt.signals import on_abort
from nanogpt.config.tables import TokensSpec

PREPARE_VERSION = 1
"""Bumped when a change here would change the files prepare writes; older datasets rebuild."""

DEFAULT_SHARD_TOKENS = attrs.fields(TokensSpec).shard_tokens.default

STREAM_CHUNK_CHARS = 1 << 18
"""Characters per unit of parallel work on a stream (cut where BPE pieces cannot span the cut)."""

Say = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ verbs


def prepare_command(spec: TokensSpec, *, force: bool, format: str = "nanogpt") -> int:
    """`nanogpt prepare SPEC [--force] [--format bin]`: build the dataset, or say it is up to date. Returns 0.

    `--format bin` also writes its splits as llm.c/modded-nanogpt shards in `<dataset>/bin/`.
    """
    prepare(spec, force=force, say=print)
    if format == "bin":
        if is_bin_source(spec.source):
            raise InputError(f"data.source {spec.source!r} is already llm.c shards: there is nothing to write")
        out = dataset_dir(spec) / "bin"
        written = export_bin(open_dataset(spec), out, shard_tokens=spec.shard_tokens)
        print(f"wrote {len(written)} llm.c shard{'s' * (len(written) != 1)} to {out} "
              f"(read them with data.source = \"bin:{out}/*.bin\")")
    return 0


def prepare(
    spec: TokensSpec,
    *,
    force: bool = False,
    progress: Optional[bool] = None,
    say: Optional[Say] = None,
    quiet_if_current: bool = False,
) -> dict[str, Any]:
    """Build `<data_dir>/<dataset>` from `spec.source` unless it is up to date; return its meta.json.

    InputError for bad input found before any work (a missing file, a glob matching nothing, a
    random split of a single stream); DataError for failures during the work (an empty corpus or
    split, a failed download, a vocabulary too big for uint32). Either way nothing half-made is
    left behind. `say` gets the one-line reports (default: stderr); `progress` turns the bars
    on or off (default: on when stderr is a terminal).
    """
    say = say or _stderr
    progress = want_progress(progress)
    directory = dataset_dir(spec)
    if is_bin_source(spec.source):
        ds = open_dataset(spec)  # a bin: source: checks every file's header and size
        if not quiet_if_current:
            say(f"{spec.source}: {_summary(ds.meta)} in {ds.shards('train')} + {ds.shards('val')} files, "
                f"read in place; nothing to prepare")
        return ds.meta
    if spec.source is None:
        meta = read_meta(directory)
        if meta is None:
            raise InputError(
                f"data.source is not set, so there is nothing to prepare {directory} from; set it to "
                f"\"embedded:shakespeare\", \"file:...\", \"url:...\" or \"hf:...\""
            )
        verify(directory, meta, progress=progress)
        if not quiet_if_current:
            say(f"{directory}: {_summary(meta)}; no data.source, nothing to prepare")
        return meta

    try:
        source = resolve_source(spec)
    except SourceMissing as missing:
        # The source's files are gone but a dataset made from them is here and intact: keep
        # using it, as the spec check does. --force insists on the source.
        meta = None if force else _intact(directory)
        if meta is None:
            raise
        say(f"{directory}: {missing}; using the dataset already prepared ({_summary(meta)})")
        return meta
    if not source.documents and spec.split == "random":
        raise InputError(
            f"data.split = \"random\" shuffles documents, but data.source {spec.source!r} is one stream "
            f"of text; set data.split = \"contiguous\" (the last val_fraction of the text becomes val)"
        )
    settings = settings_of(spec, source)
    with _locked(directory) as created:
        try:
            if not force:
                meta, reason = _current(directory, spec, source, settings)
                if reason is None:
                    if not quiet_if_current:
                        say(f"{directory} is up to date ({_summary(meta)}); nothing to do (--force rebuilds it)")
                    return meta
            else:
                reason = "--force"
            say(f"preparing {directory} from {spec.source} ({reason})")
            start = time.perf_counter()
            meta = _build(directory, spec, source, settings, progress=progress, say=say)
            say(f"wrote {directory}: {_summary(meta)} in {time.perf_counter() - start:.1f} s")
            return meta
        except BaseException:
            _clean_up_after_failure(directory, created)
            raise


def _intact(directory: Path) -> Optional[dict]:
    """The meta.json of a dataset that exists and verifies, else None."""
    try:
        meta = read_meta(directory)
        if meta is not None:
            verify(directory, meta)
        return meta
    except DataError:
        return None


def settings_of(spec: TokensSpec, source: Source) -> dict[str, Any]:
    """The prepare settings that shape the files; a change of any of them rebuilds.

    `num_proc` is not among them: the files are the same whatever the number of workers.
    """
    settings: dict[str, Any] = {
        "prepare_version": PREPARE_VERSION,
        "tokenizer": spec.tokenizer,
        "documents": source.documents,
        "split": spec.split,
        "val_fraction": spec.val_fraction,
    }
    if spec.split == "random":
        settings["split_seed"] = spec.split_seed
    if spec.tokenizer.startswith(HF_PREFIX):  # the same name may come to mean another file
        settings["tokenizer_sha256"] = tokenizer_for(spec.tokenizer).sha256
    if source.has_columns:
        settings["text_column"] = spec.text_column
    if spec.shard_tokens != DEFAULT_SHARD_TOKENS:  # left out at the default: datasets made before shards stay current
        settings["shard_tokens"] = spec.shard_tokens
    return settings


def _summary(meta: dict) -> str:
    return (
        f"{meta['train']['tokens']:,} train + {meta['val']['tokens']:,} val tokens, "
        f"{meta['tokenizer']} vocab {meta['vocab_size']:,}, {meta['dtype']}"
    )


def _current(directory: Path, spec: TokensSpec, source: Source, settings: dict) -> tuple[Optional[dict], Optional[str]]:
    """(meta, None) when the dataset is up to date, else (None, why it must be built)."""
    try:
        meta = read_meta(directory)
    except DataError:
        return None, f"its {META} is unreadable"
    if meta is None:
        partial = any(is_shard_name(s, p.name) for s in SPLITS for p in directory.glob("*.bin"))
        return None, f"no {META}: an unfinished prepare" if partial else "not prepared yet"
    if meta.get("format") != FORMAT:
        return None, f"{META} has another format ({meta.get('format')!r})"
    old = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    changed = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
    changed += [f"{k} {v!r} -> (none)" for k, v in old.items() if k not in settings]
    if changed:
        return None, "changed: " + ", ".join(changed)
    if meta.get("tokenizer") != spec.tokenizer:  # a hand-edited meta.json
        return None, f"its {META} says tokenizer {meta.get('tokenizer')!r}, the spec {spec.tokenizer!r}"
    reason = unchanged(source, spec, meta.get("source"))
    if reason is not None:
        return None, reason
    try:
        verify(directory, meta)
    except DataError as e:
        return None, f"its files do not match {META}: {str(e).split(';')[0]}"
    return meta, None


# ------------------------------------------------------------------------------------ build


def _build(directory: Path, spec: TokensSpec, source: Source, settings: dict, *, progress: bool, say: Say) -> dict:
    fetch(source, spec, progress=progress)
    source_fp = fingerprint(source, spec, _previous_source(directory), progress=progress)
    work = directory / f".work-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    tmp = Shards(directory, spec.shard_tokens)

    def remove_partial_files() -> None:
        tmp.remove_temporary()
        shutil.rmtree(work, ignore_errors=True)

    # a signal that ends the process at once (nanogpt.signals) leaves nothing half made either
    try:
        with on_abort(remove_partial_files):
            corpus = load_corpus(source, spec, work_dir=work, progress=progress, say=say)
            if isinstance(corpus, TextStream):
                tokenizer, splits, dtype = _prepare_stream(corpus, spec, tmp, progress=progress)
            else:
                tokenizer, splits, dtype = _prepare_documents(corpus, spec, tmp, work, progress=progress)
                if source.format == "hf":
                    source_fp.update(hf_record(corpus.dataset), **corpus.revision)
            for name in SPLITS:
                if splits[name]["tokens"] == 0:  # cannot happen by construction; never write it
                    raise DataError(f"the {name} split of {spec.source!r} came out empty")
            meta: dict[str, Any] = {
                "format": FORMAT,
                "dataset": spec.dataset,
                **tokenizer.meta(),
                "dtype": dtype,
                "train": splits["train"],
                "val": splits["val"],
                "source": {"spec": spec.source, **source_fp},
                "settings": settings,
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": _versions(),
            }
            _commit(directory, tmp, meta)
            return meta
    finally:
        remove_partial_files()


class Shards:
    """Where `prepare` writes each split's token files: temporary names, renamed by `_commit`."""

    def __init__(self, directory: Path, shard_tokens: int):
        self.directory = directory
        self.shard_tokens = shard_tokens
        self.pid = os.getpid()

    def tmp_name(self, split: str, index: int) -> Path:
        return self.directory / f".{split}_{index:06d}.bin.{self.pid}.tmp"

    def write(self, split: str, arrays, dtype: str, **extra: int) -> dict:
        """Write a split's ids; its meta.json entry (temporary paths under "tmp" until `_commit`)."""
        writer = ShardWriter(functools.partial(self.tmp_name, split), dtype, self.shard_tokens)
        try:
            shards = writer.write_all(arrays).finish()
        except BaseException:
            writer.abandon()
            raise
        entry: dict[str, Any] = {"tokens": writer.tokens, "bytes": writer.tokens * np.dtype(dtype).itemsize,
                                 "sha256": writer.whole.hexdigest()}
        if len(shards) <= 1:  # one file: today's layout, `train.bin`, so small datasets look as they always did
            entry = {"file": f"{split}.bin", **entry, "tmp": shards[0]["tmp"] if shards else None}
        else:
            entry["shards"] = [{"file": shard_name(split, i), **s} for i, s in enumerate(shards)]
        entry.update(extra)
        return entry

    def remove_temporary(self) -> None:
        for path in self.directory.glob(f".*.bin.{self.pid}.tmp"):
            path.unlink(missing_ok=True)


def _commit(directory: Path, tmp: "Shards", meta: dict) -> None:
    """Put the new files in place, meta.json last; until then no dataset is accepted here.

    Token files of an earlier build that the new one does not have (more shards before, or one
    file where there are shards now) are removed, so the folder holds exactly what meta.json lists.
    """
    (directory / META).unlink(missing_ok=True)
    fsync_dir(directory)
    for split in SPLITS:
        entry = meta[split]
        files = entry["shards"] if "shards" in entry else [entry]
        for f in files:
            final = directory / f["file"]
            if f.get("tmp") is None:  # an empty split: refused before this point, never written
                raise DataError(f"the {split} split came out empty")
            os.replace(f.pop("tmp"), final)
            f["mtime_ns"] = os.stat(final).st_mtime_ns
        keep = {f["file"] for f in files}
        for old in directory.iterdir():
            if old.name not in keep and is_shard_name(split, old.name):
                old.unlink(missing_ok=True)
    fsync_dir(directory)
    write_meta(directory, meta)


def _previous_source(directory: Path) -> Optional[dict]:
    with contextlib.suppress(DataError):
        meta = read_meta(directory)
        if meta is not None and isinstance(meta.get("source"), dict):
            return meta["source"]
    return None


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for name in ("nanogpt", "tiktoken", "datasets"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def _workers(num_proc: int) -> int:
    return num_proc or available_cores()


# ----------------------------------------------------------------------------------- stream


def _prepare_stream(corpus: TextStream, spec: TokensSpec, tmp: Shards, *, progress: bool):
    text = corpus.text
    n = len(text)
    if n == 0:
        raise DataError(f"data.source {spec.source!r} is empty: there is no text to prepare")
    cut = math.floor(n * (1 - spec.val_fraction))
    if cut >= n:
        raise DataError(
            f"the val split comes out empty: data.val_fraction {spec.val_fraction!r} of {n:,} characters "
            f"is less than one character; raise data.val_fraction"
        )
    if cut <= 0:
        raise DataError(
            f"the train split comes out empty: 1 - data.val_fraction ({spec.val_fraction!r}) of {n:,} characters "
            f"is less than one character; lower data.val_fraction"
        )
    tokenizer = tokenizer_for(spec.tokenizer, text)
    dtype = dtype_for(tokenizer.vocab_size)
    bounds = {"train": (0, cut), "val": (cut, n)}
    splits = {}
    for name, (start, end) in bounds.items():
        with progress_bar(progress, total=end - start, unit="char", unit_scale=True, desc=f"tokenizing {name}") as bar:
            ids = encode_stream(tokenizer, text, start, end, num_threads=_workers(spec.num_proc), on_chars=bar.update)
            splits[name] = tmp.write(name, ids, dtype, chars=end - start)
    return tokenizer, splits, dtype


_SAFE_CUT = re.compile(r"[!-~][ \n]")


def safe_cuts(text: str, start: int, end: int, size: int) -> Iterator[tuple[int, int]]:
    """[start, end) as consecutive pieces of about `size` characters, cut where GPT-2's BPE can cut.

    A cut sits between a printable ASCII character and a space or newline. No pre-tokenizer
    piece of GPT-2's pattern spans such a boundary (pieces hold whitespace only as one leading
    space, or are all whitespace), and matching on either side does not look across it, so
    encoding the pieces one by one gives exactly the ids of encoding the whole.
    """
    pos = start
    while end - pos > size:
        m = _SAFE_CUT.search(text, pos + size - 1, end)
        if m is None:
            break
        yield pos, m.start() + 1
        pos = m.start() + 1
    if end > pos:
        yield pos, end


def encode_stream(
    tokenizer: Tokenizer,
    text: str,
    start: int = 0,
    end: Optional[int] = None,
    *,
    num_threads: int = 1,
    chunk_chars: int = STREAM_CHUNK_CHARS,
    on_chars: Optional[Callable[[int], Any]] = None,
) -> Iterator[np.ndarray]:
    """The ids of text[start:end], as arrays in order: exactly `tokenizer.encode(text[start:end])`.

    GPT-2 encodes safely cut chunks on `num_threads` threads, a bounded window of them in flight
    so memory stays flat whatever the length; char encodes chunk by chunk with numpy.
    """
    end = len(text) if end is None else end
    if isinstance(tokenizer, HFTokenizer):
        # one call: tokenizers that mark the start of a text (SentencePiece's leading "▁") would mark
        # every chunk's; the Rust library encodes a megabyte in well under a second
        yield np.asarray(tokenizer.encode(text[start:end]), dtype=np.uint32)
        if on_chars:
            on_chars(end - start)
        return
    if isinstance(tokenizer, CharTokenizer):
        for a in range(start, end, 1 << 23):
            b = min(a + (1 << 23), end)
            yield tokenizer.encode_array(text[a:b])
            if on_chars:
                on_chars(b - a)
        return
    encoding = tokenizer.encoding
    pieces = safe_cuts(text, start, end, chunk_chars)
    if num_threads <= 1:
        for a, b in pieces:
            yield np.asarray(encoding.encode_ordinary(text[a:b]), dtype=np.uint32)
            if on_chars:
                on_chars(b - a)
        return
    with ThreadPoolExecutor(num_threads) as pool:
        window: deque = deque()
        for a, b in pieces:
            window.append((b - a, pool.submit(encoding.encode_ordinary, text[a:b])))
            if len(window) >= 2 * num_threads:
                size, future = window.popleft()
                yield np.asarray(future.result(), dtype=np.uint32)
                if on_chars:
                    on_chars(size)
        while window:
            size, future = window.popleft()
            yield np.asarray(future.result(), dtype=np.uint32)
            if on_chars:
                on_chars(size)


# -------------------------------------------------------------------------------- documents


def _prepare_documents(corpus: Documents, spec: TokensSpec, tmp: Shards, work: Path, *, progress: bool):
    import datasets

    ds, column = corpus.dataset, corpus.column
    num_proc = _workers(spec.num_proc)
    nproc = num_proc if num_proc > 1 else None
    if len(ds) == 0:
        raise DataError(f"data.source {spec.source!r} is empty: it holds no documents")
    with datasets_progress(progress):
        if spec.tokenizer == "char":
            tokenizer: Tokenizer = CharTokenizer(_document_chars(ds, column, nproc, work), with_eot=True)
        else:
            tokenizer = tokenizer_for(spec.tokenizer)
        if tokenizer.eot_id is None:
            raise DataError(
                f"data.tokenizer {spec.tokenizer!r} has no end-of-sequence token to separate the documents of "
                f"{spec.source!r} (none named in its tokenizer_config.json, none of {', '.join(EOS_CANDIDATES)})"
            )
        dtype = dtype_for(tokenizer.vocab_size)
        parts = _split_documents(ds, column, spec, nproc, work)
        list_of = datasets.List if hasattr(datasets, "List") else datasets.Sequence  # List since datasets 4
        ids_feature = list_of(datasets.Value(dtype))
        features = datasets.Features({"ids": ids_feature, "chars": datasets.Value("int64")})
        splits = {}
        for name, part in parts.items():
            tokenized = part.map(
                tokenize_documents,
                batched=True,
                num_proc=nproc if len(part) > 1 else None,
                remove_columns=part.column_names,
                fn_kwargs={"column": column, "tokenizer": tokenizer.meta(), "source": spec.source},
                features=features,
                cache_file_name=str(work / f"{name}-tokens.arrow"),
                load_from_cache_file=False,
                new_fingerprint=f"nanogpt-{name}-tokens-{os.getpid()}",
                desc=f"tokenizing {name}",
            )
            chars = int(np.sum(tokenized.with_format("numpy")["chars"]))
            ids = _document_ids(tokenized, progress=progress, desc=f"writing {name}")
            splits[name] = tmp.write(name, ids, dtype, documents=len(part), chars=chars)
    if splits["train"]["chars"] + splits["val"]["chars"] == 0:
        raise DataError(f"data.source {spec.source!r} holds no text: all its {len(ds):,} documents are empty")
    return tokenizer, splits, dtype


def tokenize_documents(batch: dict, *, column: str, tokenizer: dict, source: str) -> dict:
    """`Dataset.map` function (batched): each document's ids followed by end-of-text."""
    tok = tokenizer_from_meta(tokenizer)
    texts = batch[column]
    if any(t is None for t in texts):
        raise DataError(f"a document of {source!r} has no text (null in column {column!r})")
    ids = tok.encode_batch(texts)
    for row in ids:
        row.append(tok.eot_id)
    return {"ids": ids, "chars": [len(t) for t in texts]}


def _char_counts(batch: dict, *, column: str) -> dict:
    return {"n": [len(t) if t is not None else 0 for t in batch[column]]}


def _distinct_chars(batch: dict, *, column: str) -> dict:
    seen = set()
    for t in batch[column]:
        if t is not None:
            seen.update(t)
    return {"chars": ["".join(sorted(seen))]}


def _document_chars(ds, column: str, nproc: Optional[int], work: Path) -> list[str]:
    """The sorted distinct characters of every document (a char vocabulary)."""
    per_batch = ds.map(
        _distinct_chars,
        batched=True,
        batch_size=10_000,
        num_proc=nproc if len(ds) > 1 else None,
        remove_columns=ds.column_names,
        fn_kwargs={"column": column},
        cache_file_name=str(work / "chars.arrow"),
        load_from_cache_file=False,
        new_fingerprint=f"nanogpt-chars-{os.getpid()}",
        desc="collecting characters",
    )
    seen: set[str] = set()
    for s in per_batch["chars"]:
        seen.update(s)
    return sorted(seen)


def _split_documents(ds, column: str, spec: TokensSpec, nproc: Optional[int], work: Path) -> dict[str, Any]:
    n = len(ds)
    vf = spec.val_fraction
    if spec.split == "random":
        n_val = math.ceil(vf * n)  # train_test_split's own rounding
        if n - n_val < 1:
            raise DataError(
                f"the train split comes out empty: {n:,} document(s) with data.val_fraction {vf!r} "
                f"leave none for train; use more documents or a smaller val_fraction"
            )
        parts = ds.train_test_split(
            test_size=vf,
            seed=spec.split_seed,
            shuffle=True,
            load_from_cache_file=False,
            train_indices_cache_file_name=str(work / "train-indices.arrow"),
            test_indices_cache_file_name=str(work / "val-indices.arrow"),
        )
        return {"train": parts["train"], "val": parts["test"]}
    lengths = ds.map(
        _char_counts,
        batched=True,
        num_proc=nproc if n > 1 else None,
        remove_columns=ds.column_names,
        fn_kwargs={"column": column},
        cache_file_name=str(work / "lengths.arrow"),
        load_from_cache_file=False,
        new_fingerprint=f"nanogpt-lengths-{os.getpid()}",
        desc="measuring documents",
    ).with_format("numpy")["n"]
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    total = int(ends[-1])
    if total == 0:
        raise DataError(f"data.source {spec.source!r} holds no text: all its {n:,} documents are empty")
    cut = math.floor(total * (1 - vf))
    k = int(np.searchsorted(ends, cut, side="right"))  # documents that end at or before the cut
    if k >= n:
        raise DataError(
            f"the val split comes out empty: data.val_fraction {vf!r} of {total:,} characters is less "
            f"than one character; raise data.val_fraction"
        )
    if k == 0:
        raise DataError(
            f"the train split comes out empty: the first document of {spec.source!r} already holds more "
            f"than 1 - data.val_fraction of the text; use split = \"random\" or a smaller val_fraction"
        )
    return {"train": ds.select(range(k)), "val": ds.select(range(k, n))}


def _document_ids(tokenized, *, progress: bool, desc: str) -> Iterator[np.ndarray]:
    import pyarrow.compute as pc

    with progress_bar(progress, total=len(tokenized), unit="doc", unit_scale=True, desc=desc) as bar:
        for batch in tokenized.with_format("arrow").iter(batch_size=8192):
            yield pc.list_flatten(batch["ids"]).to_numpy(zero_copy_only=False)
            bar.update(batch.num_rows)


# ------------------------------------------------------------------------------------- lock


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[list[Path]]:
    """Hold an exclusive lock on the dataset folder (created if need be) for the block.

    Yields the folders this call created, so a failure can remove them again. Stale temporary
    files of an earlier, killed prepare are removed once the lock is held.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking, one prepare at a time is on the user
        created = _makedirs(directory)
        _remove_stale(directory)
        yield created
        return
    while True:
        created = _makedirs(directory)
        fd = os.open(directory, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(directory).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the folder was removed (a failed prepare) while we waited: start over
    try:
        _remove_stale(directory)
        yield created
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _makedirs(directory: Path) -> list[Path]:
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
    return list(reversed(missing))


def _remove_stale(directory: Path) -> None:
    for path in directory.glob(".*.tmp"):
        path.unlink(missing_ok=True)
    for path in (directory / "source").glob(".*.part"):
        path.unlink(missing_ok=True)
    for path in directory.glob(".work-*"):
        shutil.rmtree(path, ignore_errors=True)


def _clean_up_after_failure(directory: Path, created: list[Path]) -> None:
    """Remove the folders a failed prepare created, where nothing worth keeping is in them."""
    with contextlib.suppress(OSError):
        (directory / "source").rmdir()  # only if empty: a finished download is kept
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


def ensure_prepared(spec: TokensSpec, *, progress: Optional[bool] = None, say=None) -> PreparedDataset:
    """Prepare the dataset if it is missing or out of date with the spec, then open it.

    Without `data.source` nothing can be prepared: an existing dataset is opened as it is, a
    missing one is a DataError saying so. `say` receives one line when something was built
    (default: stderr); an up-to-date dataset is opened silently.
    """
    if spec.source is None:
        return open_dataset(spec, progress=progress)
    prepare(spec, progress=progress, say=say, quiet_if_current=True)
    return open_dataset(spec, progress=progress)
