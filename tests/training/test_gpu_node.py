"""Ready for a GPU node, shown on CPU: device mapping (a simulated CUDA), a data wait no collective
timeout bounds, checkpoints written beside the loop, and the collectives and syncs a step costs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nanogpt.errors import InputError
from tests.tinyrun import env_with_plugins, final_weights, losses, nanogpt, only_run_dir, same_weights, tiny_spec


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that shows two CUDA devices (nothing is ever run on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_explicit_gpu_index_is_refused_in_a_job(two_gpus):
    """system.device = "cuda:1" under torchrun would put every rank on GPU 1: refused, saying what to do."""
    from nanogpt.training.dist import pick_device

    with pytest.raises(InputError, match=r"'cuda:1' would put all 2 processes of this job on one GPU.*CUDA_VISIBLE_DEVICES"):
        pick_device("cuda:1", local_rank=0, world_size=2)
    assert pick_device("cuda:1", local_rank=None, world_size=1) == torch.device("cuda:1")  # alone it is fine


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_each_rank_takes_the_gpu_of_its_local_rank(two_gpus, name):
    """auto and cuda map rank r of a node to cuda:r."""
    from nanogpt.training.dist import pick_device

    assert [pick_device(name, local_rank=r, world_size=2) for r in (0, 1)] == [torch.device("cuda:0"), torch.device("cuda:1")]


def test_more_ranks_than_gpus_is_a_clear_error(two_gpus, monkeypatch):
    """LOCAL_RANK 3 on a node that shows 2 GPUs names both numbers (and CUDA_VISIBLE_DEVICES), not
    "invalid device ordinal"; so does an index past the last GPU."""
    from nanogpt.training.dist import pick_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(InputError, match=r"LOCAL_RANK 3 needs GPU 3, but this process sees 2 GPUs \(CUDA_VISIBLE_DEVICES=0,1\)"):
        pick_device("cuda", local_rank=3, world_size=4)
    with pytest.raises(InputError, match=r"system.device = 'cuda:5' names GPU 5, but this process sees 2 GPUs"):
        pick_device("cuda:5", local_rank=None, world_size=1)


def test_auto_dtype_is_float16_where_bf16_is_only_emulated(monkeypatch):
    """On a V100 or T4 torch.cuda.is_bf16_supported() is True (emulation counts): "auto" must still
    choose float16 with a scaler there, and bfloat16 where the GPU computes it."""
    from nanogpt.training.dist import pick_dtype

    cuda = torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert pick_dtype("auto", cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert pick_dtype("auto", cuda) == torch.bfloat16


def test_perplexity_scores_without_a_boolean_gather(monkeypatch):
    """Scoring a text masks the targets an earlier window scored with ignore_index: no boolean-mask
    indexing (a device sync per batch on a GPU), and the same NLL as scoring each target by hand."""
    from nanogpt.evaluation.perplexity import TokenSequence, score_sequence, sliding_windows
    from nanogpt.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=11)).eval()
    ids = torch.randint(0, 11, (70,))
    bool_indexing = []
    real_getitem = torch.Tensor.__getitem__

    def spy(self, index):
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            bool_indexing.append(tuple(index.shape))
        return real_getitem(self, index)

    monkeypatch.setattr(torch.Tensor, "__getitem__", spy)
    scores = score_sequence(model, TokenSequence(ids.numpy()), block_size=16, stride=8, batch_size=3)
    monkeypatch.undo()
    assert bool_indexing == []
    # each target scored once, one at a time, with the context its window gives it
    expected = 0.0
    with torch.no_grad():
        for w in sliding_windows(70, 16, 8):
            for t in range(w.score_from, w.end):
                logits, _ = model(ids[w.begin:t][None], all_logits=True)
                expected -= torch.log_softmax(logits[0, -1].double(), -1)[ids[t]].item()
    assert scores.tokens == 69
    assert scores.nll == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------- real processes


def torchrun(tmp_path: Path, spec: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nanogpt.run",
         str(spec), *extra],
        env=env or env_with_plugins(), capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
    )


@pytest.mark.slow
def test_waiting_for_rank_0_to_prepare_is_not_bound_by_the_collective_timeout(tmp_path: Path):
    """Rank 0 prepares the data for 15 s while rank 1 waits; the job's collective timeout is 6 s, yet
    the job completes: the wait is on a group that waits for days, not on a 30-minute collective."""
    spec = tiny_spec(tmp_path, extra='plugins = ["slow_prepare"]', train={"max_iters": 4, "eval_interval": 4},
                     system={"collective_timeout_minutes": 0.1})
    proc = torchrun(tmp_path, spec, env=env_with_plugins(SLOW_PREPARE_SECONDS="15"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((only_run_dir(tmp_path / "runs") / "manifest.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_collectives_per_step_and_samples_in_a_job(tmp_path: Path):
    """Under torchrun, 20 iterations with log_interval 10 agree on the stop flag 2 times (not 20), plus
    once per evaluation split; DDP does not broadcast the constant vocab_mask; samples are generated
    only at the last evaluation."""
    spec = tiny_spec(tmp_path, extra='plugins = ["count_collectives"]',
                     train={"max_iters": 20, "eval_interval": 10, "eval_iters": 4, "log_interval": 10})
    out = tmp_path / "counts"
    out.mkdir()
    proc = torchrun(tmp_path, spec, env=env_with_plugins(COUNT_COLLECTIVES_DIR=str(out)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    evaluations, splits = 3, 2  # at 0, 10 and 20; eval_iters 4 on 2 ranks: 2 rounds, checked at round 0
    for c in counts:
        assert c["all_reduce_max"] == 2 + evaluations * splits, c
        assert c["ddp_broadcast_buffers"] == [False]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(only_run_dir(tmp_path / "runs")), size_guidance={"tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Tensors("samples/text_summary")] == [20]


@pytest.mark.slow
def test_a_checkpoint_is_written_while_the_loop_goes_on(tmp_path: Path):
    """While the checkpoint of step 20 is still being written (slowly, by the slow_save plugin) the
    loop trains on past it; the manifest never lists the unfinished file; SIGKILL then leaves only a
    temporary file, and the resume from step 10 ends bit-identical to a run never stopped."""
    slow = {"kind": "sleep", "seconds": 0.03}
    spec = tiny_spec(tmp_path, extra='plugins = ["faults", "slow_save"]', schedule=slow)
    marker = tmp_path / "writing"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanogpt", "run", str(spec)],
        env=env_with_plugins(SLOW_SAVE_AT_STEP="20", SLOW_SAVE_MARKER=str(marker)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert time.time() < deadline, "the checkpoint of step 20 never started"
            time.sleep(0.02)
        run = only_run_dir(tmp_path / "runs")

        def trained_past(it: int) -> bool:
            lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.endswith("}")]
            return any(r["kind"] == "train" and r["iter"] >= it for r in lines)

        while not trained_past(25):
            assert time.time() < deadline, "the loop waited for the checkpoint"
            time.sleep(0.02)
        m = json.loads((run / "manifest.json").read_text())
        assert [e["step"] for e in m["checkpoints"]] == [10]
        assert not (run / "checkpoints" / "ckpt-00000020.pt").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert list((run / "checkpoints").glob(".ckpt-00000020.pt.*"))
    nanogpt("run", "--resume", str(run), check=True)
    reference = tiny_spec(tmp_path, name="ref", extra='plugins = ["faults"]', schedule=slow)
    nanogpt("run", str(reference), check=True)
    straight = only_run_dir(tmp_path / "runs", "ref")
    assert losses(run) == losses(straight)
    assert same_weights(final_weights(run), final_weights(straight))
