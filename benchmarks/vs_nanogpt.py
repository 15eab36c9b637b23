"""Ours against the real nanoGPT, side by side: `python benchmarks/vs_nanogpt.py --nanogpt-dir DIR`.

DIR is a checkout of github.com/karpathy/nanoGPT (this script never downloads it, nor its data). Both
train nanoGPT's own Shakespeare-char recipe for a CPU (its README: 4 x 128, block 64, batch 12, lr 1e-3
cosine to 1e-4 over max_iters, dropout 0, no compile) on the same text, tiny Shakespeare (shipped here
in tests/fixtures/), with the same contiguous 90/10 split, each as it runs by default otherwise.
Like for like, both compute in float32 (nanoGPT on a CPU always does: its autocast is for CUDA
only); ours is also run as it runs by default (`system.dtype = "auto"`: bf16 on a CPU that computes
it natively), shown apart as what it is. nanoGPT runs its own train.py as a process; ours runs
`python -m nanogpt.run`. Several rounds alternate the three (the order turning each round), so a
change in the machine's load falls on all. Printed per round and as medians: wall time of the whole
process (start-up and evaluations included, as a user waits for it) and the final val loss each
reports.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fixtures" / "tinyshakespeare.txt.gz"


def prepare_nanogpt(nanogpt: Path, work: Path) -> Path:
    """A copy of nanoGPT's tree whose data/shakespeare_char holds tiny Shakespeare, prepared by its own
    prepare.py (which downloads input.txt only when it is missing, so it never does here)."""
    copy = work / "nanogpt"
    shutil.copytree(nanogpt, copy, ignore=shutil.ignore_patterns(".git", "out*"))
    data = copy / "data" / "shakespeare_char"
    (data / "input.txt").write_bytes(gzip.decompress(CORPUS.read_bytes()))
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True, timeout=600)
    return copy


def run_nanogpt(copy: Path, iters: int, eval_iters: int, out: Path) -> tuple[float, float]:
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
           f"--eval_iters={eval_iters}", "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4",
           "--n_head=4", "--n_embd=128", f"--max_iters={iters}", f"--lr_decay_iters={iters}", "--dropout=0.0",
           "--dtype=float32", f"--eval_interval={iters}", f"--out_dir={out}", "--always_save_checkpoint=False"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=copy, check=False, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"nanoGPT's train.py failed:\n{proc.stderr[-3000:]}")
    losses = re.findall(r"step \d+: train loss [0-9.]+, val loss ([0-9.]+)", proc.stdout)
    return wall, float(losses[-1])


SPEC = REPO / "experiments" / "shakespeare_char.toml"


def our_overrides(input_txt: Path, iters: int, eval_iters: int, work: Path) -> list[str]:
    """The recipe as overrides of our quickstart spec; the prepared data is shared by every round."""
    return [
        "model.bias=false", "optimizer.lr=1e-3", "schedule.min_lr=1e-4", f"schedule.decay_iters={iters}",
        f"schedule.warmup_iters={min(100, iters)}",  # nanoGPT's 100; ours refuses more than decay_iters
        f"train.max_iters={iters}", f"train.eval_interval={iters}", f"train.eval_iters={eval_iters}",
        "system.device=\"cpu\"", "logging.tensorboard=false", "logging.samples=0",
        f"data.source=\"file:{input_txt}\"", "data.dataset=\"vs_nanogpt\"", f"data.data_dir=\"{work / 'ours-data'}\"",
    ]


def prepare_ours(overrides: list[str]) -> None:
    """Tokenize once, before any round, as nanoGPT's prepare.py runs once: neither wall time includes it."""
    subprocess.run([sys.executable, "-m", "nanogpt", "prepare", str(SPEC), *overrides], cwd=REPO, check=True,
                   capture_output=True, timeout=600)


def run_ours(overrides: list[str], out: Path) -> tuple[float, float]:
    overrides = [*overrides, f"logging.out_dir=\"{out / 'runs'}\""]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nanogpt.run", str(SPEC), *overrides],
                          cwd=REPO, check=False, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"ours failed:\n{proc.stderr[-3000:]}")
    manifest = next((out / "runs").rglob("manifest.json"))
    return wall, float(json.loads(manifest.read_text())["metrics"]["val_loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt-dir", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--iters", type=int, default=2000, help="iterations each (nanoGPT's CPU recipe: 2000)")
    parser.add_argument("--eval-iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (args.nanogpt_dir / "train.py").is_file() or not (args.nanogpt_dir / "config" / "train_shakespeare_char.py").is_file():
        sys.exit(f"--nanogpt-dir {args.nanogpt_dir}: not a nanoGPT checkout (no train.py and config/train_shakespeare_char.py)")
    results: dict[str, list[tuple[float, float]]] = {"nanoGPT": [], "ours": [], "ours-auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy = prepare_nanogpt(args.nanogpt_dir, work)
        ours = our_overrides(copy / "data" / "shakespeare_char" / "input.txt", args.iters, args.eval_iters, work)
        prepare_ours(ours)
        contenders = list(results)
        for r in range(args.rounds):
            for who in contenders[r % 3:] + contenders[:r % 3]:
                out = work / f"{who}-{r}"
                if who == "nanoGPT":
                    results[who].append(run_nanogpt(copy, args.iters, args.eval_iters, out))
                else:
                    dtype = "auto" if who == "ours-auto" else "float32"
                    results[who].append(run_ours([*ours, f'system.dtype="{dtype}"'], out))
                wall, loss = results[who][-1]
                print(f"round {r + 1} {who:<8} wall {wall:8.1f} s   final val loss {loss:.4f}", flush=True)
    print(f"\n{args.iters} iterations, CPU, {args.rounds} rounds alternating; medians:")
    for who, rows in results.items():
        print(f"  {who:<9} wall {statistics.median(w for w, _ in rows):8.1f} s   final val loss {statistics.median(v for _, v in rows):.4f}")
    wall = {who: statistics.median(w for w, _ in rows) for who, rows in results.items()}
    print(f"  like for like (both float32): nanoGPT's wall time / ours = {wall['nanoGPT'] / wall['ours']:.2f}x")
    print(f"  by default (nanoGPT float32, ours system.dtype=auto): nanoGPT's wall time / ours = {wall['nanoGPT'] / wall['ours-auto']:.2f}x")


if __name__ == "__main__":
    main()
