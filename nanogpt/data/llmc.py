"""Token shards in llm.c's and modded-nanogpt's format: read in place (`data.source = "bin:GLOB"`) and written
(`nanogpt prepare --format bin`).

A file is a header of 256 little-endian int32 (magic 20240520, version 1, the token count, the rest
zero; 1,024 bytes) followed by that many uint16 GPT-2 token ids. Files whose name holds "val" are
the validation split, the others train (modded-nanogpt's `fineweb_val_000000.bin`,
`fineweb_train_000001.bin`, ...), each split in name order.

Every file is checked before a token is read: a regular file inside the glob's folder (a link that
leads out of it is refused), a header that says what it is, and a size that is exactly the header
plus the count's tokens. Anything else is a DataError naming the file: a foreign file, a truncated
download and a header whose count runs past the end never become training data. The files are not
hashed (they are other projects' files, read as they are); the run's manifest records their names
and token counts.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from nanogpt.data.shards import ShardedTokens
from nanogpt.errors import DataError, InputError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_TOKENS = (1 << 31) - 1
"""The header's count is an int32."""
PREFIX = "bin:"
GPT2_VOCAB, GPT2_EOT = 50257, 50256
SPLITS = ("train", "val")


def is_bin_source(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def glob_folder(pattern: str) -> Path:
    """The folder a glob searches from: its path up to the first component with a wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def read_header(path: Path, folder: Path) -> int:
    """Check one shard file; its token count. DataError naming the file and what is wrong."""
    resolved = path.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise DataError(f"{path} leads to {resolved}, outside {folder}: links out of the shards' folder are not followed")
    try:
        st = os.stat(resolved)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    if not os.path.isfile(resolved):
        raise DataError(f"{path} is not a regular file")
    if st.st_size < HEADER_BYTES:
        raise DataError(f"{path} is {st.st_size:,} bytes, shorter than the {HEADER_BYTES}-byte header of a token shard (truncated?)")
    with open(resolved, "rb") as f:
        header = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    if int(header[0]) != MAGIC:
        raise DataError(f"{path} is not an llm.c token shard: its magic number is {int(header[0])}, not {MAGIC}")
    if int(header[1]) != VERSION:
        raise DataError(f"{path} is token shard version {int(header[1])}; only version {VERSION} (uint16 tokens) is read")
    count = int(header[2])
    body = st.st_size - HEADER_BYTES
    if count <= 0:
        raise DataError(f"{path}'s header counts {count} tokens: an empty or corrupt shard")
    if body != 2 * count:
        what = "truncated" if body < 2 * count else "longer than its header says"
        raise DataError(
            f"{path}'s header counts {count:,} tokens ({2 * count:,} bytes) but {body:,} bytes follow it: the file is {what}"
        )
    return count


def bin_files(source: str) -> dict[str, list[Path]]:
    """The train and val files a `bin:GLOB` source names, sorted by name. InputError when either split has none."""
    pattern = source[len(PREFIX):]
    paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    if not paths:
        raise InputError(f"data.source {source!r} matches no files")
    val = [p for p in paths if re.search(r"val", p.name)]
    train = [p for p in paths if p not in val]
    for split, found in (("train", train), ("val", val)):
        if not found:
            raise InputError(
                f"data.source {source!r} matches no {split} files (files whose name holds \"val\" are val, "
                f"the others train): it matched {', '.join(p.name for p in paths[:5])}{' ...' * (len(paths) > 5)}"
            )
    return {"train": train, "val": val}


def bin_dataset_parts(spec: Any) -> tuple[Path, dict, dict]:
    """(the glob's folder, a meta.json-shaped record, {split: ShardedTokens}) of a `bin:GLOB` source.

    Kept apart from `PreparedDataset` so that data.files can open a bin: source without this
    module importing it back."""
    if spec.tokenizer != "gpt2":
        raise InputError(f"data.source {spec.source!r} holds GPT-2 token ids; set data.tokenizer = \"gpt2\" (got {spec.tokenizer!r})")
    folder = glob_folder(spec.source[len(PREFIX):])
    files = bin_files(spec.source)
    meta: dict[str, Any] = {
        "format": "llmc-bin",
        "dataset": spec.dataset,
        "tokenizer": "gpt2",
        "vocab_size": GPT2_VOCAB,
        "eot_id": GPT2_EOT,
        "dtype": "uint16",
        "source": {"spec": spec.source, "kind": "bin"},
    }
    arrays = {}
    for split in SPLITS:
        counts = [read_header(p, folder) for p in files[split]]
        meta[split] = {
            "tokens": sum(counts),
            "glob": spec.source[len(PREFIX):],
            "shards": [{"file": str(p), "tokens": n} for p, n in zip(files[split], counts)],
        }
        arrays[split] = ShardedTokens(files[split], counts, "uint16", header_bytes=HEADER_BYTES)
    return folder, meta, arrays


def write_bin(path: Path, ids: np.ndarray) -> None:
    """One shard in llm.c's format: the header, then the ids as uint16; fsynced."""
    if len(ids) > MAX_TOKENS:
        raise DataError(f"{path}: {len(ids):,} tokens do not fit an llm.c shard (at most {MAX_TOKENS:,})")
    if len(ids) and int(np.max(ids)) >= 1 << 16:
        raise DataError(f"{path}: token ids above 65,535 do not fit an llm.c shard's uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, len(ids))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.ascontiguousarray(ids, dtype="<u2").tobytes())
        f.flush()
        os.fsync(f.fileno())


def export_bin(dataset: Any, out: Path, *, shard_tokens: int) -> list[Path]:
    """Write a prepared dataset's splits as llm.c shards `<out>/<dataset>_{train,val}_NNNNNN.bin`; their paths.

    Each file is written under a temporary name and renamed when complete.
    """
    if dataset.meta["dtype"] != "uint16":
        raise DataError(f"{dataset.dir} holds {dataset.meta['dtype']} ids; llm.c shards hold uint16 only")
    out.mkdir(parents=True, exist_ok=True)
    per_file = min(shard_tokens, MAX_TOKENS)
    written = []
    name = dataset.meta.get("dataset") or dataset.dir.name
    for split in SPLITS:
        tokens = dataset.split(split)
        for i, start in enumerate(range(0, len(tokens), per_file)):
            final = out / f"{name}_{split}_{i:06d}.bin"
            tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            try:
                write_bin(tmp, np.asarray(tokens[start : start + per_file]))
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(final)
        for old in out.glob(f"{name}_{split}_*.bin"):  # shards of an earlier, longer export
            if old not in written:
                old.unlink()
    return written
