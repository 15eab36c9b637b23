"""Token shards: a split written as several files of at most `data.shard_tokens` tokens, and read back
as one array (their concatenation).

A split that fits in one shard is written as today's single `<split>.bin`, so a small dataset, and
every dataset prepared before shards existed, has exactly the seed's layout. A bigger split becomes
`<split>_000000.bin`, `<split>_000001.bin`, ... and meta.json's entry for it lists them under
`shards` (each one's file, tokens, bytes, sha256 and mtime_ns) beside the split's totals.

Reading: `ShardedTokens` is the concatenation of a split's shards addressed by global position
(an index from position to shard: a binary search over the shards' starting offsets). Shards are
mapped lazily and at most `max_open` of them are kept (least recently used unmapped first), so a
10,000-shard dataset holds a bounded number of files open (`default_max_open`). A window is one
copy out of its shard's map (two where it spans a boundary).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import numpy as np

SHARD_DIGITS = 6


def default_max_open() -> int:
    """How many shard files a reader keeps open: 1,024, or a quarter of the process's descriptor limit if lower.

    Enough for a 1,000-shard dataset to stay open (an open and a close per window would cost more
    than the read), few enough to leave the limit to everything else.
    """
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    return 1024 if soft == resource.RLIM_INFINITY else max(16, min(1024, soft // 4))


def shard_name(split: str, index: int) -> str:
    """`train_000000.bin` and on: the name of a split's index-th shard."""
    return f"{split}_{index:0{SHARD_DIGITS}d}.bin"


def is_shard_name(split: str, name: str) -> bool:
    """Whether `name` is one of `split`'s shard names (or its single file)."""
    if name == f"{split}.bin":
        return True
    stem = name[len(split) + 1 : -len(".bin")]
    return name.startswith(f"{split}_") and name.endswith(".bin") and len(stem) == SHARD_DIGITS and stem.isdigit()


# ------------------------------------------------------------------------------------- writing


class ShardWriter:
    """Writes a split's token arrays as consecutive shards of at most `shard_tokens` tokens.

    Each shard goes to a temporary name (`tmp_name(index)`), fsynced when full; `finish` returns
    the shards' entries in order (temporary path, tokens, bytes, sha256) and the sha256 and token
    count of the whole split. Nothing is renamed here: the caller puts the shards in place.
    """

    def __init__(self, tmp_name, dtype: str, shard_tokens: int):
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens must be at least 1 (got {shard_tokens})")
        self.tmp_name = tmp_name
        self.dtype = np.dtype(dtype)
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.whole = hashlib.sha256()
        self.tokens = 0
        self._file = None
        self._digest = None
        self._in_shard = 0

    def _open_next(self) -> None:
        path = self.tmp_name(len(self.shards))
        self._file = open(path, "wb")
        self._digest = hashlib.sha256()
        self._in_shard = 0
        self.shards.append({"tmp": path})

    def _close_current(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self.shards[-1].update(
            tokens=self._in_shard, bytes=self._in_shard * self.dtype.itemsize, sha256=self._digest.hexdigest()
        )

    def write(self, ids: Any) -> None:
        out = np.ascontiguousarray(ids, dtype=self.dtype)
        pos = 0
        while pos < len(out):
            if self._file is None or self._in_shard == self.shard_tokens:
                self._close_current()
                self._open_next()
            take = min(len(out) - pos, self.shard_tokens - self._in_shard)
            buf = memoryview(out[pos : pos + take]).cast("B")
            self._file.write(buf)
            self._digest.update(buf)
            self.whole.update(buf)
            self._in_shard += take
            self.tokens += take
            pos += take

    def write_all(self, arrays: Iterable[Any]) -> "ShardWriter":
        for ids in arrays:
            self.write(ids)
        return self

    def finish(self) -> list[dict[str, Any]]:
        self._close_current()
        return self.shards

    def abandon(self) -> None:
        """Close and remove what was written (a failed prepare)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for shard in self.shards:
            Path(shard["tmp"]).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- reading


class ShardedTokens:
    """Read-only token ids of several files, addressed as their concatenation.

    Supports what the batch builder and the evaluators use of an np.memmap: `len`, `dtype`,
    `shape`, integer and slice indexing, indexing by an array of positions, and `windows`
    (the rows of `width` tokens starting at each of `starts`, in one array).
    """

    def __init__(self, paths: list[Path], counts: list[int], dtype: str, *, max_open: Optional[int] = None, header_bytes: int = 0):
        if len(paths) != len(counts) or not paths:
            raise ValueError("ShardedTokens needs one token count per file, and at least one file")
        self.paths = [Path(p) for p in paths]
        self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.dtype = np.dtype(dtype)
        self.max_open = max(1, default_max_open() if max_open is None else max_open)
        self._starts = self.offsets.tolist()  # plain ints: the per-window arithmetic stays out of numpy scalars
        self._counts = self.counts.tolist()
        self.header_bytes = header_bytes  # bytes before the first token of each file (llm.c's shards: 1,024)
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    @property
    def ndim(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"ShardedTokens({len(self.paths)} shards, {len(self):,} tokens, {self.dtype.name})"

    # shards mapped lazily, least recently used unmapped first
    def _array(self, shard: int) -> np.ndarray:
        arr = self._maps.get(shard)
        if arr is not None:
            self._maps.move_to_end(shard)
            return arr
        path = self.paths[shard]
        with open(path, "rb") as f:
            try:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                arr = np.frombuffer(mapped, dtype=self.dtype, count=self._counts[shard], offset=self.header_bytes)
            except ValueError as e:  # shorter than its count: changed since it was checked
                raise OSError(f"{path} holds fewer than its {self._counts[shard]:,} tokens (truncated?): {e}") from None
        self._maps[shard] = arr
        while len(self._maps) > self.max_open:
            self._maps.popitem(last=False)  # the map (and its descriptor) goes when the last view does
        return arr

    @property
    def open_files(self) -> int:
        return len(self._maps)

    def close(self) -> None:
        self._maps.clear()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": OrderedDict()}

    def _read_into(self, out: np.ndarray, start: int, shard: int) -> None:
        """Fill `out` with the tokens from global position `start`, which lies in `shard`, onward."""
        filled = 0
        n = len(out)
        while filled < n:
            local = start + filled - self._starts[shard]
            take = min(n - filled, self._counts[shard] - local)
            if take > 0:
                out[filled : filled + take] = self._array(shard)[local : local + take]
                filled += take
            shard += 1

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the concatenation, as a new array."""
        start, stop = max(0, start), min(len(self), stop)
        out = np.empty(max(0, stop - start), dtype=self.dtype)
        if len(out):
            shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
            self._read_into(out, start, shard)
        return out

    def windows(self, starts: np.ndarray, width: int) -> np.ndarray:
        """(len(starts), width): row i is tokens [starts[i], starts[i] + width)."""
        starts = np.asarray(starts, dtype=np.int64)
        if len(starts) and (starts.min() < 0 or starts.max() + width > len(self)):
            raise IndexError(f"a window of {width} tokens runs outside the {len(self):,} tokens")
        out = np.empty((len(starts), width), dtype=self.dtype)
        shards = (np.searchsorted(self.offsets, starts, side="right") - 1).tolist()
        for row, (start, shard) in enumerate(zip(starts.tolist(), shards)):
            local = start - self._starts[shard]
            if local + width <= self._counts[shard]:  # the common case: one copy from one shard
                out[row] = self._array(shard)[local : local + width]
            else:
                self._read_into(out[row], start, shard)
        return out

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self.read(start, stop)
            if step > 0:
                return self.read(start, stop)[::step]
            return self[np.arange(start, stop, step)]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"index {int(key)} is out of bounds for {len(self):,} tokens")
            return self.read(i, i + 1)[0]
        idx = np.asarray(key)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"ShardedTokens is indexed by ints, slices or integer arrays, not {idx.dtype}")
        flat = idx.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + len(self), flat)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"an index is out of bounds for {len(self):,} tokens")
        out = np.empty(len(flat), dtype=self.dtype)
        shard_of = np.searchsorted(self.offsets, flat, side="right") - 1
        for shard in np.unique(shard_of).tolist():
            mask = shard_of == shard
            local = flat[mask] - self.offsets[shard]
            lo, hi = int(local.min()), int(local.max()) + 1
            block = np.empty(hi - lo, dtype=self.dtype)
            self._read_into(block, int(self.offsets[shard]) + lo, shard)
            out[mask] = block[local - lo]
        return out.reshape(idx.shape)

    def __array__(self, dtype: Optional[Any] = None, copy: Optional[bool] = None) -> np.ndarray:
        whole = self.read(0, len(self))
        return whole if dtype is None else whole.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        return self.read(0, len(self)).astype(dtype)


def windows(data: Any, starts: np.ndarray, width: int) -> np.ndarray:
    """Rows of `width` tokens from each start: a memmap by fancy indexing, shards by `ShardedTokens.windows`."""
    if isinstance(data, ShardedTokens):
        return data.windows(starts, width)
    return data[np.asarray(starts)[:, None] + np.arange(width)]
