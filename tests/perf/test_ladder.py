"""`nanogpt ladder`: the rungs it plans (sizes from `scaling`'s counts, tokens from the ratio) and the
L(C) it fits to runs' manifests."""

from __future__ import annotations

import json
import math

import pytest

from nanogpt.cli import main
from nanogpt.config.canonical import resolved
from nanogpt.config.load import load_spec
from nanogpt.perf.ladder import plan, size_of
from tests.tinyrun import tiny_spec


def test_rungs_train_on_tokens_per_param_times_their_size(tmp_path, capsys):
    spec = tiny_spec(tmp_path, model={"vocab_size": 40})
    rungs = plan(str(spec), ["model.n_embd=64"], "n_layer=1,2,4", 20)
    per_iter = 4 * 2 * 32  # batch_size x grad_accum x block_size of the tiny spec
    assert [r.value for r in rungs] == [1, 2, 4]
    for r in rungs:
        exp, _ = load_spec(spec, ["model.n_embd=64", f"model.n_layer={r.value}"], check_files=False)
        n, per_token = size_of(exp, str(spec))
        assert (r.params, r.flops_per_token) == (n, per_token)
        assert r.iters == math.ceil(20 * n / per_iter) and r.tokens == r.iters * per_iter
        assert r.compute == pytest.approx(per_token * r.tokens)
        assert r.words[-2:] == (f"train.max_iters={r.iters}", f"schedule.decay_iters={r.iters}")
    # each layer adds 12·d² weights (and its biases and norms): the sizes grow by the same step
    assert rungs[2].params - rungs[1].params == 2 * (rungs[1].params - rungs[0].params)
    assert main(["ladder", str(spec), "--sizes", "n_layer=1,2,4", "model.n_embd=64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["rung", "model.n_layer", "params", "tokens", "iters", "FLOPs"]
    assert out[2].split()[:3] == ["0", "1", f"{rungs[0].params:,}"]
    assert out[6].endswith(f"model.n_layer=1 train.max_iters={rungs[0].iters} schedule.decay_iters={rungs[0].iters}")


@pytest.mark.parametrize("sizes", ["n_layer", "n_layer=2", "=2,4"])
def test_sizes_need_a_key_and_several_values(tmp_path, capsys, sizes):
    assert main(["ladder", str(tiny_spec(tmp_path)), "--sizes", sizes]) == 2
    assert "give a model key and two or more values" in capsys.readouterr().err


def test_the_fit_reads_the_runs_and_recovers_their_law(tmp_path, capsys):
    """Runs whose final losses follow L = 1.2 + 30·C^-0.15 exactly: the fit finds the exponent."""
    exp, _ = load_spec(tiny_spec(tmp_path, model={"vocab_size": 40}), check_files=False)
    base = resolved(exp)
    out = tmp_path / "out"
    for i, (n_layer, iters) in enumerate([(1, 100), (2, 400), (4, 1600), (6, 6400)]):
        spec = json.loads(json.dumps(base))
        spec["model"]["n_layer"], spec["train"]["max_iters"] = n_layer, iters
        check, _ = load_spec(tiny_spec(tmp_path, model={"vocab_size": 40, "n_layer": n_layer}), check_files=False)
        c = size_of(check, "")[1] * iters * 4 * 2 * 32
        run = out / "tiny" / f"r{i}"
        run.mkdir(parents=True)
        metrics = {"iter": iters, "val_loss": 1.2 + 30 * c**-0.15}
        (run / "manifest.json").write_text(json.dumps({"schema_version": 1, "name": "tiny", "run_id": f"r{i}", "status": "completed", "spec": spec,
                                                       "data": {"vocab_size": 40}, "metrics": metrics}))
    assert main(["ladder", "--fit", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ladder: L(C) = 1.2000 + 30·C^-0.1500 (alpha ± ")
    assert main(["ladder", "--fit", str(out), "--baseline", str(out)]) == 0
    multipliers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  C ") and line.endswith("x")]
    assert len(multipliers) == 4 and all(line.endswith(": 1x") for line in multipliers)  # a ladder against itself
