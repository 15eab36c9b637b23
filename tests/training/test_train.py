"""The runner end to end on tiny specs: the run dir, the manifest, TensorBoard, repeatability, resume, failures."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nanogpt.cli import main
from tests.tinyrun import ReferenceRun, env_with_plugins, final_weights, losses, nanogpt, only_run_dir, same_weights, tiny_spec

MANIFEST_KEYS = {
    "schema_version", "name", "run_id", "status", "spec", "spec_sha256", "overrides", "command",
    "created_at", "finished_at", "git", "env", "hardware", "data", "model", "metrics", "checkpoints",
}


def test_run_dir_layout(reference_run: ReferenceRun):
    """A completed run leaves its manifest, resolved spec, metrics, event files and checkpoints."""
    names = {p.name for p in reference_run.dir.iterdir()}
    assert {"manifest.json", "spec.toml", "metrics.jsonl", "checkpoints"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert list((reference_run.dir / "checkpoints").glob("ckpt-*.pt"))


def test_manifest_has_every_key(reference_run: ReferenceRun):
    """manifest.json carries every key PRODUCT.md names, filled in for a completed run."""
    m = json.loads((reference_run.dir / "manifest.json").read_text())
    assert MANIFEST_KEYS <= m.keys()
    assert m["status"] == "completed" and m["error"] is None and m["finished_at"]
    assert set(m["git"]) >= {"commit", "dirty", "diff_sha256"}
    assert set(m["env"]) >= {"python", "torch", "cuda", "platform", "hostname", "packages"}
    assert set(m["hardware"]) >= {"device", "device_name", "world_size"} and m["hardware"]["world_size"] == 1
    # the CPU peak behind MFU: measured at the run's precision, and how
    how = m["hardware"]["peak_measurement"]
    assert how["dtype"] == m["hardware"]["dtype"] and how["threads"] >= 1 and "matmuls" in how["method"]
    for split in ("train", "val"):
        assert set(m["data"][split]) >= {"path", "tokens", "sha256"} and m["data"][split]["tokens"] > 0
    assert m["data"]["tokenizer"] == "char" and m["data"]["vocab_size"] > 10
    assert m["model"]["params"] > 0 and m["model"]["flops_per_token"] > 0
    metrics = m["metrics"]
    assert metrics["iter"] == 40 and metrics["tokens_seen"] == 40 * 4 * 2 * 32
    for key in ("train_loss", "val_loss", "best_val_loss", "tokens_per_sec", "wall_seconds"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert "mfu" in metrics
    for entry in m["checkpoints"]:
        assert (reference_run.dir / entry["path"]).is_file() and len(entry["sha256"]) == 64
        assert isinstance(entry["step"], int)
    assert m["spec"]["name"] == "tiny" and len(m["spec_sha256"]) == 64


def test_spec_toml_repeats_the_run(reference_run: ReferenceRun):
    """spec.toml is self-contained and is exactly what `show` prints for it."""
    text = (reference_run.dir / "spec.toml").read_text()
    assert "extends" not in text
    from nanogpt.config.load import loads_spec
    from nanogpt.config.canonical import to_toml

    assert to_toml(loads_spec(text)) == text


def test_running_a_runs_spec_toml_repeats_it(reference_run: ReferenceRun, tmp_path: Path, capsys):
    """`run RUN/spec.toml` repeats a run under a new id, bit for bit. A run named by logging.run_id
    keeps that id in its spec.toml: running it again is refused before any work (exit 2) with what
    to do, and `logging.run_id=` (nothing after '=') repeats it under a new timestamped id.
    (The repeats write under this test's own logging.out_dir: the shared reference's folder stays as it is.)"""
    runs = tmp_path / "runs"
    elsewhere = f"logging.out_dir={json.dumps(str(runs))}"
    assert main(["run", str(reference_run.dir / "spec.toml"), elsewhere]) == 0
    repeat = only_run_dir(runs)
    assert losses(repeat) == losses(reference_run.dir)

    assert main(["run", str(reference_run.dir / "spec.toml"), elsewhere, "logging.run_id=named"]) == 0
    named = runs / "tiny" / "named"
    capsys.readouterr()
    assert main(["run", str(named / "spec.toml")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"error: run directory {str(named)!r} exists already (logging.run_id = 'named'). Continue that run "
        f"with `nanogpt run --resume {named}`, or repeat it under another id: add logging.run_id=NEW, or "
        "logging.run_id= (nothing after '=') for a new timestamped one\n"
    )
    before = set((runs / "tiny").iterdir())
    assert main(["run", str(named / "spec.toml"), "logging.run_id="]) == 0
    (fresh,) = set((runs / "tiny").iterdir()) - before
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", fresh.name) and losses(fresh) == losses(reference_run.dir)


def test_manifest_throughput_is_the_runs_average(reference_run: ReferenceRun):
    """The manifest's tokens_per_sec (what `runs` shows) is the run's average over its logged windows
    but the first (the warm-up), not the last window's; its MFU goes with it."""
    windows = [r for r in map(json.loads, (reference_run.dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    assert [w["iter"] for w in windows] == list(range(40))  # log_interval 1: each window is one iteration
    tokens_per_iter = 4 * 2 * 32
    seconds = [tokens_per_iter / w["tokens_per_sec"] for w in windows[1:]]
    m = json.loads((reference_run.dir / "manifest.json").read_text())
    assert m["metrics"]["tokens_per_sec"] == pytest.approx(tokens_per_iter * len(seconds) / sum(seconds), rel=1e-9)
    assert m["metrics"]["tokens_per_sec"] != windows[-1]["tokens_per_sec"]
    peak = m["hardware"]["peak_tflops"] * 1e12
    assert m["metrics"]["mfu"] == pytest.approx(m["model"]["flops_per_token"] * m["metrics"]["tokens_per_sec"] / peak)


def test_loss_falls_and_checkpoints_are_pruned(reference_run: ReferenceRun):
    """The val loss falls from its initial value and only the latest checkpoints and the best are kept."""
    evals = [r for r in map(json.loads, (reference_run.dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 10, 20, 30, 40]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    m = json.loads((reference_run.dir / "manifest.json").read_text())
    steps = sorted(e["step"] for e in m["checkpoints"])
    best = min(m["checkpoints"], key=lambda e: e["val_loss"])["step"]
    assert steps[-2:] == [30, 40] and best in steps and len(steps) <= 3
    on_disk = sorted(p.name for p in (reference_run.dir / "checkpoints").glob("*.pt"))
    assert on_disk == sorted(Path(e["path"]).name for e in m["checkpoints"])


def test_initial_loss_near_log_vocab(reference_run: ReferenceRun):
    """At initialisation the loss is close to ln(vocab): the model starts out uniform."""
    m = json.loads((reference_run.dir / "manifest.json").read_text())
    first = json.loads((reference_run.dir / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["val_loss"] - math.log(m["data"]["vocab_size"])) < 0.3


def test_tensorboard_tags(reference_run: ReferenceRun):
    """TensorBoard's own reader finds the scalars, the spec text, samples and hparams at the right steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(reference_run.dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/val", "loss/train_step", "lr", "grad_norm", "tokens_per_sec", "mfu"} <= scalars
    assert [e.step for e in acc.Scalars("loss/val")] == [0, 10, 20, 30, 40]
    assert [e.step for e in acc.Scalars("loss/train_step")] == list(range(40))
    tensors = set(acc.Tags()["tensors"])
    assert {"spec/text_summary", "samples/text_summary"} <= tensors
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins


def test_same_spec_twice_is_bit_identical(tmp_path: Path, reference_run: ReferenceRun):
    """The same spec and seed gives bit-identical losses and final weights on the CPU."""
    assert main(["run", str(tiny_spec(tmp_path))]) == 0
    again = only_run_dir(tmp_path / "runs")
    assert losses(again) == losses(reference_run.dir)
    assert same_weights(final_weights(again), final_weights(reference_run.dir))


def test_eval_only_leaves_weights_and_writes_metrics(tmp_path: Path, reference_run: ReferenceRun):
    """An eval_only run from a checkpoint reports losses and perplexity and changes nothing."""
    source = sorted((reference_run.dir / "checkpoints").glob("*.pt"))[-1]
    before = {k: v.clone() for k, v in torch.load(source, weights_only=True)["model"].items()}
    spec = tiny_spec(tmp_path, name="evaluated", model={"init_from": str(source)}, train={"eval_only": True})
    assert main(["run", str(spec)]) == 0
    run = only_run_dir(tmp_path / "runs", "evaluated")
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "completed" and m["metrics"]["iter"] == 0
    assert m["metrics"]["val_perplexity"] == pytest.approx(math.exp(m["metrics"]["val_loss"]))
    assert m["checkpoints"] == [] and not (run / "checkpoints").exists()
    assert same_weights(before, torch.load(source, weights_only=True)["model"])


def test_nan_loss_stops_the_run(tmp_path: Path):
    """A NaN loss stops the run as failed, names the iteration, and keeps the last good checkpoint."""
    spec = tiny_spec(
        tmp_path, extra='plugins = ["faults"]', schedule={"kind": "nan_at", "iteration": 23},
        train={"max_iters": 40, "eval_interval": 10, "log_interval": 5},
    )
    proc = nanogpt("run", str(spec))
    assert proc.returncode == 1, proc.stderr
    run = only_run_dir(tmp_path / "runs")
    m = json.loads((run / "manifest.json").read_text())
    # lr is NaN from iteration 23, so the weights are NaN after it and the loss of iteration 24 is
    assert m["status"] == "failed" and "iteration 24" in m["error"]
    assert "Traceback" not in proc.stderr and "iteration 24" in proc.stderr
    assert max(e["step"] for e in m["checkpoints"]) == 20
    from nanogpt.checkpoints.state import load_checkpoint

    good = load_checkpoint(run / m["checkpoints"][-1]["path"])["model"]
    assert all(torch.isfinite(t).all() for t in good.values())


@pytest.mark.slow
def test_sigint_checkpoints_and_resume_is_exact(tmp_path: Path, constant_lr_reference: ReferenceRun):
    """SIGINT mid-run saves a checkpoint, exits 130 with a resume hint; the resumed run ends bit-identical."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "sleep", "seconds": 0.05})
    reference = tmp_path / "reference"
    reference.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanogpt", "run", str(spec)], env=env_with_plugins(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # wait until it is training past its first evaluation, then interrupt it
    deadline = time.time() + 60
    while time.time() < deadline:
        runs = tmp_path / "runs" / "tiny"
        metrics = list(runs.glob("*/metrics.jsonl")) if runs.exists() else []
        if metrics and sum(1 for _ in metrics[0].open()) > 14:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "nanogpt run --resume" in out and "Traceback" not in err
    run = only_run_dir(tmp_path / "runs")
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "interrupted"
    stopped_at = m["metrics"]["iter"]
    assert 0 < stopped_at < 40
    assert nanogpt("run", "--resume", str(run), check=True).returncode == 0
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "completed" and m["metrics"]["iter"] == 40
    # the sleeping schedule is the constant-lr one, so compare against a run of the same schedule
    straight = constant_lr_reference.dir
    assert losses(run) == losses(straight)
    assert same_weights(final_weights(run), final_weights(straight))


def test_resume_refuses_training_changes(tmp_path: Path, reference_run: ReferenceRun):
    """Resuming with a changed learning rate is refused with the list of changes, unless forced."""
    proc = nanogpt("run", "--resume", str(reference_run.dir), "optimizer.lr=0.1")
    assert proc.returncode == 2
    assert "optimizer.lr" in proc.stderr and "--force" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_records_its_overrides_in_the_provenance(tmp_path: Path):
    """After `run --resume RUN train.max_iters=40`, the manifest's provenance names the resume's
    override for max_iters (not the first command's), keeps the other sources, and `resumes` lists it."""
    spec = tiny_spec(tmp_path)
    # in this process: what a manifest records of the overrides comes from main's arguments, not sys.argv
    assert main(["run", str(spec), "train.max_iters=20", "logging.run_id=r"]) == 0
    run = tmp_path / "runs" / "tiny" / "r"
    before = json.loads((run / "manifest.json").read_text())
    assert before["provenance"]["train.max_iters"] == "override train.max_iters=20"
    assert main(["run", "--resume", str(run), "train.max_iters=40"]) == 0
    m = json.loads((run / "manifest.json").read_text())
    assert m["metrics"]["iter"] == 40 and m["spec"]["train"]["max_iters"] == 40
    assert m["provenance"]["train.max_iters"] == "override train.max_iters=40 (--resume)"
    assert m["provenance"]["optimizer.lr"] == before["provenance"]["optimizer.lr"] == str(spec)
    assert m["provenance"]["logging.run_id"] == "override logging.run_id=r"
    assert m["overrides"] == ["train.max_iters=20", "logging.run_id=r"]
    assert [r["overrides"] for r in m["resumes"]] == [["train.max_iters=40"]]


@pytest.mark.slow
def test_compiled_path(tmp_path: Path):
    """torch.compile trains the same model to a loss close to the eager one's."""
    eager = tiny_spec(tmp_path, name="eager", train={"max_iters": 10, "eval_interval": 10})
    compiled = tiny_spec(tmp_path, name="compiled", train={"max_iters": 10, "eval_interval": 10}, system={"compile": True})
    assert main(["run", str(eager)]) == 0
    assert nanogpt("run", str(compiled), check=True, timeout=600).returncode == 0
    a = losses(only_run_dir(tmp_path / "runs", "eager"))
    b = losses(only_run_dir(tmp_path / "runs", "compiled"))
    assert [r[:2] for r in a] == [r[:2] for r in b]
    assert b[-1][3] == pytest.approx(a[-1][3], rel=1e-3)


@pytest.mark.slow
def test_sampling_leaves_a_compiled_fsdp_run_compiled(tmp_path: Path):
    """Under fsdp the blocks are compiled in place, and the samples of the step-0 evaluation come
    before the first training step: generated through the compiled blocks, the KV cache's per-layer
    indexing recompiled each block once per layer until dynamo's recompile limit (8) left it eager
    for the whole run. Generated eagerly, the run compiles two graphs (evaluation and training)."""
    from torch._dynamo.utils import counters

    ten_layers = {"n_layer": 10, "n_head": 2, "n_embd": 32, "block_size": 32}
    spec = tiny_spec(tmp_path, name="sampled", model=ten_layers,
                     train={"max_iters": 3, "eval_interval": 100, "eval_iters": 1, "grad_accum": 1, "batch_size": 2},
                     system={"compile": True, "dtype": "float32", "parallel": "fsdp"},
                     logging={"samples": 1, "sample_tokens": 4})
    torch._dynamo.reset()
    counters.clear()
    assert main(["run", str(spec)]) == 0
    run = only_run_dir(tmp_path / "runs", "sampled")
    assert [r["iter"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"] == [0, 3]
    assert not [reason for reason in counters["unimplemented"] if "recompile_limit" in reason]
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    torch._dynamo.reset()


# ------------------------------------------------------------------------------ precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_on_cpu_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native):
    """system.dtype "auto" on a CPU: bfloat16 with AVX512-BF16/AMX, float32 where bf16 would be emulated;
    an explicit dtype is always obeyed; the CPU peak behind MFU is measured at the run's precision."""
    from nanogpt.training import hardware
    from nanogpt.training.dist import pick_dtype

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert pick_dtype("float32", cpu) == torch.float32
    assert pick_dtype("bfloat16", cpu) == torch.bfloat16
    peak = hardware.peak_for(cpu, pick_dtype("auto", cpu))
    assert peak.source == "measured" and peak.tflops > 0
    assert peak.measurement["dtype"] == ("bfloat16" if native else "float32")


ALLOCATE_AND_FREE = """
import resource, sys, torch
from nanogpt.training import hardware
tuned = hardware.keep_freed_memory_in_process() if sys.argv[1] == "tuned" else False
def step(i):  # a step's activations: blocks of a few MiB alive at once, all freed at its end
    blocks = [torch.ones((2 << 20) + i * 16384) for _ in range(4)]  # a little bigger each time
    del blocks
step(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(1, 21):
    step(i)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_runs_keep_freed_memory_instead_of_faulting_it_in_again(tmp_path: Path):
    """After keep_freed_memory_in_process, the blocks a step frees (4 x 8 MiB and a bit) are reused by the
    next step; by default glibc returns them to the kernel and every step faults its 8192+ pages in
    again. A user's own MALLOC_* choice is left alone."""
    script = tmp_path / "alloc.py"
    script.write_text(ALLOCATE_AND_FREE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}

    def faults(mode: str, extra_env: dict[str, str] | None = None) -> tuple[str, int]:
        out = subprocess.run([sys.executable, str(script), mode], env={**env, **(extra_env or {})},
                             capture_output=True, text=True, check=True).stdout.split()
        return out[0], int(out[1])

    tuned, tuned_faults = faults("tuned")
    default, default_faults = faults("default")
    assert tuned == "True" and default == "False"
    assert default_faults > 20 * 8192 and tuned_faults < default_faults / 10
    assert faults("tuned", {"MALLOC_ARENA_MAX": "2"})[0] == "False"
