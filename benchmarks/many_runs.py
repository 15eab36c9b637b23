"""Wall time of `nanogpt runs` and `nanogpt compare` over 2,000 run directories.

Makes a runs folder like a busy researcher's in a temporary directory: 2,000 run dirs under four
experiment names, each with a manifest.json as the runner writes it (the resolved spec, its
provenance, environment, hardware, data, model, metrics and checkpoint records: about 11 kB) and a
metrics.jsonl of a quickstart-length run (40 training and 9 evaluation lines); specs differ in
optimizer.lr, model.n_layer and seed, and a few runs failed, were interrupted or are running.
Then times both commands as a user starts them (fresh processes, so interpreter start-up and
imports count), interleaved, and reports the median of each against the issue's bar of 2 s.

    python benchmarks/many_runs.py [--runs 2000] [--repeats 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, load_average, median, spread

BAR_SECONDS = 2.0
NAMES = ("shakespeare_char", "lr_sweep", "depth_ablation", "gpt2_owt_small")


def template(spec_path: Path) -> dict[str, Any]:
    """One manifest built by the runner's own functions, to copy with other values."""
    from nanogpt.runs.manifest import SCHEMA_VERSION, extends_record, now_iso, provenance_record
    from nanogpt.runs.environment import git_info
    from nanogpt.config.load import load_spec
    from nanogpt.config.canonical import resolved, spec_sha256

    exp, origin = load_spec(spec_path, ["train.max_iters=2000"], check_files=False)
    git, _ = git_info(REPO)
    return {
        "schema_version": SCHEMA_VERSION, "name": exp.name, "run_id": "", "status": "completed",
        "spec": resolved(exp), "spec_sha256": spec_sha256(exp), "spec_files": list(origin.files),
        "overrides": list(origin.overrides), "provenance": provenance_record(exp, origin),
        "extends": extends_record(exp, origin), "command": f"{sys.executable} -m nanogpt run {spec_path}",
        "created_at": now_iso(), "finished_at": now_iso(), "git": git,
        "env": {"python": "3.11.7", "torch": "2.13.0+cpu", "cuda": None, "cudnn": None, "nccl": None,
                "platform": "Linux-6.8.0-x86_64-with-glibc2.36", "hostname": "node-17",
                "packages": {"numpy": "2.3.4", "tiktoken": "0.12.0", "datasets": "4.4.1", "transformers": "4.57.1",
                             "attrs": "25.4.0", "cattrs": "25.3.0", "tensorboard": "2.20.0", "tomli-w": "1.2.0", "nanogpt": "0.1.0"}},
        "hardware": {"device": "cpu", "device_name": "AMD EPYC 9B14", "device_count": 1, "world_size": 1, "dtype": "bfloat16",
                     "peak_tflops": None, "peak_tflops_source": None,
                     "deterministic": {"use_deterministic_algorithms": False, "cublas_workspace_config": None, "cudnn_deterministic": False}},
        "launcher": {"torchelastic_run_id": None, "restart_count": 0},
        "data": {"train": {"path": "data/shakespeare_char/train.bin", "tokens": 4736190, "sha256": "ab" * 32},
                 "val": {"path": "data/shakespeare_char/val.bin", "tokens": 526243, "sha256": "cd" * 32},
                 "tokenizer": "char", "vocab_size": 98},
        "model": {"params": 820_000, "flops_per_token": 5_500_000, "vocab_size": 98},
        "metrics": {}, "checkpoints": [], "error": None, "failure": None,
    }


def make_runs(root: Path, n: int, base: dict[str, Any], rng: random.Random) -> None:
    for i in range(n):
        name = NAMES[i % len(NAMES)]
        run_id = f"2026{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}-{rng.randint(0, 235959):06d}-{i:04x}"
        m = json.loads(json.dumps(base))
        m["name"], m["run_id"] = name, run_id
        m["spec"]["name"] = name
        m["spec"]["optimizer"]["lr"] = rng.choice([3e-4, 6e-4, 1e-3, 2e-3, 3e-3])
        m["spec"]["model"]["n_layer"] = rng.choice([2, 4, 6, 8])
        m["spec"]["seed"] = rng.randint(0, 9)
        m["status"] = rng.choices(["completed", "failed", "interrupted", "running"], [90, 4, 4, 2])[0]
        best = 1.4 + rng.random()
        m["metrics"] = {"iter": 2000, "tokens_seen": 2000 * 768, "train_loss": best - 0.05, "val_loss": best + 0.01,
                        "best_val_loss": best, "train_perplexity": 4.0, "val_perplexity": 4.3,
                        "tokens_per_sec": 40_000 + rng.random() * 10_000, "mfu": 0.01, "wall_seconds": 60 + rng.random() * 30}
        m["checkpoints"] = [{"path": f"checkpoints/ckpt_{s:06d}.pt", "step": s, "sha256": "ef" * 32, "val_loss": best} for s in (1750, 2000)]
        run = root / name / run_id
        run.mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps(m, indent=2))
        lines = []
        for it in range(0, 2000, 50):
            lines.append({"iter": it, "kind": "train", "loss": 4.2 - it / 1000, "lr": 1e-3, "grad_norm": 0.5,
                          "tokens_per_sec": 45000.0, "mfu": 0.01, "ms_per_iter": 17.0, "wall_seconds": it * 0.02})
            if it % 250 == 0:
                lines.append({"iter": it, "kind": "eval", "train_loss": 4.1 - it / 1000, "val_loss": 4.2 - it / 1000, "wall_seconds": it * 0.02})
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each command (the median counts)")
    p.add_argument("--keep", metavar="DIR", help="make the runs here and keep them (default: a temporary folder)")
    args = p.parse_args(argv)

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="many_runs-"))
    try:
        start = time.perf_counter()
        make_runs(root, args.runs, template(REPO / "experiments" / "shakespeare_char.toml"), random.Random(0))
        size = sum(f.stat().st_size for f in root.glob("*/*/manifest.json")) / args.runs
        print(f"made {args.runs} run dirs in {root} ({size / 1000:.1f} kB per manifest) in {time.perf_counter() - start:.1f} s")
        commands = {
            "runs": [sys.executable, "-m", "nanogpt", "runs", str(root)],
            "compare": [sys.executable, "-m", "nanogpt", "compare", str(root)],
        }
        for c in commands.values():
            wall(c)  # untimed: warm the page cache and .pyc files
        times: dict[str, list[float]] = {k: [] for k in commands}
        load_start = load_average()
        for _ in range(args.repeats):
            for key, command in commands.items():
                times[key].append(wall(command))
        print(f"load average {load_start:.2f} at the start, {load_average():.2f} at the end; {args.repeats} runs of each")
        for key, values in times.items():
            verdict = "under" if median(values) < BAR_SECONDS else "OVER"
            print(f"  nanogpt {key:<8} over {args.runs} runs: median {median(values):.2f} s ({spread(values)}), {verdict} the {BAR_SECONDS:.0f} s bar")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
