"""How long a checkpoint holds up the training loop: the old synchronous save against the background writer.

Both write the same state (a GPT's weights and its AdamW moments, after one optimizer step) to
the same disk, atomically (temporary file, fsync, rename):

  synchronous   what the runner did before: torch.save on the loop's thread, fsync, rename, then
                the file read back to hash it (the loop waits for all of it)
  background    what it does now: the loop waits only while the state is copied off the live
                tensors; a writer thread saves it, hashing as it writes, fsyncs and renames

The figure that matters is the stall: the time the loop cannot train. On a GPU node every rank
waits for rank 0's stall at the next collective, so it costs the whole job.

    python benchmarks/checkpoint_stall.py                 # GPT-2 124M-shaped state (~1.5 GB)
    python benchmarks/checkpoint_stall.py --config small  # 6x384: a quick look
    python benchmarks/checkpoint_stall.py --device cuda   # the state on a GPU: copies into page-locked memory

It also reports the page-locked (pinned) bytes the background writer keeps for the run: one arena
of the state's size where the state is on a GPU, none where it is on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanogpt.checkpoints.files import CHECKPOINT_DIR, CheckpointWriter  # noqa: E402
from nanogpt.checkpoints.state import FORMAT  # noqa: E402
from nanogpt.checkpoints.files import PINNED  # noqa: E402
from nanogpt.fileio import atomic_open, sha256_file  # noqa: E402
from nanogpt.models.gpt import GPT, GPTConfig  # noqa: E402

CONFIGS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=50304),
}


def state_of(config: str, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIGS[config])).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 50257, (1, 64), device=device)
    _, loss = model(x, x)
    loss.backward()
    optimizer.step()  # the moments exist, as in any checkpoint after the first step
    return {"format": FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter": 1}


def synchronous(folder: Path, state: dict) -> float:
    start = time.perf_counter()
    path = folder / CHECKPOINT_DIR / "sync.pt"
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    sha256_file(path)
    return time.perf_counter() - start


def background(writer: CheckpointWriter, state: dict, iteration: int) -> tuple[float, float]:
    """(stall, total): the loop's wait, and the time until the file is published."""
    done: list[float] = []
    start = time.perf_counter()
    writer.save(iteration, state, on_written=lambda path, digest: done.append(time.perf_counter()))
    stall = time.perf_counter() - start
    writer.wait()
    return stall, done[0] - start


def sharded(args: argparse.Namespace) -> None:
    """The fsdp writer (DCP async_save) in a job of one: the loop's wait per save, first and later."""
    from nanogpt.checkpoints.sharded import ShardedCheckpointWriter
    from nanogpt.config.tables import SystemSpec
    from nanogpt.training.dist import DistEnv
    from nanogpt.training.parallel import shard

    env = DistEnv.from_env(SystemSpec(device=args.device, dtype="float32", parallel="fsdp"), environ={})
    torch.manual_seed(0)
    model = shard(GPT(GPTConfig(**CONFIGS[args.config])).to(env.device), env)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 50257, (1, 64), device=env.device)
    model(x, x)[1].backward()
    optimizer.step()
    stalls, totals = [], []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        writer = ShardedCheckpointWriter(tmp, is_main=True, group=env.checkpoints, asynchronous=True)
        for i in range(args.repeats):
            done: list[float] = []
            start = time.perf_counter()
            writer.save(i, {"iter": i}, model, optimizer, on_written=lambda *a: done.append(time.perf_counter()))
            stalls.append(time.perf_counter() - start)
            writer.wait()
            totals.append(done[0] - start)
        writer.close()
    env.close(barrier=False)
    later = statistics.median(stalls[1:]) if len(stalls) > 1 else stalls[0]
    print("stalls:", " ".join(f"{x:.3f}" for x in stalls))
    print(f"sharded (DCP async_save), {args.config}, {torch.get_num_threads()} threads; medians of {args.repeats}")
    print(f"async save, loop waits, first save:  {stalls[0]:7.3f} s")
    print(f"async save, loop waits, later saves: {later:7.3f} s")
    print(f"async save, until published:        {statistics.median(totals):7.3f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=list(CONFIGS), default="gpt2")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    p.add_argument("--device", default="cpu", help="where the state lives (cuda: copied into pinned memory)")
    p.add_argument("--sharded", action="store_true", help="the fsdp writer's async DCP save instead (a job of one process)")
    args = p.parse_args()
    if args.sharded:
        return sharded(args)
    state = state_of(args.config, args.device)
    nbytes = sum(t.numel() * t.element_size() for t in _tensors(state))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        writer = CheckpointWriter(folder)  # one per run, as in the runner: later saves reuse its buffers
        sync, stalls, totals = [], [], []
        for i in range(args.repeats):  # interleaved, so load changes hit both alike
            sync.append(synchronous(folder, state))
            stall, total = background(writer, state, i)
            stalls.append(stall)
            totals.append(total)
        pinned = PINNED.nbytes  # while the writer holds its buffers, as it does for the whole run
    s, t = statistics.median(sync), statistics.median(totals)
    first, later = stalls[0], statistics.median(stalls[1:]) if len(stalls) > 1 else stalls[0]
    print("stalls:", " ".join(f"{x:.3f}" for x in stalls), " synchronous:", " ".join(f"{x:.3f}" for x in sync))
    print(f"state: {args.config}, {nbytes / 2**30:.2f} GiB, {torch.get_num_threads()} threads; medians of {args.repeats}")
    print(f"synchronous save (loop waits):            {s:7.3f} s")
    print(f"background save, loop waits, first save:  {first:7.3f} s   ({first / s:.3f}x the synchronous stall)")
    print(f"background save, loop waits, later saves: {later:7.3f} s   ({later / s:.3f}x the synchronous stall)")
    print(f"background save, until published:         {t:7.3f} s")
    print(f"pinned memory the writer keeps:            {pinned / 2**30:7.3f} GiB ({pinned / nbytes:.2f}x the state)")


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


if __name__ == "__main__":
    main()
