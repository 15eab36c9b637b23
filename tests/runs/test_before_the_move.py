"""Run directories written by the code before the layout move (commit 5030820) still resume, sample
and diff: tests/fixtures/before_the_move holds two tiny float32 runs of 12 iterations made by it,
one with a `.pt` checkpoint (ddp) and one with a DCP directory (fsdp), with the corpus and spec
they were made from (`nanogpt run tiny.toml`, and `... name=premove_fsdp system.parallel=fsdp`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.tinyrun import losses, nanogpt

pytestmark = pytest.mark.slow

FIXTURE = REPO / "tests" / "fixtures" / "before_the_move"
RUNS = {"premove": "20261204-185345-f5e7", "premove_fsdp": "20261204-185352-e17e"}


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A copy of the fixture to work in: a resume writes into its run directory."""
    shutil.copytree(FIXTURE, tmp_path / "work")
    return tmp_path / "work"


def run_dir(workdir: Path, name: str) -> Path:
    return workdir / "runs" / name / RUNS[name]


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_run_from_before_the_move_resumes_to_more_iterations(workdir, name):
    """`run --resume` continues the old run from its verified checkpoint to 18 iterations: what it
    logged before is kept as it was, and the new losses are those of a run trained here from the
    start (float32 on this machine's CPU: equal to 1e-5, bit for bit where the CPU is the one
    that made the fixture)."""
    old = run_dir(workdir, name)
    before = losses(old)
    proc = nanogpt("run", "--resume", str(old), "train.max_iters=18", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "from ckpt-00000012" in proc.stdout
    record = manifest(old)
    assert record["status"] == "completed" and record["metrics"]["iter"] == 18
    after = losses(old)
    assert after[: len(before)] == before
    assert max(entry[0] for entry in after) == 18

    extra = [] if name == "premove" else ["system.parallel=fsdp"]
    fresh = nanogpt("run", "tiny.toml", f"name={name}", "logging.run_id=fresh", "train.max_iters=18", *extra, cwd=workdir)
    assert fresh.returncode == 0, fresh.stderr
    straight = losses(workdir / "runs" / name / "fresh")
    # the old run logged its last step (11) as a last step; both log and evaluate alike after it
    resumed, unbroken = ({entry[:2]: entry[2:] for entry in run} for run in (after, straight))
    assert {k for k in resumed if k[0] > 12} == {k for k in unbroken if k[0] > 12} == {
        (15, "train"), (17, "train"), (18, "eval")}
    common = resumed.keys() & unbroken.keys()
    assert len(common) >= 8
    assert all(abs(x - y) <= 1e-5 for k in common for x, y in zip(resumed[k], unbroken[k])), (after, straight)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_run_from_before_the_move_samples(workdir, name):
    """`sample` reads the old checkpoint (a `.pt` file, or a DCP directory) and its tokenizer."""
    proc = nanogpt("sample", str(run_dir(workdir, name)), "--start", "KING", "--num-samples", "1",
                   "--max-new-tokens", "8", "--seed", "3", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("KING") and len(proc.stdout) >= len("KING") + 8


def test_runs_from_before_the_move_diff_against_each_other_and_against_their_spec(workdir):
    """`diff` of the two old runs names the two spec fields that differ (name, system.parallel); `diff` of an old run
    against the spec it was made from shows no spec difference (the same resolved spec)."""
    a, b = run_dir(workdir, "premove"), run_dir(workdir, "premove_fsdp")
    proc = nanogpt("diff", str(a), str(b), "--json", cwd=workdir)
    assert proc.returncode == 1, proc.stderr
    paths = {d["path"] for d in json.loads(proc.stdout)}
    assert {p for p in paths if p.startswith("spec.")} == {"spec.name", "spec.system.parallel"}
    same = nanogpt("diff", str(a), "tiny.toml", cwd=workdir)
    assert same.returncode == 0 and same.stdout == "", same.stdout
