"""The llama kind through the product: a run trains, checkpoints, resumes and samples; its run is
an `init_from` for another llama run and is refused by a gpt one."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from nanogpt.checkpoints.catalog import checkpoint_for
from nanogpt.checkpoints.state import load_checkpoint
from nanogpt.cli import main
from nanogpt.models.llama import Llama
from nanogpt.models.loading import load_model
from nanogpt.config.problems import SpecError
from nanogpt.config.load import load_spec
from tests.tinyrun import losses, only_run_dir, tiny_spec

LLAMA = {"kind": "llama", "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32, "intermediate_size": 64,
         "block_size": 32}


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llama")
    spec = tiny_spec(tmp, name="llama", model=LLAMA, train={"max_iters": 20})
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(spec)]) == 0
    return {"tmp": tmp, "spec": spec, "dir": only_run_dir(tmp / "runs", "llama")}


def test_run_trains_and_records_a_llama(llama_run):
    """The manifest counts the llama's parameters (all but the untied token table, as for GPT); the checkpoint records its arch with kind 'llama'; the loss falls."""
    run = llama_run["dir"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["spec"]["model"]["kind"] == "llama"
    state = load_checkpoint(checkpoint_for(run, "latest"))
    assert state["model_arch"]["kind"] == "llama" and state["model_arch"]["n_kv_head"] == 2
    model = load_model(str(run)).model
    assert isinstance(model, Llama)
    assert manifest["model"]["params"] == model.num_params() == sum(p.numel() for p in model.parameters()) - 39 * 32
    evals = [row for row in losses(run) if row[1] == "eval"]
    assert evals[-1][3] < evals[0][3] - 0.3


def test_resume_continues_a_llama_run_exactly(llama_run, tmp_path):
    """A llama run stopped at iteration 10 and resumed logs the same losses as the one that ran through."""
    spec = tiny_spec(tmp_path, name="llama", model=LLAMA, train={"max_iters": 10})
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(spec)]) == 0
        run = only_run_dir(tmp_path / "runs", "llama")
        assert main(["run", "--resume", str(run), "train.max_iters=20"]) == 0
    assert losses(run) == losses(llama_run["dir"])


def test_sample_from_a_llama_run(llama_run, capsys):
    """`sample RUN_DIR` generates from the llama checkpoint with the run's char tokenizer."""
    code = main(["sample", str(llama_run["dir"]), "--start", "KING:", "--num-samples", "1", "--max-new-tokens", "25", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("KING:") and len(out.rstrip("\n")) == len("KING:") + 25


def test_init_from_a_llama_run(llama_run, tmp_path):
    """A llama spec starting from the run gets its architecture and evaluates to the run's last val loss."""
    spec = tiny_spec(tmp_path, name="again", model={"kind": "llama", "init_from": str(llama_run["dir"]), "block_size": 32},
                     data={"data_dir": str(llama_run["tmp"] / "data")}, train={"eval_only": True, "max_iters": 0})
    exp, _ = load_spec(spec)
    assert (exp.model.n_kv_head, exp.model.intermediate_size, exp.model.vocab_size) == (2, 64, load_model(str(llama_run["dir"])).model.config.vocab_size)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(spec)]) == 0
    again = [row for row in losses(only_run_dir(tmp_path / "runs", "again")) if row[1] == "eval"]
    first = [row for row in losses(llama_run["dir"]) if row[1] == "eval"]
    assert again[0][3] == pytest.approx(first[-1][3], abs=1e-6)


def test_gpt_spec_refuses_a_llama_run(llama_run, tmp_path):
    """A gpt table naming a llama run is refused at check time, naming the kind."""
    spec = tiny_spec(tmp_path, name="wrong", model={"init_from": str(llama_run["dir"])})
    with pytest.raises(SpecError, match="is a run of a 'llama' model"):
        load_spec(spec)
