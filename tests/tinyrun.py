"""Tiny end-to-end runs for the runner's tests: a small corpus, a 2-layer model, seconds per run."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"

WORDS = (
    "the king and queen of france sailed to england where the lords of the realm held a feast "
    "for all who came by land or sea and spoke of war and peace and love and grief"
).split()


def write_corpus(path: Path, n_lines: int = 800, seed: int = 0) -> Path:
    """A few tens of kB of word salad: enough structure for a loss to fall, made in microseconds."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        speaker = rng.choice(["KING", "QUEEN", "LORD", "FOOL"])
        lines.append(f"{speaker}:\n" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + ".\n")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def tiny_spec(tmp: Path, *, name: str = "tiny", extra: str = "", **tables: dict[str, Any]) -> Path:
    """Write a tiny spec under `tmp` (corpus, data dir and runs dir inside it) and return its path.

    Keyword tables override fields: `train={"max_iters": 20}`.
    """
    corpus = tmp / "corpus.txt"
    if not corpus.exists():
        write_corpus(corpus)
    base: dict[str, dict[str, Any]] = {
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
        "data": {
            "dataset": "tiny_char",
            "data_dir": str(tmp / "data"),
            "source": f"file:{corpus}",
            "tokenizer": "char",
            "val_fraction": 0.1,
            "split": "contiguous",
        },
        "optimizer": {"lr": 3e-3},
        "schedule": {"kind": "cosine", "warmup_iters": 5, "decay_iters": 40, "min_lr": 3e-4},
        "train": {"batch_size": 4, "grad_accum": 2, "max_iters": 40, "eval_interval": 10, "eval_iters": 4, "log_interval": 1},
        "system": {"device": "cpu", "compile": False},
        "logging": {"out_dir": str(tmp / "runs"), "samples": 1, "sample_tokens": 16},
    }
    for table, fields in tables.items():
        if "kind" in fields and fields["kind"] != base.get(table, {}).get("kind"):
            base[table] = {}
        base.setdefault(table, {}).update(fields)
    lines = [f'name = "{name}"', "seed = 7", extra]
    for table, fields in base.items():
        lines.append(f"\n[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    path = tmp / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def env_with_plugins(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def nanogpt(*args: str, check: bool = False, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess:
    """`python -m nanogpt ARGS` in a subprocess, output captured as text."""
    proc = subprocess.run(
        [sys.executable, "-m", "nanogpt", *args],
        capture_output=True, text=True, timeout=timeout, env=kw.pop("env", env_with_plugins()), **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def only_run_dir(runs: Path, name: str = "tiny") -> Path:
    dirs = [d for d in (runs / name).iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def losses(run_dir: Path) -> list[tuple[int, str, float]]:
    """(iter, kind, loss) of every metrics.jsonl line: the numbers a repeat must reproduce exactly."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "train":
            out.append((r["iter"], "train", r["loss"]))
        else:
            out.append((r["iter"], "eval", r["train_loss"], r["val_loss"]))
    return out


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from nanogpt.checkpoints.catalog import checkpoint_for
    from nanogpt.checkpoints.state import load_checkpoint

    return load_checkpoint(checkpoint_for(run_dir, "latest"))["model"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@dataclass(frozen=True)
class ReferenceRun:
    """The session's one completed run of `tiny_spec` (see tests/conftest.py's `reference_run`).

    `tmp` holds its spec (tiny.toml), corpus, prepared dataset (data/) and runs (runs/); `dir` is the run dir;
    `stdout` is what the runner printed. Read only: a test that changes any of it copies it first.
    """

    tmp: Path
    spec: Path
    dir: Path
    stdout: str


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` by relative path: a before/after that shows any file added, removed
    or changed (a few MB of tiny checkpoints: milliseconds)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_unchanged(root: Path, before: dict[str, str]) -> None:
    """Fail naming every file under a shared run's folder that a test added, removed or changed since `before`
    (its tree_digest)."""
    after = tree_digest(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared run in {root} (copy it to tmp_path first): {changed}"
