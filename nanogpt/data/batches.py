"""Batches of token windows, each a pure function of (seed, iteration, micro-step).

One optimizer step (an iteration) consumes `grad_accum` micro-batches of `batch_size` windows,
numbered 0..grad_accum-1 across the whole job. Micro-batch m of iteration i is drawn from a
generator seeded with (seed, i, m), whatever process computes it, so:

- a resumed run sees exactly the batches an uninterrupted one would (no loader state to save);
- with `data.align = "document"` the starts are drawn from the positions where documents begin
  (found once at start-up), so every sequence starts at a document's first token;
- N processes see the same global batches as one: rank r takes a contiguous share of the
  micro-batch numbers (world-size invariance by construction, not by bookkeeping).

Evaluation batches are fixed the same way, from (seed, split, k): every evaluation of every run
with the same seed scores the same windows.

A sharded split is drawn over the concatenation of its shards (`nanogpt.data.shards`): the same
starts as from the one file they concatenate to, so the batches are the same numbers either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from nanogpt.contracts import Process
from nanogpt.data.shards import windows
from nanogpt.errors import DataError
from nanogpt.config.tables import TokensSpec

_TRAIN, _EVAL, _FIXED_VAL = 0, 1, 2
SPLITS = ("train", "val")


class TokenBatches:
    """Train and eval batches of one prepared dataset, for one process of the job (a `nanogpt.contracts.Batches`)."""

    def __init__(self, dataset: Any, *, seed: int, batch_size: int, block_size: int, env: Process, val_tokens: int = 0,
                 align: str = "token"):
        self.dataset = dataset
        self.val_tokens = val_tokens
        self.align = align
        self.seed = seed
        self.batch_size = batch_size
        self.block_size = block_size
        self.env = env
        self.arrays = {"train": dataset.train, "val": dataset.val}
        for split, arr in self.arrays.items():
            if len(arr) < block_size + 1:
                raise DataError(
                    f"{split}.bin of dataset {dataset.dir} holds {len(arr)} tokens; "
                    f"a block_size of {block_size} needs at least {block_size + 1}"
                )
        if val_tokens:
            per_batch = batch_size * block_size
            if val_tokens % per_batch:
                raise DataError(
                    f"data.val_tokens ({val_tokens:,}) must be a whole number of evaluation batches of "
                    f"batch_size x block_size = {per_batch:,} tokens (e.g. {val_tokens // per_batch * per_batch:,} "
                    f"or {(val_tokens // per_batch + 1) * per_batch:,}), so that every token is scored once"
                )
            if val_tokens + 1 > len(self.arrays["val"]):
                raise DataError(
                    f"data.val_tokens ({val_tokens:,}) needs {val_tokens + 1:,} validation tokens (the last one a "
                    f"target), but the val split of dataset {dataset.dir} holds {len(self.arrays['val']):,}"
                )
        self._doc_starts = {}
        if align == "document":
            self._doc_starts = {split: document_starts(arr, dataset, block_size, split) for split, arr in self.arrays.items()}
        self._pin = env.device_type == "cuda"

    @property
    def vocab_size(self) -> int:
        return self.dataset.vocab_size

    @property
    def tokenizer(self) -> Any:
        return self.dataset.tokenizer

    def record(self) -> dict[str, Any]:
        return self.dataset.record()

    def micro_steps(self, grad_accum: int) -> range:
        """The global micro-batch numbers this rank computes in every iteration."""
        per_rank = grad_accum // self.env.world_size
        return range(self.env.rank * per_rank, (self.env.rank + 1) * per_rank)

    def batch(self, split: str, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, (B, T) each, for the windows a seeded generator picks; on the CPU."""
        data = self.arrays[split]
        if key[0] == _FIXED_VAL:  # the k-th batch of consecutive sequences of the fixed validation prefix
            starts = (key[1] * self.batch_size + np.arange(self.batch_size)) * self.block_size
        else:
            rng = np.random.default_rng([self.seed, *key])
            if self._doc_starts:
                candidates = self._doc_starts[split]
                starts = candidates[rng.integers(0, len(candidates), size=self.batch_size)]
            else:
                starts = rng.integers(0, len(data) - self.block_size, size=self.batch_size)
        tokens = windows(data, starts, self.block_size + 1).astype(np.int64)  # (B, T+1)
        # two contiguous arrays: a strided view would go to the GPU through an unpinned copy
        x = torch.from_numpy(np.ascontiguousarray(tokens[:, :-1]))
        y = torch.from_numpy(np.ascontiguousarray(tokens[:, 1:]))
        if self._pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    def to_device(self, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = xy
        return x.to(self.env.device, non_blocking=True), y.to(self.env.device, non_blocking=True)

    def train_batches(self, iteration: int, grad_accum: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of one iteration, each copied to the device one step ahead."""
        keys = [(_TRAIN, iteration, m) for m in self.micro_steps(grad_accum)]
        pending = self.to_device(self.batch("train", keys[0]))
        for nxt in keys[1:]:
            # start the next host-to-device copy before the caller computes on this one
            current, pending = pending, self.to_device(self.batch("train", nxt))
            yield current
        yield pending

    def eval_count(self, split: str, eval_iters: int) -> int:
        """How many evaluation batches a split has in all: `eval_iters`, or those of the fixed val prefix."""
        if split == "val" and self.val_tokens:
            return self.val_tokens // (self.batch_size * self.block_size)
        return eval_iters

    def eval_keys(self, split: str, eval_iters: int) -> list[tuple[int, ...]]:
        """This rank's share of the fixed evaluation batches of a split."""
        n = self.eval_count(split, eval_iters)
        if split == "val" and self.val_tokens:
            return [(_FIXED_VAL, k) for k in range(n) if k % self.env.world_size == self.env.rank]
        s = SPLITS.index(split)
        return [(_EVAL, s, k) for k in range(n) if k % self.env.world_size == self.env.rank]


def build_tokens(spec: TokensSpec, *, env: Process, seed: int, batch_size: int, block_size: int) -> TokenBatches:
    """Prepare the dataset if it is missing or stale (rank 0 only), then open it on every rank."""
    from nanogpt.data.files import open_dataset
    from nanogpt.data.prepare import ensure_prepared

    if env.is_main:
        dataset = ensure_prepared(spec)
    # not bounded by the collective timeout: preparing OpenWebText takes longer than any of them
    env.wait_for_main()
    if not env.is_main:
        dataset = open_dataset(spec)
    return TokenBatches(dataset, seed=seed, batch_size=batch_size, block_size=block_size, env=env,
                        val_tokens=spec.val_tokens, align=spec.align)


SCAN_TOKENS = 1 << 24
"""Tokens read at a time when looking for document starts (32 MB of uint16)."""


def document_starts(tokens: Any, dataset: Any, block_size: int, split: str) -> np.ndarray:
    """Positions where a document begins (0, and each one after an end-of-text token) with a whole window after them.

    Found by one pass over the split at start-up (about 3 s per 1B tokens, page cache warm); DataError for a
    dataset without documents (one stream of text) or whose documents leave no room for a window.
    """
    eot = getattr(dataset, "eot_id", None)
    settings = (getattr(dataset, "meta", None) or {}).get("settings") or {}
    if eot is None or settings.get("documents") is False:  # a stream: a gpt2 one has an eot id but never uses it
        raise DataError(
            f'data.align = "document" needs documents separated by an end-of-text token, but dataset {dataset.dir} '
            f'is one stream of text; use align = "token"'
        )
    n = len(tokens)
    found = [np.zeros(1, dtype=np.int64)]
    for a in range(0, n, SCAN_TOKENS):
        chunk = np.asarray(tokens[a : min(n, a + SCAN_TOKENS)])
        found.append(np.flatnonzero(chunk == eot).astype(np.int64) + a + 1)
    starts = np.concatenate(found)
    starts = starts[starts + block_size < n]  # a window and its one extra target token must fit
    if len(starts) == 0:
        raise DataError(
            f"{split} of dataset {dataset.dir} has no document start with {block_size + 1} tokens after it; "
            f'use align = "token" or a smaller block_size'
        )
    return starts
