"""A prepared dataset on disk: `<data_dir>/<dataset>/{train,val}.bin` and `meta.json`, opened and verified.

The .bin files are raw token ids (uint16, or uint32 when the vocabulary needs it), one split per
file, as nanoGPT's. meta.json is written last by `prepare`; a dataset without it is not a
dataset. Opening checks each file against meta.json: its size must be a whole number of tokens
and the recorded token count, and its content must have the recorded sha256. Hashing a 17 GB
file on every run would be absurd, so meta.json also records each file's size and mtime_ns and
the hash is recomputed only when they changed (git's index does the same); a file that hashes
fine after a change of mtime (a copy, a `touch`) has its new mtime recorded again.

meta.json's keys: `format`; `dataset`; `tokenizer` ("gpt2" | "char"), `vocab_size`, `eot_id`
(null for a char stream) and, for char, `chars` (the sorted vocabulary); `dtype`; `train` and
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
from typing import Any, Optional

import attrs
import numpy as np

from nanogpt.errors import DataError
from nanogpt.fileio import atomic_write_text, sha256_file, want_progress
from nanogpt.spec.tables import TokensSpec

META = "meta.json"
SPLITS = ("train", "val")
FORMAT = "nanogpt-tokens-1"
"""Value of meta.json's "format" key."""
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


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


def read_meta(directory: Path) -> Optional[dict]:
    """meta.json of a dataset folder; None when there is none. DataError when it is unreadable."""
    path = directory / META
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}); run `nanogpt prepare SPEC --force` to rebuild the dataset") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} holds a JSON {type(meta).__name__}, not an object")
    return meta


def write_meta(directory: Path, meta: dict) -> None:
    """meta.json, atomically (temporary file, fsync, rename)."""
    atomic_write_text(directory / META, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- verification


def _split_entry(meta: dict, split: str, directory: Path) -> dict:
    entry = meta.get(split)
    keys = ("file", "tokens", "bytes", "sha256")
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        raise DataError(f"{directory / META} lacks a complete {split!r} entry ({', '.join(keys)}); rebuild it with `nanogpt prepare SPEC --force`")
    return entry


def _dtype_of(meta: dict, directory: Path) -> np.dtype:
    name = meta.get("dtype")
    if name not in DTYPES:
        raise DataError(f"{directory / META} names dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return np.dtype(DTYPES[name])


def verify_split(directory: Path, meta: dict, split: str, *, progress: bool = False) -> bool:
    """Check one .bin against meta.json; True when its recorded mtime had to be refreshed.

    DataError names the file and what is wrong: missing, a size that is not a whole number of
    tokens, a token count other than meta.json's, a sha256 other than meta.json's.
    """
    entry = _split_entry(meta, split, directory)
    dtype = _dtype_of(meta, directory)
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
    """Check every split against meta.json (see `verify_split`), refreshing recorded mtimes."""
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{directory / META} has format {meta.get('format')!r}, not {FORMAT!r}; rebuild it with `nanogpt prepare SPEC --force`"
        )
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
        """Path of a split's .bin, as given (not made absolute)."""
        return self.dir / self.meta[split]["file"]

    def record(self) -> dict[str, Any]:
        """What a run's manifest records about its data (see `dataset_record`)."""
        return dataset_record(self)


def open_dataset(spec: TokensSpec, *, progress: Optional[bool] = None) -> PreparedDataset:
    """Open `<data_dir>/<dataset>` for reading, after checking it against its meta.json.

    DataError, with what to do, for a dataset that is missing, half written, truncated or corrupt.
    """
    directory = dataset_dir(spec)
    meta = read_meta(directory)
    if meta is None:
        if not directory.exists():
            what = f"{directory} does not exist"
        elif any((directory / f"{s}.bin").exists() for s in SPLITS):
            what = f"{directory} has no {META} (an unfinished prepare, or files from elsewhere)"
        else:
            what = f"{directory} holds no prepared dataset"
        hint = "run `nanogpt prepare SPEC`" if spec.source else "set data.source and run `nanogpt prepare SPEC`"
        raise DataError(f"{what}; {hint}")
    verify(directory, meta, progress=want_progress(progress))
    maps = {}
    for split in SPLITS:
        entry = meta[split]
        if entry["tokens"] == 0:
            raise DataError(f"{directory / entry['file']} is empty; rebuild the dataset with `nanogpt prepare SPEC --force`")
        maps[split] = np.memmap(directory / entry["file"], dtype=_dtype_of(meta, directory), mode="r")
    for key in ("tokenizer", "vocab_size"):
        if key not in meta:
            raise DataError(f"{directory / META} lacks {key!r}; rebuild it with `nanogpt prepare SPEC --force`")
    return PreparedDataset(dir=directory, meta=meta, train=maps["train"], val=maps["val"])


def dataset_record(ds: PreparedDataset) -> dict[str, Any]:
    """The manifest's `data`: {"train"/"val": {path, tokens, sha256}, "tokenizer", "vocab_size"}.

    Paths are as the spec gives them (data_dir/dataset/file), not made absolute.
    """
    record: dict[str, Any] = {
        split: {
            "path": str(ds.path(split)),
            "tokens": int(ds.meta[split]["tokens"]),
            "sha256": ds.meta[split]["sha256"],
        }
        for split in SPLITS
    }
    record["tokenizer"] = ds.tokenizer_name
    record["vocab_size"] = ds.vocab_size
    source = ds.meta.get("source")
    if isinstance(source, dict) and source.get("kind") == "hf":  # a hub dataset changes under its name
        record["source"] = {k: source.get(k) for k in ("spec", "revision", "revision_read", "resolved_revision")}
    return record


def ensure_prepared(spec: TokensSpec, *, progress: Optional[bool] = None, say=None) -> PreparedDataset:
    """Prepare the dataset if it is missing or out of date with the spec, then open it.

    Without `data.source` nothing can be prepared: an existing dataset is opened as it is, a
    missing one is a DataError saying so. `say` receives one line when something was built
    (default: stderr); an up-to-date dataset is opened silently.
    """
    if spec.source is None:
        return open_dataset(spec, progress=progress)
    from nanogpt.data.prepare import prepare

    prepare(spec, progress=progress, say=say, quiet_if_current=True)
    return open_dataset(spec, progress=progress)
