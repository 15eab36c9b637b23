"""Batch reads from a 1,000-shard dataset against one file of the same tokens, side by side.

The same TokenBatches draws the same (seed, iteration, micro-step) batches from both: the single
file through an np.memmap (the path every one-file dataset takes), the shards through
`ShardedTokens` (lazy opens, an LRU of open files, one pread per window piece). Rounds alternate
which goes first, so a change in machine load hits both alike; the figure is the median over
rounds of the per-round ratio shards / one file. The files are made once in --dir (page cache
warm), so this measures the reading code, not the disk.

    python benchmarks/shard_reads.py
    python benchmarks/shard_reads.py --shards 1000 --shard-tokens 100000 --batch 64 --block 1024
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from common import load_average, median, spread  # noqa: E402 (puts the checkout on sys.path)

from nanogpt.data.batches import TokenBatches  # noqa: E402
from nanogpt.data.shards import ShardedTokens, shard_name  # noqa: E402


def make(folder: Path, shards: int, shard_tokens: int) -> tuple[Path, list[Path]]:
    rng = np.random.default_rng(0)
    one = folder / "train.bin"
    paths = [folder / shard_name("train", i) for i in range(shards)]
    with open(one, "wb") as whole:
        for path in paths:
            ids = rng.integers(0, 50257, size=shard_tokens, dtype=np.uint16)
            ids.tofile(path)
            whole.write(ids.tobytes())
    return one, paths


def time_batches(data: TokenBatches, iterations: range) -> float:
    start = time.perf_counter()
    for it in iterations:
        data.batch("train", (0, it, 0))
    return (time.perf_counter() - start) / len(iterations)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=1000)
    p.add_argument("--shard-tokens", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--batches", type=int, default=2000, help="batches per side per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--max-open", type=int, default=None, help="shard files kept open (default: the reader's own)")
    p.add_argument("--dir", help="where to write the files (default: a temporary folder, removed after)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        one_path, paths = make(folder, args.shards, args.shard_tokens)
        total = args.shards * args.shard_tokens
        env = SimpleNamespace(device_type="cpu", device="cpu", world_size=1, rank=0, is_main=True)
        one_tokens = np.memmap(one_path, dtype=np.uint16, mode="r")
        many_tokens = ShardedTokens(paths, [args.shard_tokens] * args.shards, "uint16", max_open=args.max_open)

        def batches(tokens) -> TokenBatches:
            ds = SimpleNamespace(train=tokens, val=tokens, vocab_size=50257, dir=folder)
            return TokenBatches(ds, seed=1337, batch_size=args.batch, block_size=args.block, env=env)

        one, many = batches(one_tokens), batches(many_tokens)
        for key in [(0, 0, 0), (0, 5, 0), (0, 99, 0)]:  # the same numbers, or the timing means nothing
            assert all(bool((a == b).all()) for a, b in zip(one.batch("train", key), many.batch("train", key)))
        print(f"{args.shards} shards x {args.shard_tokens:,} tokens ({total:,} tokens, {total * 2 / 1e6:.0f} MB) "
              f"against one file; batch {args.batch} x {args.block + 1}; {args.batches} batches per side per round; "
              f"at most {many_tokens.max_open} shards open; load average {load_average():.2f}")
        ratios, t_one, t_many = [], [], []
        for r in range(args.rounds):
            its = range(r * args.batches, (r + 1) * args.batches)
            if r % 2:
                b, a = time_batches(many, its), time_batches(one, its)
            else:
                a, b = time_batches(one, its), time_batches(many, its)
            t_one.append(a * 1e6)
            t_many.append(b * 1e6)
            ratios.append(b / a)
            print(f"round {r}: one file {a * 1e6:.1f} us/batch, shards {b * 1e6:.1f} us/batch, ratio {b / a:.3f}")
        print(f"one file {median(t_one):.1f} us/batch ({spread(t_one)}), shards {median(t_many):.1f} us/batch "
              f"({spread(t_many)}): shards / one file {median(ratios):.3f}x (target <= 1.1x); "
              f"load average {load_average():.2f}")


if __name__ == "__main__":
    main()
