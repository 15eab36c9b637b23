"""A run recorded before a spec field existed still resumes, diffs as the same spec and counts as a
sweep's completed member: its recorded spec is read through today's classes, so the missing field
is its default (nanogpt.config.canonical.as_read_today), while a field today's classes no longer
know still shows as a difference."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w
import torch

from nanogpt.cli import main
from nanogpt.config.canonical import as_read_today
from nanogpt.fileio import sha256_file
from tests.tinyrun import losses, only_run_dir, tiny_spec

ADDED_LATER = ("optimizer", "eps")
"""The field the aged run never heard of: its recorded value (1e-8) is today's default."""


def age_run(run: Path, table: str, field: str) -> None:
    """Make `run` look written by code that lacked `[table] field`: gone from its manifest's spec, its
    spec.toml and every checkpoint's spec (whose sha256 the manifest then records afresh)."""
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["spec"][table][field]
    for entry in manifest["checkpoints"]:
        path = run / entry["path"]
        state = torch.load(path, weights_only=True)
        del state["spec"][table][field]
        torch.save(state, path)
        entry["sha256"] = sha256_file(path)
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    spec = tomllib.loads((run / "spec.toml").read_text())
    del spec[table][field]
    (run / "spec.toml").write_text(tomli_w.dumps(spec))


@pytest.fixture
def aged(tmp_path) -> dict:
    """A completed 12-iteration tiny run, aged as if recorded before `optimizer.eps` existed."""
    spec = tiny_spec(tmp_path, train={"max_iters": 12, "eval_interval": 6}, logging={"tensorboard": False})
    assert main(["run", str(spec)]) == 0
    run = only_run_dir(tmp_path / "runs")
    age_run(run, *ADDED_LATER)
    assert "eps" not in json.loads((run / "manifest.json").read_text())["spec"]["optimizer"]
    return {"spec": spec, "run": run, "tmp": tmp_path}


def test_an_older_run_diffs_as_the_spec_that_made_it(aged, capsys):
    """`diff` of the aged run against its spec shows no difference: the missing field is its default."""
    capsys.readouterr()
    assert main(["diff", str(aged["run"]), str(aged["spec"])]) == 0
    assert capsys.readouterr().out == ""


def test_an_older_run_resumes_as_unchanged(aged, capsys):
    """`run --resume` of the aged run continues from its checkpoint without --force, and its logged losses are kept."""
    before = losses(aged["run"])
    capsys.readouterr()
    assert main(["run", "--resume", str(aged["run"]), "train.max_iters=14"]) == 0
    assert "from ckpt-00000012" in capsys.readouterr().out
    after = losses(aged["run"])
    assert after[: len(before)] == before and max(entry[0] for entry in after) == 14


def test_an_older_completed_run_is_a_sweeps_completed_member(aged, capsys):
    """A sweep whose member is the aged run's spec reuses that run rather than training it again."""
    capsys.readouterr()
    assert main(["sweep", str(aged["spec"]), "optimizer.lr=3e-3,1e-3", "--sweep-id", "s", "--index", "0"]) == 0
    out = capsys.readouterr().out
    assert "a completed run has the same spec" in out, out
    dirs = [d for d in (aged["tmp"] / "runs" / "tiny").iterdir() if d.is_dir() and d.name != "sweeps"]
    assert dirs == [aged["run"]]


def test_a_field_todays_classes_do_not_know_is_still_a_difference():
    """A recorded field that today's classes no longer have is not dropped: the spec is compared as recorded."""
    from nanogpt.config.load import loads_spec
    from nanogpt.config.canonical import resolved
    from nanogpt.runs.manifest import training_changes

    today = resolved(loads_spec('name = "x"\n[data]\ndataset = "d"\n'))
    recorded = json.loads(json.dumps(today))
    recorded["optimizer"]["retired_knob"] = 3
    assert as_read_today(recorded) == recorded
    assert [c[0] for c in training_changes(recorded, today)] == ["optimizer.retired_knob"]
    del recorded["optimizer"]["retired_knob"], recorded["optimizer"]["eps"]
    assert as_read_today(recorded) == today and training_changes(recorded, today) == []


def test_a_recorded_field_today_does_not_know_refuses_the_resume_by_name(aged, capsys):
    """A field in the run's recorded spec that today's classes lack is a change a resume names, not one it drops."""
    manifest = json.loads((aged["run"] / "manifest.json").read_text())
    manifest["spec"]["optimizer"]["retired_knob"] = 3
    (aged["run"] / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["run", "--resume", str(aged["run"]), "train.max_iters=14"]) == 2
    err = capsys.readouterr().err
    assert "spec.optimizer.retired_knob: 3 -> (absent)" in err, err


def test_an_architecture_record_without_a_later_field_rebuilds_with_its_default():
    """A checkpoint's `model_arch` written before a model field existed rebuilds the model with that field's default."""
    from nanogpt.models.gpt import GPT, GPTConfig
    from nanogpt.models.weights import rebuild

    arch = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11)).arch()
    del arch["tie_weights"]
    model = rebuild(arch)
    assert model.arch()["tie_weights"] is True
    assert model.lm_head.weight is model.transformer.wte.weight
