"""Training throughput with all three trackers (TensorBoard, W&B offline, MLflow on its local store)
against TensorBoard only, side by side.

The quickstart (experiments/shakespeare_char.toml, at its own log interval) for `--iters`
iterations, once per configuration per round; the configurations alternate, each first in turn,
so drifting load falls on both. A run's throughput is its manifest's `tokens_per_sec`: the average
over its logged windows with the first left out (start-up, the trackers' own start included
there, is not training). The dataset is prepared first, untimed; each run is a fresh process with
its own output folder (so MLflow creates its store in every run: that cost is start-up, outside
the figure).

    python benchmarks/trackers_overhead.py [--iters 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, load_average, machine_line, median, spread

SPEC = "experiments/shakespeare_char.toml"
CONFIGS = {"tensorboard only": '["tensorboard"]', "all three": '["tensorboard", "wandb", "mlflow"]'}


def run(out: Path, data: Path, iters: int, trackers: str) -> float:
    """tokens/s of one run of the quickstart with these trackers."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "nanogpt.run", SPEC, f"train.max_iters={iters}", f"data.data_dir={data}",
               f"logging.out_dir={out}", f"logging.trackers={trackers}", "logging.samples=0"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    manifest = json.loads(next(out.rglob("manifest.json")).read_text())
    failed = [name for name, t in (manifest.get("trackers") or {}).items() if isinstance(t, dict) and t.get("status") == "failed"]
    if failed:
        sys.exit(f"a tracker failed, the figure would not be the overhead of logging: {failed}")
    return float(manifest["metrics"]["tokens_per_sec"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "nanogpt", "prepare", SPEC, f"data.data_dir={work / 'data'}"], cwd=REPO,
                       check=True, capture_output=True)
        results: dict[str, list[float]] = {name: [] for name in CONFIGS}
        names = list(CONFIGS)
        for r in range(args.rounds):
            for name in names[r % 2:] + names[:r % 2]:
                results[name].append(run(work / f"{r}-{len(results[name])}-{names.index(name)}", work / "data", args.iters,
                                         CONFIGS[name]))
                print(f"round {r + 1} {name:<16} {results[name][-1]:10,.0f} tokens/s", flush=True)
    print(f"\nthe quickstart, {args.iters} iterations, {args.rounds} rounds alternating; median tokens/s (spread):")
    for name, values in results.items():
        print(f"  {name:<16} {median(values):10,.0f}  ({spread(values)})")
    ratio = median(results["tensorboard only"]) / median(results["all three"])
    print(f"  TensorBoard only / all three: {ratio:.3f}x (target <= 1.02x); load average now {load_average():.2f}")


if __name__ == "__main__":
    main()
