"""system.parallel = "fsdp", proven with real processes on CPU (gloo, torchrun): the same losses as
ddp, sharded checkpoints that survive SIGKILL and reshard on resume, one-process readers, the
memory it saves, and a hostile checkpoint directory that runs nothing."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.tinyrun import (
    PLUGINS,
    REPO,
    env_with_plugins,
    losses,
    nanogpt,
    only_run_dir,
    tiny_spec,
)
from tests.training.test_distributed import SLOW, logged_iters, wait_for

pytestmark = pytest.mark.slow

FLOAT32 = {"device": "cpu", "compile": False, "dtype": "float32"}


def fsdp_spec(tmp: Path, name: str = "tiny", *, parallel: str = "fsdp", plugins: str = '"faults"', **train) -> Path:
    return tiny_spec(tmp, name=name, extra=f"plugins = [{plugins}]", schedule=SLOW,
                     train={"max_iters": 40, "eval_interval": 10, **train}, system={**FLOAT32, "parallel": parallel})


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "nanogpt.run", *args]


def run_job(nproc: int, *args: str, env: dict[str, str] | None = None, what: str = "") -> subprocess.CompletedProcess:
    """`nanogpt run ARGS` on `nproc` processes (torchrun for more than one); fails the test unless it
    exits 0, saying `what` first."""
    cmd = torchrun_cmd(nproc, *args) if nproc > 1 else [sys.executable, "-m", "nanogpt", "run", *args]
    proc = subprocess.run(cmd, env=env or env_with_plugins(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{what}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def start_job(nproc: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(torchrun_cmd(nproc, *args), env=env or env_with_plugins(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def job_processes(spec: Path) -> list[int]:
    """The processes whose command line names `spec`: torchrun and its workers (which torchrun starts
    in sessions of their own, so no process-group signal reaches them)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(spec).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def kill_job(proc: subprocess.Popen, spec: Path) -> None:
    """SIGKILL every process of the job at once, as a lost node or an OOM killer would."""
    for pid in job_processes(spec):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    wait_for(lambda: not job_processes(spec), timeout=30, what="every process of the killed job to end")


def assert_same_losses(a: list, b: list, what: str = "") -> None:
    """Per-iteration (and per-evaluation) losses equal to 1e-5: what float rounding leaves between world sizes."""
    assert [r[:2] for r in a] == [r[:2] for r in b], what
    for ra, rb in zip(a, b):
        for x, y in zip(ra[2:], rb[2:]):
            assert y == pytest.approx(x, rel=1e-5, abs=1e-6), (what, ra, rb)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The unbroken reference: 2-process fsdp, float32, 40 iterations."""
    tmp = tmp_path_factory.mktemp("fsdp_straight")
    run_job(2, str(fsdp_spec(tmp)))
    return only_run_dir(tmp / "runs")


def test_fsdp_losses_equal_ddp_on_one_and_two_processes(tmp_path: Path, straight: Path):
    """2-process fsdp gives the per-iteration losses of 1-process and 2-process ddp to 1e-5 in float32;
    1-process fsdp (with synchronous checkpoints) gives exactly 1-process ddp's."""
    run_job(1, str(fsdp_spec(tmp_path, "ddp1", parallel="ddp")))
    run_job(2, str(fsdp_spec(tmp_path, "ddp2", parallel="ddp")))
    run_job(1, str(fsdp_spec(tmp_path, "fsdp1", async_checkpoint=False)))
    runs = {name: only_run_dir(tmp_path / "runs", name) for name in ("ddp1", "ddp2", "fsdp1")}
    fsdp2 = losses(straight)
    assert len(fsdp2) == 40 + 5  # every iteration logged, and 5 evaluations
    assert_same_losses(losses(runs["ddp1"]), fsdp2, "2-process fsdp vs 1-process ddp")
    assert_same_losses(losses(runs["ddp2"]), fsdp2, "2-process fsdp vs 2-process ddp")
    assert losses(runs["fsdp1"]) == losses(runs["ddp1"])
    manifest = json.loads((straight / "manifest.json").read_text())
    assert manifest["spec"]["system"]["parallel"] == "fsdp" and manifest["hardware"]["world_size"] == 2


def test_sharded_checkpoints_are_directories_the_manifest_hashes(straight: Path):
    """Each checkpoint is a published DCP directory (the latest kept and the best), each of its files'
    sha256 in the manifest and the entry's sha256 that of their listing; no temporary is left."""
    manifest = json.loads((straight / "manifest.json").read_text())
    entries = manifest["checkpoints"]
    assert [e["path"] for e in entries][-2:] == ["checkpoints/ckpt-00000030.dcp", "checkpoints/ckpt-00000040.dcp"]
    import hashlib

    for e in entries:
        folder = straight / e["path"]
        names = sorted(os.listdir(folder))
        assert names == sorted(e["files"]) and {".metadata", "state.pt", "__0_0.distcp", "__1_0.distcp"} <= set(names)
        for name in names:
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == e["files"][name]
        listing = "".join(f"{e['files'][n]}  {n}\n" for n in names)
        assert hashlib.sha256(listing.encode()).hexdigest() == e["sha256"]
    assert not list((straight / "checkpoints").glob(".*"))


KILL_SEED = "NANOGPT_TEST_KILL_SEED"


def kill_point(first: int, last: int) -> tuple[int, str]:
    """An iteration in [first, last] to SIGKILL after, drawn from a seed that is printed, and the
    line that says how to draw the same one again (set NANOGPT_TEST_KILL_SEED to the seed)."""
    seed = int(os.environ.get(KILL_SEED) or random.SystemRandom().randrange(2**32))
    kill_after = random.Random(seed).randint(first, last)
    return kill_after, f"kill point: after iteration {kill_after} (seed {seed}; rerun with {KILL_SEED}={seed})"


@pytest.mark.parametrize("resume_on", [1, 2])
def test_sigkill_then_resume_on_one_or_two_processes(tmp_path: Path, straight: Path, resume_on: int):
    """SIGKILL a 2-process fsdp job at a seeded random iteration after its first checkpoint; `run --resume`
    on `resume_on` processes ends with the losses of the unbroken run (DCP reshards the checkpoint).
    The seed and the kill point are printed and in every failure's message."""
    kill_after, where = kill_point(11, 36)
    print(where)
    spec = fsdp_spec(tmp_path)
    job = start_job(2, str(spec))
    try:
        wait_for(lambda: logged_iters(tmp_path / "runs") >= kill_after, timeout=180, what=f"iteration {kill_after}; {where}")
    finally:
        kill_job(job, spec)
    where += f", killed at logged iteration {logged_iters(tmp_path / 'runs')}, resumed on {resume_on} process(es)"
    print(where)
    run = only_run_dir(tmp_path / "runs")
    assert json.loads((run / "manifest.json").read_text())["status"] == "running", where
    run_job(resume_on, "--resume", str(run), what=where)
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed", where
    assert_same_losses(losses(straight), losses(run), where)


def test_sigkill_mid_checkpoint_leaves_the_previous_one(tmp_path: Path, straight: Path):
    """Killed after every shard of the step-20 checkpoint is written but before it is published: only a
    temporary directory is left, the step-10 checkpoint is the latest, and the resume is exact."""
    marker = tmp_path / "writing"
    spec = fsdp_spec(tmp_path, plugins='"faults", "slow_publish"')
    job = start_job(2, str(spec), env=env_with_plugins(SLOW_PUBLISH_AT_STEP="20", SLOW_PUBLISH_MARKER=str(marker)))
    try:
        wait_for(marker.exists, timeout=180, what="the checkpoint of step 20 to be half written")
    finally:
        kill_job(job, spec)
    run = only_run_dir(tmp_path / "runs")
    folder = run / "checkpoints"
    assert (folder / ".ckpt-00000020.dcp.tmp").is_dir() and not (folder / "ckpt-00000020.dcp").exists()
    assert "__1_0.distcp" in marker.read_text()  # both ranks' shards were on disk when it was killed
    from nanogpt.checkpoints.catalog import checkpoint_for

    assert checkpoint_for(run, "latest").name == "ckpt-00000010.dcp"
    run_job(2, "--resume", str(run))
    assert not list(folder.glob(".ckpt-*")), "the resume removes the torn directory"
    assert_same_losses(losses(straight), losses(run))


@pytest.mark.parametrize("first, then", [("ddp", "fsdp"), ("fsdp", "ddp")])
def test_resume_across_ddp_and_fsdp(tmp_path: Path, straight: Path, first: str, then: str):
    """A ddp run's checkpoint (a .pt on 1 process) continues under 2-process fsdp, and a 2-process
    fsdp run's (a DCP directory) under 1-process ddp: the losses of the unbroken run."""
    nproc = {"ddp": 1, "fsdp": 2}
    run_job(nproc[first], str(fsdp_spec(tmp_path, parallel=first)), "train.max_iters=20")
    run = only_run_dir(tmp_path / "runs")
    suffix = {"ddp": ".pt", "fsdp": ".dcp"}[first]
    assert (run / "checkpoints" / f"ckpt-00000020{suffix}").exists()
    run_job(nproc[then], "--resume", str(run), f'system.parallel="{then}"', "train.max_iters=40")
    assert (run / "checkpoints" / f"ckpt-00000040{'.dcp' if then == 'fsdp' else '.pt'}").exists()
    assert_same_losses(losses(straight), losses(run), f"{first} -> {then}")


def test_fsdp_halves_the_state_each_process_holds():
    """The bytes of parameters and AdamW state one process holds under fsdp at 2 processes are about
    half of those at 1 (measured on the real sharded tensors)."""
    sizes = {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32, "vocab_size": 96, "dropout": 0.0, "bias": True}

    def held(world: int) -> list[int]:
        out = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
             str(PLUGINS / "fsdp_shards.py"), json.dumps(sizes)],
            capture_output=True, text=True, timeout=300, cwd=REPO, env=env_with_plugins(),
        )
        assert out.returncode == 0, out.stderr[-3000:]
        reports = [json.loads(m) for m in re.findall(r"\{[^{}]*\}", out.stdout)]
        return [r["params_bytes"] + r["optimizer_bytes"] for r in sorted(reports, key=lambda r: r["rank"])]

    one, two = held(1), held(2)
    assert len(one) == 1 and len(two) == 2
    for per_process in two:
        assert 0.45 < per_process / one[0] <= 0.55, (one, two)


@pytest.mark.parametrize("reshard_after_forward, per_micro_step", [(True, 1 + 2 * 4), (False, 1 + 4)])
def test_all_gathers_per_iteration(tmp_path: Path, reshard_after_forward: bool, per_micro_step: int):
    """A 4-block model on 2 processes, 4 micro-steps each: every micro-step gathers the root once
    (its weights stay gathered from its forward into its backward) and each block once per forward
    and, when resharded after it, once more for its backward. Counted in real runs (the
    count_collectives plugin): one of 2 iterations and one of 4, the same evaluations in both."""
    gathers = []
    for iters in (2, 4):
        spec = tiny_spec(tmp_path, name=f"gathers{iters}", extra='plugins = ["count_collectives"]',
                         model={"n_layer": 4, "n_head": 2, "n_embd": 32, "block_size": 32},
                         train={"max_iters": iters, "eval_interval": 100, "grad_accum": 8, "batch_size": 2, "log_interval": 100},
                         system={**FLOAT32, "parallel": "fsdp", "reshard_after_forward": reshard_after_forward})
        out = tmp_path / f"counts{iters}"
        out.mkdir()
        run_job(2, str(spec), env=env_with_plugins(COUNT_COLLECTIVES_DIR=str(out)))
        counts = [json.loads((out / f"rank{r}.json").read_text())["all_gather_single"] for r in (0, 1)]
        assert counts[0] == counts[1], counts
        gathers.append(counts[0])
    micro_steps = 8 // 2
    assert (gathers[1] - gathers[0]) / 2 == micro_steps * per_micro_step, gathers


def test_sampling_a_sharded_checkpoint_equals_the_consolidated_one(tmp_path: Path, straight: Path):
    """`sample RUN_DIR` of an fsdp run reads its DCP checkpoint on one process; the same checkpoint
    consolidated into one .pt file samples the same text."""
    from nanogpt.checkpoints.catalog import checkpoint_for
    from nanogpt.checkpoints.state import load_checkpoint

    sharded = checkpoint_for(straight, "best")
    assert sharded.suffix == ".dcp"
    whole = tmp_path / "consolidated.pt"
    torch.save(load_checkpoint(sharded), whole)
    args = ["--num-samples", "2", "--max-new-tokens", "40", "--seed", "5"]
    a = nanogpt("sample", str(straight), *args, check=True)
    b = nanogpt("sample", str(whole), *args, check=True)
    assert a.stdout == b.stdout and len(a.stdout) > 40


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_dcp_metadata_file_runs_nothing(tmp_path: Path, straight: Path):
    """DCP's .metadata is a pickle; one that names anything but DCP's own records is refused (exit 2,
    naming the file) and what it names is never called."""
    from nanogpt.checkpoints.catalog import checkpoint_for

    hostile = tmp_path / "ckpt-00000040.dcp"
    shutil.copytree(checkpoint_for(straight, "latest"), hostile)
    marker = tmp_path / "pwned"
    (hostile / ".metadata").write_bytes(pickle.dumps(_Payload(str(marker))))
    proc = nanogpt("sample", str(hostile), "--max-new-tokens", "5")
    assert proc.returncode == 2, proc.stderr
    assert "metadata" in proc.stderr and re.search(r"(posix|os)\.system", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_float16_is_refused_under_fsdp(tmp_path: Path):
    spec = tiny_spec(tmp_path, system={**FLOAT32, "parallel": "fsdp", "dtype": "float16"})
    proc = nanogpt("check", str(spec))
    assert proc.returncode == 2
    assert "system.dtype: 'float16' cannot be used with system.parallel = 'fsdp'" in proc.stderr


def test_export_perplexity_and_init_from_read_a_sharded_checkpoint(tmp_path: Path, straight: Path):
    """On one process, without a job: `export` writes what transformers loads with the checkpoint's
    logits, `perplexity` evaluates it, and `model.init_from` starts a run from its weights (an
    eval_only run on the same data measures the val loss the fsdp run measured)."""
    from nanogpt.checkpoints.catalog import checkpoint_for
    from nanogpt.models.weights import from_checkpoint
    from tests.models.test_export import same_logits

    latest = checkpoint_for(straight, "latest")
    nanogpt("export", str(straight), "--checkpoint", "latest", "--format", "hf", "-o", str(tmp_path / "hf"), check=True)
    model = from_checkpoint(str(latest)).eval()
    same_logits(model, tmp_path / "hf", model.vocab_size)
    ppl = nanogpt("perplexity", str(straight), str(straight / "spec.toml"), check=True)
    assert re.search(r"perplexity:\s+[0-9.]+", ppl.stdout)
    spec = fsdp_spec(tmp_path, "from_sharded", parallel="ddp", eval_only=True, max_iters=0)
    nanogpt("run", str(spec), f'model.init_from="{latest}"', check=True)
    evaluation = [r for r in losses(only_run_dir(tmp_path / "runs", "from_sharded")) if r[1] == "eval"]
    final = [r for r in losses(straight) if r[1] == "eval"][-1]
    assert evaluation[0][2:] == pytest.approx(final[2:], abs=1e-6)


def test_llama_with_recomputed_blocks_shards_too(tmp_path: Path):
    """The second model kind under 2-process fsdp with its blocks recomputed in the backward gives
    the per-iteration losses of a plain 1-process ddp run to 1e-5 (float32)."""
    llama = {"kind": "llama", "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32, "block_size": 32}
    train = {"max_iters": 10, "eval_interval": 5}
    for name, system in (("ddp", {**FLOAT32, "parallel": "ddp"}),
                         ("fsdp", {**FLOAT32, "parallel": "fsdp", "activation_checkpointing": "blocks"})):
        tiny_spec(tmp_path, name=name, model=llama, train=train, system=system)
    run_job(1, str(tmp_path / "ddp.toml"))
    run_job(2, str(tmp_path / "fsdp.toml"))
    a, b = (losses(only_run_dir(tmp_path / "runs", name)) for name in ("ddp", "fsdp"))
    assert len(a) == 10 + 3
    assert_same_losses(a, b, "llama: 2-process fsdp + activation checkpointing vs 1-process ddp")


def test_a_torn_or_changed_shard_is_never_loaded(tmp_path: Path, straight: Path):
    """A shard truncated by hand: `sample` on the directory says so (exit 2, no traceback). A shard
    changed inside a run: the resume names the checkpoint as corrupt, continues from the one before,
    and still ends with the unbroken run's losses."""
    from nanogpt.checkpoints.catalog import checkpoint_for

    torn = tmp_path / "ckpt-00000040.dcp"
    shutil.copytree(checkpoint_for(straight, "latest"), torn)
    (torn / "__0_0.distcp").write_bytes((torn / "__0_0.distcp").read_bytes()[:100])
    proc = nanogpt("sample", str(torn), "--max-new-tokens", "5")
    assert proc.returncode == 2 and "cannot read sharded checkpoint" in proc.stderr and "Traceback" not in proc.stderr

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "interrupted"
    (run / "manifest.json").write_text(json.dumps(manifest))
    shard = run / "checkpoints" / "ckpt-00000040.dcp" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    proc = run_job(1, "--resume", str(run))
    assert "checkpoint checkpoints/ckpt-00000040.dcp is corrupt or was replaced" in proc.stderr
    assert "from ckpt-00000030.dcp (iteration 30)" in proc.stdout + proc.stderr
    assert_same_losses(losses(straight), losses(run))


def _dotted_system(marker: Path) -> bytes:
    """The attack the old allowlist let through: a global (DCP's metadata module, `os.system`),
    which protocol 4 resolves through that module's own `import os`."""
    from tests.checkpoints.test_hostile_metadata import _call, _unicode

    return _call("torch.distributed.checkpoint.metadata", "os.system", _unicode(f"touch {marker}"))


@pytest.mark.parametrize("verb", ["sample", "perplexity", "export", "resume", "init_from"])
def test_every_verb_that_reads_a_dcp_refuses_a_hostile_one(tmp_path: Path, straight: Path, verb: str):
    """Each verb that reads a sharded checkpoint exits 2 on a hostile `.metadata`, and its payload
    never ran (the family of attacks is in tests/checkpoints/test_hostile_metadata.py, read in-process)."""
    from nanogpt.checkpoints.catalog import checkpoint_for
    from nanogpt.checkpoints.sharded import directory_digest

    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    hostile = checkpoint_for(run, "latest")
    recorded = directory_digest(hostile)[0]
    (hostile / ".metadata").write_bytes(_dotted_system(marker))
    # an attacker who writes the directory writes its manifest too: the hash check is not the guard here
    manifest = run / "manifest.json"
    manifest.write_text(manifest.read_text().replace(recorded, directory_digest(hostile)[0]))
    commands = {
        "sample": ["sample", str(hostile), "--max-new-tokens", "5"],
        "perplexity": ["perplexity", str(hostile), str(run / "spec.toml")],
        "export": ["export", str(hostile), "--format", "hf", "-o", str(tmp_path / "hf")],
        "resume": ["run", "--resume", str(run)],
        "init_from": ["run", str(fsdp_spec(tmp_path, "from_hostile", parallel="ddp", eval_only=True, max_iters=0)),
                      f'model.init_from="{hostile}"'],
    }
    proc = nanogpt(*commands[verb])
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists()
