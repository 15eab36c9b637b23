"""experiments/finetune_shakespeare.toml, CPU-sized: finetune a local Hugging Face GPT-2 and sample from the result."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shlex
from pathlib import Path

import pytest
import torch
import transformers
from torch.nn import functional as F

from nanogpt.checkpoints.catalog import checkpoint_for
from nanogpt.checkpoints.state import load_checkpoint
from nanogpt.cli import main
from nanogpt.data.batches import TokenBatches
from nanogpt.data.files import open_dataset
from nanogpt.training.dist import DistEnv
from nanogpt.evaluation.sample import SEPARATOR
from nanogpt.config.load import load_spec
from tests.tinyrun import REPO, only_run_dir, write_corpus


EXPERIMENT = REPO / "experiments" / "finetune_shakespeare.toml"


def small_variant(tmp: Path, hf_dir: Path) -> Path:
    """A spec that extends the real experiment and swaps in local weights, a local text, a short run."""
    text = write_corpus(tmp / "input.txt")
    sha = hashlib.sha256(text.read_bytes()).hexdigest()
    spec = tmp / "finetune_tiny.toml"
    spec.write_text(
        f"""
extends = {json.dumps(str(EXPERIMENT))}
name = "finetune_tiny"

[model]
init_from = {json.dumps(str(hf_dir))}
block_size = 32                   # cropped from the checkpoint's 64

[data]
dataset = "tiny_shakespeare"
data_dir = {json.dumps(str(tmp / "data"))}
source = {json.dumps(f"file:{text}")}
source_sha256 = "{sha}"           # the base pins the url's hash; a file: source is pinned the same way

[optimizer]
lr = 1e-3                         # random weights, not GPT-2's: a finetuning lr would barely move them

[train]
batch_size = 4
max_iters = 20
eval_interval = 10
eval_iters = 4
log_interval = 5

[system]
device = "cpu"
dtype = "float32"                 # compared with transformers' float32 losses to 1e-5

[logging]
out_dir = {json.dumps(str(tmp / "runs"))}
sample_tokens = 8
""",
        encoding="utf-8",
    )
    return spec


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, hf_dir) -> dict:
    """The small variant, run to completion."""
    tmp = tmp_path_factory.mktemp("finetune")
    spec = small_variant(tmp, hf_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(spec)]) == 0
    return {"spec": spec, "dir": only_run_dir(tmp / "runs", "finetune_tiny")}


def evals(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]


def test_variant_keeps_the_experiment(finetuned):
    """The variant inherits the experiment's finetuning choices: GPT-2 BPE, contiguous 90/10 split, constant lr, batches of 1 accumulation."""
    m = json.loads((finetuned["dir"] / "manifest.json").read_text())
    spec = m["spec"]
    assert m["status"] == "completed" and m["metrics"]["iter"] == 20
    assert spec["data"]["tokenizer"] == "gpt2" and spec["data"]["split"] == "contiguous" and spec["data"]["val_fraction"] == 0.1
    assert spec["schedule"]["kind"] == "constant" and spec["train"]["grad_accum"] == 1
    assert spec["model"]["n_layer"] == 2 and spec["model"]["n_embd"] == 32 and spec["model"]["block_size"] == 32
    assert m["data"]["tokenizer"] == "gpt2" and m["data"]["vocab_size"] == 50257


def test_loss_falls(finetuned):
    """Finetuning lowers the val loss from the pretrained model's."""
    e = evals(finetuned["dir"])
    assert [r["iter"] for r in e] == [0, 10, 20]
    assert e[-1]["val_loss"] < e[0]["val_loss"] - 0.1
    assert e[-1]["train_loss"] < e[0]["train_loss"] - 0.1


def test_starts_from_the_hf_weights(finetuned, hf_dir):
    """The first evaluation's losses are transformers' own losses of the HF model on the same fixed batches."""
    exp, _ = load_spec(finetuned["spec"])
    data = TokenBatches(
        open_dataset(exp.data), seed=exp.seed, batch_size=exp.train.batch_size, block_size=exp.model.block_size,
        env=DistEnv.from_env(exp.system, environ={}),
    )
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir, local_files_only=True).eval()
    first = evals(finetuned["dir"])[0]
    for split in ("train", "val"):
        losses = []
        for key in data.eval_keys(split, exp.train.eval_iters):
            x, y = data.batch(split, key)
            with torch.no_grad():
                logits = hf(x).logits
            losses.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item())
        assert first[f"{split}_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-5)


def test_sample_from_the_finetuned_run(finetuned, capsys):
    """`nanogpt sample RUN_DIR` decodes the finetuned model's samples with GPT-2's BPE, recorded in its checkpoint."""
    assert load_checkpoint(checkpoint_for(finetuned["dir"], "best"))["tokenizer"]["tokenizer"] == "gpt2"
    capsys.readouterr()
    code = main(["sample", str(finetuned["dir"]), "--num-samples", "2", "--max-new-tokens", "12", "--start", "KING:"])
    out = capsys.readouterr()
    assert code == 0 and "gpt2 tokenizer" in out.err
    samples = out.out[:-1].split(f"\n{SEPARATOR}\n")
    assert len(samples) == 2 and all(s.startswith("KING:") and len(s) > len("KING:") for s in samples)


def test_header_command_is_valid(hf_dir):
    """The CPU-sized command in the experiment's header comment gives a valid spec with a local HF model dir."""
    comment = [line.lstrip("#").strip() for line in EXPERIMENT.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(comment) if line.startswith("nanogpt run "))
    lines = [comment[start]]
    while lines[-1].endswith("\\"):  # shell continuation lines
        lines.append(comment[start + len(lines)])
    words = shlex.split(" ".join(line.rstrip("\\") for line in lines))
    assert words[:3] == ["nanogpt", "run", "experiments/finetune_shakespeare.toml"]
    overrides = [w.replace("path/to/gpt2-dir", str(hf_dir)) for w in words[3:]]
    exp, _ = load_spec(EXPERIMENT, overrides)
    assert exp.model.init_from == str(hf_dir) and exp.model.block_size == 64 and exp.model.n_layer == 2
    assert exp.train.max_iters == 50 and exp.data.tokenizer == "gpt2"
