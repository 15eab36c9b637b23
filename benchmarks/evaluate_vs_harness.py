"""Native HellaSwag scoring (`nanogpt evaluate`) against lm-evaluation-harness on the same model and rows, CPU.

The rows are tests/fixtures/tasks/hellaswag.jsonl repeated to --examples (each copy made distinct); the model a random GPT
of --config with GPT-2's vocabulary. Each round times both, alternating which goes first:

  native   load the rows, score them (batches of --batch-size rows: an example's choices together)
  harness  export the model to a temporary Hugging Face directory, then lm_eval.simple_evaluate on
           the harness's own hellaswag config pointed at the same rows (its `hf` model, the same
           batch size)

Both choose the same answers (the script checks acc and acc_norm agree) and report examples/s.

    python benchmarks/evaluate_vs_harness.py --rounds 3
    python benchmarks/evaluate_vs_harness.py --config gpt2small --examples 96 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, median  # noqa: E402

from nanogpt.data.tokenizers import gpt2_tokenizer  # noqa: E402
from nanogpt.evaluation.harness import exported, harness_figures, local_task_configs, run_harness  # noqa: E402
from nanogpt.models.gpt import GPT, GPTConfig  # noqa: E402
from nanogpt.models.multiple_choice import evaluate_tasks  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tasks" / "hellaswag.jsonl"
CONFIGS = {
    "small": dict(n_layer=4, n_head=4, n_embd=256, block_size=256),
    "gpt2small": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
}


def distinct_rows(rows: list[str], n: int) -> list[str]:
    """`n` rows, the fixture's over and over, each copy's activity label numbered: the harness computes a
    forward once for identical inputs, and real HellaSwag has none, so neither may the benchmark."""
    out = []
    for i in range(n):
        row = json.loads(rows[i % len(rows)])
        row["activity_label"] += f" {i // len(rows)}" if i >= len(rows) else ""
        out.append(json.dumps(row))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=list(CONFIGS), default="small")
    p.add_argument("--examples", type=int, default=240)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.disable(logging.WARNING)
    print(machine_line())

    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIGS[args.config], vocab_size=50257)).eval()
    tokenizer = gpt2_tokenizer()
    rows = FIXTURE.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "hellaswag.jsonl"
        data.write_text("\n".join(distinct_rows(rows, args.examples)) + "\n")
        configs = Path(tmp) / "configs"
        configs.mkdir()
        (name,) = local_task_configs(configs, {"hellaswag": str(data)})

        def native() -> dict:
            (r,) = evaluate_tasks(model, tokenizer, ["hellaswag"], data={"hellaswag": str(data)}, batch_size=args.batch_size)
            return {"acc": r.acc, "acc_norm": r.acc_norm}

        def harness() -> dict:
            with exported(model, tokenizer) as model_dir:
                out = run_harness(model_dir, [name], include_path=str(configs), batch_size=args.batch_size)
            return harness_figures(out)[name]

        times: dict[str, list[float]] = {"native": [], "harness": []}
        figures: dict[str, dict] = {}
        for rnd in range(args.rounds):
            order = [("native", native), ("harness", harness)]
            for label, fn in order if rnd % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                figures[label] = fn()
                times[label].append(time.perf_counter() - start)
            print(f"round {rnd + 1}: native {times['native'][-1]:.2f} s, harness {times['harness'][-1]:.2f} s", flush=True)

    agree = figures["native"]["acc"] == figures["harness"]["acc"] and figures["native"]["acc_norm"] == figures["harness"]["acc_norm"]
    n = args.examples
    tn, th = median(times["native"]), median(times["harness"])
    print(f"{args.config}, {n} hellaswag examples, batch {args.batch_size}, {args.threads} threads")
    print(f"native:  {n / tn:8.1f} examples/s (median {tn:.2f} s)  acc {figures['native']['acc']:.4f} acc_norm {figures['native']['acc_norm']:.4f}")
    print(f"harness: {n / th:8.1f} examples/s (median {th:.2f} s)  acc {figures['harness']['acc']:.4f} acc_norm {figures['harness']['acc_norm']:.4f}")
    print(f"native / harness: {th / tn:.2f}x; figures {'agree' if agree else 'DIFFER'}")


if __name__ == "__main__":
    main()
