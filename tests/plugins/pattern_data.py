"""A test plugin: a dataset kind that is no files at all, to show the runner needs only the Batches contract.

`[data] kind = "pattern"` is `text` repeated `repeats` times, character-tokenized in memory (the
last `val_fraction` of it is val). Its batches are pure functions of (seed, key), like the built-in
token files', so a resumed run sees the same ones; the tokenizer is the product's CharTokenizer,
so a checkpoint of it samples with `nanogpt sample` alone.
"""

from __future__ import annotations

import hashlib

import attrs
import numpy as np
import torch

from nanogpt.data.tokenizers import CharTokenizer
from nanogpt.registry import DATA
from nanogpt.config.tables import DataSpec


@attrs.frozen(kw_only=True)
class PatternSpec(DataSpec):
    kind: str = "pattern"
    text: str = "the quick brown fox jumps over the lazy dog. "
    repeats: int = 200
    val_fraction: float = 0.1


class PatternBatches:
    def __init__(self, spec: PatternSpec, *, env, seed: int, batch_size: int, block_size: int):
        self.env, self.seed, self.batch_size, self.block_size = env, seed, batch_size, block_size
        self.tokenizer = CharTokenizer(sorted(set(spec.text)))
        ids = np.array(self.tokenizer.encode(spec.text * spec.repeats), dtype=np.int64)
        cut = int(len(ids) * (1 - spec.val_fraction))
        self.splits = {"train": ids[:cut], "val": ids[cut:]}

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def micro_steps(self, grad_accum: int) -> range:
        per_rank = grad_accum // self.env.world_size
        return range(self.env.rank * per_rank, (self.env.rank + 1) * per_rank)

    def batch(self, split: str, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.splits[split]
        starts = np.random.default_rng([self.seed, *key]).integers(0, len(data) - self.block_size, size=self.batch_size)
        windows = torch.from_numpy(data[starts[:, None] + np.arange(self.block_size + 1)])
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def to_device(self, xy):
        return tuple(t.to(self.env.device) for t in xy)

    def train_batches(self, iteration: int, grad_accum: int):
        for m in self.micro_steps(grad_accum):
            yield self.to_device(self.batch("train", (0, iteration, m)))

    def eval_keys(self, split: str, eval_iters: int) -> list[tuple[int, ...]]:
        s = ("train", "val").index(split)
        return [(1, s, k) for k in range(eval_iters) if k % self.env.world_size == self.env.rank]

    def record(self) -> dict:
        def split(name: str) -> dict:
            ids = self.splits[name]
            return {"path": f"pattern:{name}", "tokens": len(ids), "sha256": hashlib.sha256(ids.tobytes()).hexdigest()}

        return {"train": split("train"), "val": split("val"), "tokenizer": "char", "vocab_size": self.vocab_size}


@DATA.register("pattern", PatternSpec)
def build_pattern(spec: PatternSpec, *, env, seed: int, batch_size: int, block_size: int) -> PatternBatches:
    return PatternBatches(spec, env=env, seed=seed, batch_size=batch_size, block_size=block_size)
