"""The spec verbs as users run them: `check`, `show`, `schema` (and `run` on a bad spec), in real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from nanogpt.config.load import load_spec
from nanogpt.config.canonical import resolved
from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

EXPERIMENTS = sorted((REPO / "experiments").glob("*.toml"))
SCHEMA_FILE = REPO / "schema" / "experiment.schema.json"


def nanogpt(*args: str, cwd: Path = REPO, module: str = "nanogpt") -> subprocess.CompletedProcess:
    """Run `python -m nanogpt ARGS` (or another module) and capture what it prints."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr


BROKEN = {
    "not_toml.toml": 'name = "x"\nseed = [1,\n[model]\n',
    "empty.toml": "",
    "cycle.toml": 'name = "c"\nextends = "cycle.toml"\n',
    "typo.toml": 'name = "t"\n[optimizer]\nbetaz = [0.9, 0.95]\n',
    "kind.toml": 'name = "k"\n[model]\nkind = "mamba"\n',
    "pretrained.toml": 'name = "p"\n[model]\ninit_from = "gpt2"\nblock_size = 2048\n',
}


@pytest.fixture
def broken_specs(tmp_path) -> Path:
    """A folder of broken specs of every sort, plus a binary file and a folder named like a spec."""
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    (tmp_path / "folder.toml").mkdir()
    return tmp_path


# -------------------------------------------------------------------------------------- check


def test_check_passes_every_shipped_experiment():
    """`check experiments/*.toml` prints one `ok:` line per file on stdout, nothing on stderr, exit 0."""
    names = [str(p.relative_to(REPO)) for p in EXPERIMENTS]
    done = nanogpt("check", *names)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"ok: {n}" for n in names]
    assert done.stderr == ""


def test_check_reports_bad_files_on_stderr_and_good_ones_on_stdout(broken_specs):
    """With good and bad specs at once, each good one is ok on stdout, each bad one reported on stderr, exit 2."""
    (broken_specs / "good.toml").write_text('name = "good"\n', encoding="utf-8")
    names = ["good.toml", *BROKEN, "binary.toml", "folder.toml", "missing.toml"]
    done = nanogpt("check", *names, cwd=broken_specs)
    assert done.returncode == 2
    no_traceback(done)
    assert done.stdout == "ok: good.toml\n"
    err = done.stderr
    assert "not_toml.toml: not valid TOML: " in err and "(at line 3, column 2)" in err
    assert "empty.toml: is empty: a spec needs at least `name`" in err
    assert "cycle.toml: 1 problem\n  extends: cycle: cycle.toml -> cycle.toml" in err
    assert "typo.toml: 1 problem\n  optimizer.betaz: unknown key (did you mean 'betas'?)" in err
    assert "kind.toml: 1 problem\n  model.kind: unknown kind 'mamba' (known: gpt, llama)" in err
    assert "pretrained.toml: 1 problem\n  model.block_size: 2048 must not exceed the pretrained model's (1024)" in err
    assert "binary.toml: cannot be read: 'utf-8' codec can't decode" in err
    assert "folder.toml: cannot be read: " in err
    assert "missing.toml: file not found" in err


def test_check_applies_overrides_to_every_file(tmp_path):
    """Overrides after the specs apply to each of them; a bad override fails every file naming it."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\n', encoding="utf-8")
    done = nanogpt("check", "a.toml", "train.max_iters=5", "b.toml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "ok: a.toml\nok: b.toml\n")
    done = nanogpt("check", "a.toml", "b.toml", "train.max_iters=-5", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    for name in ("a", "b"):
        assert f"{name}.toml: 1 problem\n  train.max_iters: must be >= 0 (got -5) (override train.max_iters=-5)" in done.stderr


def test_check_usage_errors_exit_2_without_traceback():
    """No spec at all, or no verb, is a usage error (exit 2), not a crash."""
    done = nanogpt("check")
    assert done.returncode == 2 and "usage error: check needs at least one SPEC" in done.stderr
    no_traceback(done)
    done = nanogpt("frobnicate")
    assert done.returncode == 2
    no_traceback(done)


@pytest.mark.parametrize("gpu", [False, True], ids=["no-gpu", "stand-in-nvidia-smi"])
def test_spec_verbs_never_import_torch(broken_specs, tmp_path, gpu):
    """check, show and schema run without importing torch, whatever the specs hold; with an
    `nvidia-smi` on PATH too (a stand-in here), where `check` also warns what will not fit the GPU."""
    env = dict(os.environ)
    if gpu:
        smi = tmp_path / "bin" / "nvidia-smi"
        smi.parent.mkdir()
        smi.write_text("#!/bin/sh\necho 'NVIDIA Stand-in, 1024'\n")
        smi.chmod(0o755)
        env["PATH"] = f"{smi.parent}{os.pathsep}{env.get('PATH', '')}"
    specs = [str(p) for p in EXPERIMENTS] + [str(broken_specs / n) for n in BROKEN]
    code = (
        "import sys, io, contextlib\n"
        "from nanogpt.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n"
        f"    codes = [main(['check', *{specs!r}]), main(['show', {str(EXPERIMENTS[0])!r}]), main(['schema'])]\n"
        "assert codes == [2, 0, 0], codes\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'transformers', 'tiktoken'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


# --------------------------------------------------------------------------------------- show


@pytest.mark.parametrize("experiment", ["gpt2_owt.toml", "eval_gpt2_xl.toml", "shakespeare_char.toml"])
def test_show_output_checks_and_shows_identically(tmp_path, experiment):
    """`show`'s TOML passes `check`, has no extends, and `show` of it prints the very same text."""
    first = nanogpt("show", f"experiments/{experiment}")
    assert first.returncode == 0, first.stderr
    assert "extends" not in first.stdout
    shown = tmp_path / "shown.toml"
    shown.write_text(first.stdout, encoding="utf-8")
    assert nanogpt("check", str(shown)).returncode == 0
    second = nanogpt("show", str(shown))
    assert (second.returncode, second.stdout) == (0, first.stdout)


def test_show_names_every_field_unset_ones_as_comments(tmp_path):
    """`show` prints every field of every table: an unset optional one as `# key = (unset)`, which
    reads back as unset (TOML has no null), so the output is still the same spec."""
    import attrs

    from nanogpt.config.load import load_spec
    from nanogpt.config.canonical import spec_sha256
    from nanogpt.config.canonical import UNSET

    done = nanogpt("show", "experiments/shakespeare_char.toml")
    assert done.returncode == 0, done.stderr
    for line in ("# vocab_size = (unset)", "# source_sha256 = (unset)", "# fused = (unset)",
                 "# peak_tflops = (unset)", "# run_id = (unset)"):
        assert line in done.stdout.splitlines()
    exp, _ = load_spec(REPO / "experiments" / "shakespeare_char.toml")
    data = tomllib.loads(done.stdout)
    for table in ("model", "data", "optimizer", "schedule", "train", "system", "logging"):
        fields = {a.name for a in attrs.fields(type(getattr(exp, table)))}
        named = set(data[table]) | {
            line.split()[1] for line in _table_text(done.stdout, table) if line.endswith(f"= {UNSET}")
        }
        assert named == fields, table
    shown = tmp_path / "shown.toml"
    shown.write_text(done.stdout, encoding="utf-8")
    assert load_spec(shown)[0] == exp and spec_sha256(load_spec(shown)[0]) == spec_sha256(exp)


def _table_text(toml_text: str, table: str) -> list[str]:
    lines = toml_text.splitlines()
    start = lines.index(f"[{table}]") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    return lines[start:end]


def test_show_hash_and_check_hash_print_the_spec_sha256_without_torch():
    """`show --hash` prints the spec_sha256 a run's manifest records, `check --hash` adds it to each
    ok line; neither imports torch."""
    from nanogpt.config.load import load_spec
    from nanogpt.config.canonical import spec_sha256

    spec = "experiments/shakespeare_char.toml"
    expected = spec_sha256(load_spec(REPO / spec, ["train.max_iters=7"])[0])
    code = (
        "import sys\n"
        "from nanogpt.cli import main\n"
        f"assert main(['show', '--hash', {spec!r}, 'train.max_iters=7']) == 0\n"
        f"assert main(['check', '--hash', {spec!r}, 'experiments/bench.toml', 'train.max_iters=7']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == expected
    assert lines[1] == f"ok: {spec}  spec_sha256 {expected}"
    assert lines[2].startswith("ok: experiments/bench.toml  spec_sha256 ") and len(lines[2].split()[-1]) == 64
    assert lines[3] == "[]"


def test_show_applies_overrides_and_reports_problems(tmp_path):
    """`show SPEC key=value` prints the overridden spec; a bad spec exits 2 with its report."""
    done = nanogpt("show", "experiments/shakespeare_char.toml", "train.max_iters=7", "model.n_layer=2")
    assert done.returncode == 0
    data = tomllib.loads(done.stdout)
    assert (data["train"]["max_iters"], data["model"]["n_layer"]) == (7, 2)
    done = nanogpt("show", "experiments/shakespeare_char.toml", "model.n_head=3")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "experiments/shakespeare_char.toml: 1 problem\n"
        "  model.n_embd: 128 must be divisible by model.n_head (3)\n"
    )
    done = nanogpt("show", "a.toml", "b.toml")
    assert done.returncode == 2 and "show takes exactly one SPEC" in done.stderr


# ------------------------------------------------------------------------------------- schema


def test_committed_schema_is_current(tmp_path):
    """`schema` prints exactly the committed schema/experiment.schema.json (regenerate it when this fails)."""
    done = nanogpt("schema")
    assert done.returncode == 0
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert done.stdout == committed, "stale schema: run `python -m nanogpt schema -o schema/experiment.schema.json`"
    out = tmp_path / "s.json"
    assert nanogpt("schema", "-o", str(out)).returncode == 0
    assert out.read_text(encoding="utf-8") == committed


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiment_matches_the_schema(path):
    """Each experiments/*.toml starts with the #:schema line and, as written and resolved, satisfies the schema."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#:schema ../schema/experiment.schema.json\n")
    validator.validate(tomllib.loads(text))
    exp, _ = load_spec(path)
    validator.validate(resolved(exp))


# ---------------------------------------------------------------------------------------- run


def test_run_with_a_bad_spec_exits_2_with_the_problems(broken_specs):
    """`python -m nanogpt.run BAD` exits 2 with the problem lines and no traceback, leaving no run dir."""
    done = nanogpt("typo.toml", "logging.out_dir=out", module="nanogpt.run", cwd=broken_specs)
    assert done.returncode == 2
    no_traceback(done)
    assert done.stderr == "typo.toml: 1 problem\n  optimizer.betaz: unknown key (did you mean 'betas'?)\n"
    assert not (broken_specs / "out").exists()
