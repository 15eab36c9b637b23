"""A prepared dataset on disk: `<data_dir>/<dataset>/{train,val}.bin` and `meta.json`, opened and verified.

The .bin files are raw token ids (uint16, or uint32 when the vocabulary needs it), one split per
file, as nanoGPT's. meta.json is written last by `prepare`; a dataset without it is not a
dataset. Opening checks each file against meta.json: its size must be a whole number of tokens
and the recorded token count, and its content must have the recorded sha256. Hashing a 17 GB
file on every run would be absurd, so meta.json also records each file's size and mtime_ns and
the hash is recomputed only when they changed (git's index does the same); a file that hashes
fine after a change of mtime (a copy, a `touch`) has its new mtime recorded again.

meta.json's keys: `format`; `dataset`; `tokenizer` ("gpt2" | "char" | "hf:PATH_OR_ID"), `vocab_size`,
`eot_id` (null for a char stream) and, for char, `chars` (the sorted vocabulary), for hf: `bos_id`,
`tokenizer_sha256` and the whole `tokenizer_json`; `dtype`; `train` and
`val`: {`file`, `tokens`, `bytes`, `sha256`, `mtime_ns`, `chars`, and `documents` for a source
of documents}; `source`: {`spec`, `kind`, `sha256` of the content, `files` with each one's
stat and hash; the url; for hf: `id`, `config`, the loaded dataset's `fingerprint`, `version`,
`num_rows`, `download_checksums`}; `settings` (what shaped the files); `created_at`; `versions`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import attrs

if TYPE_CHECKING:
    import numpy as np

from nanogpt.config.tables import TokensSpec
from nanogpt.errors import DataError
from nanogpt.fileio import (
    atomic_write_text,
    inside,
    read_regular_bytes,
    sha256_file,
    want_progress,
)

META = "meta.json"
SPLITS = ("train", "val")
FORMAT = "nanogpt-tokens-1"
"""Value of meta.json's "format" key."""
DTYPES = {"uint16": 2, "uint32": 4}
"""The token dtypes by name, and their bytes; numpy is imported only to read the tokens, so `check`
(which asks for a dataset's vocabulary) stays free of it."""


def dataset_dir(spec: TokensSpec) -> Path:
    """`<data_dir>/<dataset>`, as given (relative to the working directory unless absolute)."""
    return Path(spec.data_dir) / spec.dataset


def dtype_for(vocab_size: int) -> str:
    """The smallest id dtype that holds every id of a vocabulary: "uint16" or "uint32"."""
    if vocab_size <= 1 << 16:
        return "uint16"
    if vocab_size <= 1 << 32:
        return "uint32"
    raise DataError(f"a vocabulary of {vocab_size:,} ids does not fit uint32 token files (at most {1 << 32:,})")


# -------------------------------------------------------------------------------- plumbing


MAX_META_BYTES = 64 << 20
"""meta.json is a few kB (a char vocabulary, a list of source files); anything this big is not one."""


def read_meta(directory: Path) -> Optional[dict]:
    """meta.json of a dataset folder; None when there is none. DataError when it is unreadable.

    Never blocks: a FIFO or device named meta.json is refused unread. The contents are checked
    when the dataset is opened (`check_meta`), not here.
    """
    path = directory / META
    try:
        text = read_regular_bytes(path, MAX_META_BYTES).decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    try:
        meta = json.loads(text)
    except RecursionError:
        raise DataError(f"{path} nests too deeply to be a dataset record; run `nanogpt prepare SPEC --force` to rebuild it") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}); run `nanogpt prepare SPEC --force` to rebuild the dataset") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} holds a JSON {type(meta).__name__}, not an object")
    return meta


def write_meta(directory: Path, meta: dict) -> None:
    """meta.json, atomically (temporary file, fsync, rename)."""
    atomic_write_text(directory / META, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- verification


def check_meta(meta: dict, directory: Path) -> None:
    """Check the fields of meta.json a dataset is opened by: their types, ranges and agreement.

    DataError listing every problem: a hand-edited or foreign meta.json is refused with a clear
    message (and `prepare` rebuilds it), never followed into a traceback, an IndexError in the
    embedding, or a file outside the dataset's folder.
    """
    problems = []

    def want(ok: bool, key: str, what: str) -> bool:
        if not ok:
            value = _lookup(meta, key)
            problems.append(f"{key}: {what} (found {_shown(value)})")
        return ok

    want(meta.get("format") == FORMAT, "format", f"must be {FORMAT!r}")
    tokenizer = meta.get("tokenizer")
    want(isinstance(tokenizer, str) and bool(tokenizer), "tokenizer", "must name the tokenizer")
    vocab = meta.get("vocab_size")
    vocab_ok = want(_count(vocab) and vocab > 0, "vocab_size", "must be a positive integer")
    eot = meta.get("eot_id")
    if want(eot is None or _count(eot), "eot_id", "must be null or a token id") and vocab_ok and eot is not None:
        want(eot < vocab, "eot_id", f"must be below vocab_size ({vocab})")
    dtype_ok = want(meta.get("dtype") in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
    if dtype_ok and vocab_ok:
        want(vocab <= 256 ** DTYPES[meta["dtype"]], "vocab_size", f"does not fit {meta['dtype']} token ids")
    if tokenizer == "char":
        chars = meta.get("chars")
        if want(isinstance(chars, list) and all(isinstance(c, str) and len(c) == 1 for c in chars), "chars",
                "must list the vocabulary as single characters") and vocab_ok:
            want(vocab == len(chars) + (eot is not None), "vocab_size",
                 f"must be the number of chars{' plus the end-of-text id' if eot is not None else ''} ({len(chars) + (eot is not None)})")
    elif tokenizer == "gpt2" and vocab_ok:
        from nanogpt.data.tokenizers import GPT2_EOT, GPT2_VOCAB_SIZE

        want(vocab == GPT2_VOCAB_SIZE, "vocab_size", f"must be {GPT2_VOCAB_SIZE} for the gpt2 tokenizer")
        want(eot == GPT2_EOT, "eot_id", f"must be {GPT2_EOT} for the gpt2 tokenizer")
    for split in SPLITS:
        entry = meta.get(split)
        if not want(isinstance(entry, dict), split, "must be an object with file (or shards), tokens, bytes and sha256"):
            continue
        if "shards" in entry:
            shards = entry["shards"]
            if want(isinstance(shards, list) and len(shards) > 0 and all(isinstance(s, dict) for s in shards),
                    f"{split}.shards", "must be a non-empty list of objects"):
                for i, shard in enumerate(shards):
                    _check_file_entry(want, directory, shard, f"{split}.shards.{i}")
                if all(_count(s.get("tokens")) for s in shards) and _count(entry.get("tokens")):
                    want(sum(s["tokens"] for s in shards) == entry["tokens"], f"{split}.tokens",
                         "must be the sum of its shards' tokens")
            want(_count(entry.get("tokens")), f"{split}.tokens", "must be a whole number")
            want(_count(entry.get("bytes")), f"{split}.bytes", "must be a whole number")
            want(_sha(entry.get("sha256")), f"{split}.sha256", "must be 64 hex digits")
        else:
            _check_file_entry(want, directory, entry, split)
        want(entry.get("chars") is None or _count(entry.get("chars")), f"{split}.chars", "must be null or a whole number")
    for key in ("source", "settings"):
        want(meta.get(key) is None or isinstance(meta.get(key), dict), key, "must be an object")
    if isinstance(meta.get("source"), dict) and "files" in meta["source"]:
        files = meta["source"]["files"]
        want(isinstance(files, list) and all(isinstance(f, dict) for f in files), "source.files", "must be a list of objects")
    if problems:
        raise DataError(
            f"{directory / META} is not a valid dataset record ({len(problems)} problem{'s' * (len(problems) > 1)}):\n  "
            + "\n  ".join(problems) + "\nrebuild it with `nanogpt prepare SPEC --force`"
        )


def _check_file_entry(want, directory: Path, entry: dict, key: str) -> None:
    """One token file's record: {file, tokens, bytes, sha256, mtime_ns}."""
    path = inside(directory, entry.get("file"))
    want(path is not None and path.parent == directory.resolve(), f"{key}.file",
         "must name a file in the dataset's folder (paths outside it are never followed)")
    want(_count(entry.get("tokens")), f"{key}.tokens", "must be a whole number")
    want(_count(entry.get("bytes")), f"{key}.bytes", "must be a whole number")
    want(_sha(entry.get("sha256")), f"{key}.sha256", "must be 64 hex digits")
    want(entry.get("mtime_ns") is None or _count(entry.get("mtime_ns")), f"{key}.mtime_ns", "must be null or a whole number")


def _sha(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def split_files(entry: dict) -> list[dict]:
    """The token files of a split's meta.json entry, in order: its shards, or the entry itself (one file)."""
    return entry["shards"] if "shards" in entry else [entry]


def _count(value: Any) -> bool:
    """A non-negative int (JSON's bools are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _lookup(meta: dict, dotted: str) -> Any:
    value: Any = meta
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def verify_split(directory: Path, meta: dict, split: str, *, progress: bool = False) -> bool:
    """Check a split's files (one .bin, or each shard) against meta.json; True when a recorded mtime had to be refreshed."""
    refreshed = [verify_file(directory, meta, entry, progress=progress) for entry in split_files(meta[split])]
    return any(refreshed)


def verify_file(directory: Path, meta: dict, entry: dict, *, progress: bool = False) -> bool:
    """Check one .bin against its meta.json record; True when its recorded mtime had to be refreshed.

    DataError names the file and what is wrong: missing, a size that is not a whole number of
    tokens, a token count other than meta.json's, a sha256 other than meta.json's.
    """
    import numpy as np

    dtype = np.dtype(meta["dtype"])
    path = directory / entry["file"]
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run `nanogpt prepare SPEC` to build the dataset") from None
    if st.st_size % dtype.itemsize:
        raise DataError(
            f"{path} is {st.st_size:,} bytes, not a whole number of {dtype.name} tokens "
            f"({dtype.itemsize} bytes each): it is truncated or corrupt; rebuild it with `nanogpt prepare SPEC --force`"
        )
    tokens = st.st_size // dtype.itemsize
    if tokens != entry["tokens"] or st.st_size != entry["bytes"]:
        raise DataError(
            f"{path} holds {tokens:,} tokens but meta.json records {entry['tokens']:,}: it is truncated or "
            f"was replaced; rebuild it with `nanogpt prepare SPEC --force`"
        )
    if st.st_mtime_ns == entry.get("mtime_ns"):
        return False
    digest = sha256_file(path, progress=progress)
    if digest != entry["sha256"]:
        raise DataError(
            f"{path} has sha256 {digest}, but meta.json records {entry['sha256']}: the file is corrupt "
            f"or was replaced; rebuild it with `nanogpt prepare SPEC --force`"
        )
    entry["mtime_ns"] = st.st_mtime_ns
    return True


def verify(directory: Path, meta: dict, *, progress: bool = False) -> None:
    """Check meta.json (`check_meta`), then every split against it (`verify_split`), refreshing recorded mtimes."""
    check_meta(meta, directory)
    refreshed = [verify_split(directory, meta, split, progress=progress) for split in SPLITS]
    if any(refreshed):
        # Remember the new mtimes so the next open skips hashing. A read-only data folder, or a
        # concurrent rank doing the same, is fine: the next open just hashes again.
        with contextlib.suppress(OSError):
            write_meta(directory, meta)


# ---------------------------------------------------------------------------------- opening


@attrs.frozen(kw_only=True, slots=False)
class PreparedDataset:
    """A verified dataset: read-only memory maps of its token files and its meta.json."""

    dir: Path
    """`<data_dir>/<dataset>` as the spec gives it (relative to the working directory unless absolute)."""
    meta: dict[str, Any] = attrs.field(repr=False)
    """meta.json's contents (do not mutate)."""
    train: np.memmap = attrs.field(repr=False, eq=False)
    """Training token ids, read-only."""
    val: np.memmap = attrs.field(repr=False, eq=False)
    """Validation token ids, read-only."""

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def dtype(self) -> np.dtype:
        return self.train.dtype

    @property
    def eot_id(self) -> Optional[int]:
        return self.meta.get("eot_id")

    @property
    def tokenizer_name(self) -> str:
        return self.meta["tokenizer"]

    @functools.cached_property
    def tokenizer(self):
        """The dataset's tokenizer, built on first use (GPT-2's BPE takes a moment)."""
        from nanogpt.data.tokenizers import tokenizer_from_meta

        return tokenizer_from_meta(self.meta)

    def split(self, name: str) -> np.memmap:
        """The token ids of "train" or "val"."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r} (known: {', '.join(SPLITS)})")
        return self.train if name == "train" else self.val

    def path(self, split: str) -> Path:
        """Path of a split's .bin (for shards, the glob that matches them), as given (not made absolute)."""
        return dataset_path(self.dir, self.meta[split])

    def shards(self, split: str) -> int:
        """How many files hold a split (1 for today's single .bin)."""
        return len(split_files(self.meta[split]))

    def record(self) -> dict[str, Any]:
        """What a run's manifest records about its data (see `dataset_record`)."""
        return dataset_record(self)


def open_dataset(spec: TokensSpec, *, progress: Optional[bool] = None) -> PreparedDataset:
    """Open `<data_dir>/<dataset>` for reading, after checking it against its meta.json.

    DataError, with what to do, for a dataset that is missing, half written, truncated or corrupt.
    """
    from nanogpt.data.llmc import bin_dataset_parts, is_bin_source

    if is_bin_source(spec.source):  # other projects' shards, read in place
        folder, meta, arrays = bin_dataset_parts(spec)
        return PreparedDataset(dir=folder, meta=meta, train=arrays["train"], val=arrays["val"])
    directory = dataset_dir(spec)
    meta = read_meta(directory)
    if meta is None:
        if not directory.exists():
            what = f"{directory} does not exist"
        elif any(_token_files(directory)):
            what = f"{directory} has no {META} (an unfinished prepare, or files from elsewhere)"
        else:
            what = f"{directory} holds no prepared dataset"
        hint = "run `nanogpt prepare SPEC`" if spec.source else "set data.source and run `nanogpt prepare SPEC`"
        raise DataError(f"{what}; {hint}")
    verify(directory, meta, progress=want_progress(progress))
    if meta["tokenizer"] != spec.tokenizer:
        raise DataError(
            f"{directory} was tokenized with {meta['tokenizer']!r}, but the spec says data.tokenizer = "
            f"{spec.tokenizer!r}; rebuild it with `nanogpt prepare SPEC --force` (or name another data.dataset)"
        )
    import numpy as np

    maps = {}
    for split in SPLITS:
        entry = meta[split]
        if entry["tokens"] == 0:
            raise DataError(f"{dataset_path(directory, entry)} is empty; rebuild the dataset with `nanogpt prepare SPEC --force`")
        if "shards" in entry:
            from nanogpt.data.shards import ShardedTokens

            shards = entry["shards"]
            maps[split] = ShardedTokens([directory / s["file"] for s in shards], [s["tokens"] for s in shards], meta["dtype"])
        else:
            maps[split] = np.memmap(directory / entry["file"], dtype=meta["dtype"], mode="r")
    return PreparedDataset(dir=directory, meta=meta, train=maps["train"], val=maps["val"])


def dataset_path(directory: Path, entry: dict) -> Path:
    """The file of a one-file split, or for a sharded one the glob of its shards (`train_*.bin`)."""
    if "glob" in entry:  # a bin: source's files, where they are
        return Path(entry["glob"])
    if "shards" in entry:
        first = entry["shards"][0]["file"]
        return directory / (first.rsplit("_", 1)[0] + "_*.bin")
    return directory / entry["file"]


def _token_files(directory: Path) -> list[Path]:
    from nanogpt.data.shards import is_shard_name

    return [p for p in directory.glob("*.bin") if any(is_shard_name(s, p.name) for s in SPLITS)]


def prepared_vocab_size(spec: Any) -> Optional[int]:
    """The vocabulary of the dataset a `[data]` table names, from its meta.json; None when it is not
    prepared (or the kind keeps no files). The one place outside an opened dataset that reads it:
    DataError when meta.json is unreadable or its vocab_size is no positive integer."""
    data_dir, dataset = getattr(spec, "data_dir", None), getattr(spec, "dataset", None)
    if not isinstance(data_dir, str) or not isinstance(dataset, str):
        return None
    meta = read_meta(Path(data_dir, dataset))
    if meta is None:
        return None
    vocab = meta.get("vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise DataError(f"{Path(data_dir, dataset, META)}: vocab_size must be a positive integer (got {vocab!r})")
    return vocab


def dataset_record(ds: PreparedDataset) -> dict[str, Any]:
    """The manifest's `data`: {"train"/"val": {path, tokens, sha256}, "tokenizer", "vocab_size"}.

    Paths are as the spec gives them (data_dir/dataset/file), not made absolute.
    """
    record: dict[str, Any] = {
        split: {
            "path": str(ds.path(split)),
            "tokens": int(ds.meta[split]["tokens"]),
            "sha256": ds.meta[split].get("sha256"),  # None for a bin: source (read in place, not hashed)
            **({"shards": ds.shards(split)} if ds.shards(split) > 1 else {}),
        }
        for split in SPLITS
    }
    record["tokenizer"] = ds.tokenizer_name
    if "tokenizer_sha256" in ds.meta:  # a Hugging Face tokenizer: its name may come to mean another file
        record["tokenizer_sha256"] = ds.meta["tokenizer_sha256"]
    record["vocab_size"] = ds.vocab_size
    source = ds.meta.get("source")
    if isinstance(source, dict) and source.get("kind") == "hf":  # a hub dataset changes under its name
        record["source"] = {k: source.get(k) for k in ("spec", "revision", "revision_read", "resolved_revision")}
    return record
