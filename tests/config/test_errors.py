"""Exact error reports for a catalogue of broken specs: what a user reads on stderr after `check`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from nanogpt.config.problems import SpecError
from nanogpt.config.load import load_spec, loads_spec


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Every spec file lives in a fresh folder that is also the working directory (short names)."""
    monkeypatch.chdir(tmp_path)


def write(name: str, text: str) -> str:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return name


def report(name: str, text: str | None = None, overrides: tuple[str, ...] = ()) -> str:
    """The report `check` prints for the spec file `name` (written first when `text` is given)."""
    if text is not None:
        write(name, text)
    with pytest.raises(SpecError) as e:
        load_spec(name, overrides)
    return e.value.report()


def lines(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# ------------------------------------------------------------------------- PRODUCT.md's example


def test_product_example_reports_its_three_lines():
    """The example in PRODUCT.md gives exactly its three lines, across two tables, in one pass."""
    got = report(
        "tiny.toml",
        """
        name = "tiny"
        [model]
        n_layer = 2
        n_head = 12
        n_embd = 100
        [optimizer]
        kind = "adam"
        betaz = [0.9, 0.95]
        """,
    )
    assert got == lines(
        """
        tiny.toml: 3 problems
          model.n_embd: 100 must be divisible by model.n_head (12)
          optimizer.kind: unknown kind 'adam' (known: adamw, muon, sgd)
          optimizer.betaz: unknown key (did you mean 'betas'?)
        """
    )


def test_problems_in_every_table_are_reported_together():
    """One pass reports a problem in each of several tables, in the order the tables are written."""
    got = report(
        "many.toml",
        """
        name = "many"
        seed = -1
        [data]
        val_fraction = 1.5
        [train]
        grad_accum = 0
        [system]
        device = "gpu"
        [logging]
        samples = "two"
        """,
    )
    assert got == lines(
        """
        many.toml: 5 problems
          seed: must be >= 0 (got -1)
          data.val_fraction: must be < 1.0 (got 1.5)
          train.grad_accum: must be >= 1 (got 0)
          system.device: must be "auto", "cpu", "cuda", "cuda:N" or "mps" (got 'gpu')
          logging.samples: must be an integer (got 'two')
        """
    )


# ---------------------------------------------------------------------------------- types


def test_string_for_an_integer():
    """A quoted number is a string, not an integer: TOML's types are kept strictly."""
    assert report("s.toml", 'name = "s"\n[model]\nn_layer = "12"\n') == lines(
        """
        s.toml: 1 problem
          model.n_layer: must be an integer (got '12')
        """
    )


def test_float_for_an_integer():
    """An integral float is still not an integer (no silent truncation of 12.0 or 12.5)."""
    assert report("s.toml", 'name = "s"\n[train]\nbatch_size = 12.0\n') == lines(
        """
        s.toml: 1 problem
          train.batch_size: must be an integer (got 12.0)
        """
    )


def test_bool_for_a_number_and_number_for_a_bool():
    """true is not 1 and 1 is not true, in either direction."""
    assert report("s.toml", 'name = "s"\n[optimizer]\nlr = true\n[system]\ncompile = 1\n') == lines(
        """
        s.toml: 2 problems
          optimizer.lr: must be a number (got true)
          system.compile: must be true or false (got 1)
        """
    )


def test_non_finite_float():
    """nan and inf are TOML floats but never sensible hyperparameters."""
    assert report("s.toml", 'name = "s"\n[optimizer]\nlr = nan\neps = inf\n') == lines(
        """
        s.toml: 2 problems
          optimizer.lr: must be a finite number (got nan)
          optimizer.eps: must be a finite number (got inf)
        """
    )


def test_integer_beyond_64_bits():
    """An integer TOML cannot hold is refused rather than overflowing later."""
    assert report("s.toml", 'name = "s"\n[train]\nmax_iters = 100000000000000000000\n') == lines(
        """
        s.toml: 1 problem
          train.max_iters: must fit in 64 bits, as TOML integers do (got 100000000000000000000)
        """
    )


def test_choice_not_among_the_literals():
    """A field with fixed choices lists them all."""
    assert report("s.toml", 'name = "s"\n[system]\ndtype = "fp16"\n') == lines(
        """
        s.toml: 1 problem
          system.dtype: must be one of 'auto', 'float32', 'bfloat16', 'float16' (got 'fp16')
        """
    )


def test_array_expected():
    """A scalar where an array belongs says so."""
    assert report("s.toml", 'name = "s"\n[optimizer]\nbetas = 0.9\n') == lines(
        """
        s.toml: 1 problem
          optimizer.betas: must be an array (got 0.9)
        """
    )


def test_array_item_of_the_wrong_type_names_its_index():
    """A bad item of an array is named by its index."""
    assert report("s.toml", 'name = "s"\n[optimizer]\nbetas = [0.9, "0.95"]\n') == lines(
        """
        s.toml: 1 problem
          optimizer.betas[1]: must be a number (got '0.95')
        """
    )


def test_table_expected():
    """A value where a table belongs says so."""
    assert report("s.toml", 'name = "s"\nmodel = "gpt2"\n') == lines(
        """
        s.toml: 1 problem
          model: must be a table (got 'gpt2')
        """
    )


def test_datetime_shown_as_toml_writes_it():
    """A TOML date-time in the wrong place is quoted as the user wrote it, not as Python's repr."""
    assert report("s.toml", "name = 1979-05-27T07:32:00Z\n") == lines(
        """
        s.toml: 1 problem
          name: must be a string (got 1979-05-27T07:32:00+00:00)
        """
    )


# --------------------------------------------------------------------------------- ranges


def test_ranges_of_numbers():
    """Each bound names the limit and the value found."""
    got = report(
        "s.toml",
        """
        name = "s"
        [model]
        n_layer = 0
        dropout = 1.0
        [optimizer]
        lr = 0
        [schedule]
        kind = "wsd"
        cooldown_fraction = 1.5
        """,
    )
    assert got == lines(
        """
        s.toml: 4 problems
          model.n_layer: must be >= 1 (got 0)
          model.dropout: must be < 1.0 (got 1.0)
          optimizer.lr: must be > 0.0 (got 0.0)
          schedule.cooldown_fraction: must be <= 1.0 (got 1.5)
        """
    )


def test_betas_length_and_item_range():
    """betas needs exactly two items, each in [0, 1)."""
    assert report("s.toml", 'name = "s"\n[optimizer]\nbetas = [0.9, 0.95, 0.99]\n') == lines(
        """
        s.toml: 1 problem
          optimizer.betas: must have 2 items (got 3)
        """
    )
    assert report("t.toml", 'name = "t"\n[optimizer]\nbetas = [0.9, 1.0]\n') == lines(
        """
        t.toml: 1 problem
          optimizer.betas[1]: must be < 1.0 (got 1.0)
        """
    )


def test_unsafe_names():
    """A name becomes a directory: separators and hidden names are refused."""
    got = report("s.toml", 'name = "../escape"\n[logging]\nrun_id = ".hidden"\n[data]\ndataset = "a/b"\n')
    safe = "a plain name of letters, digits and _.+=- (one directory level)"
    assert got == lines(
        f"""
        s.toml: 3 problems
          name: must be {safe} (got '../escape')
          data.dataset: must be {safe} (got 'a/b')
          logging.run_id: must be {safe} (got '.hidden')
        """
    )


def test_missing_name():
    """`name` is the one required field."""
    assert report("s.toml", "seed = 1\n") == lines(
        """
        s.toml: 1 problem
          name: is required
        """
    )


def test_data_sources():
    """A source must use a known scheme and name something after it."""
    cases = {
        '"s3://bucket/x"': "must start with one of embedded:, url:, file:, hf:, bin: (got 's3://bucket/x')",
        '"embedded:hamlet"': "unknown embedded corpus 'hamlet' (known: shakespeare)",
        '"hf:"': "names nothing after 'hf:' (got 'hf:')",
        '"url:ftp://host/x"': "must be url:http(s)://... (got 'url:ftp://host/x')",
        '"file:nothing/here/*.txt"': "no file matches 'nothing/here/*.txt'",
        '"bin:nothing/here/*.bin"': "no file matches 'nothing/here/*.bin'",
    }
    for value, message in cases.items():
        assert report("s.toml", f'name = "s"\n[data]\nsource = {value}\n') == f"s.toml: 1 problem\n  data.source: {message}"


def test_source_file_that_exists_passes(tmp_path):
    """A file: source that matches a file is fine (and so is a glob that matches one)."""
    write("corpus/a.txt", "hello")
    for source in ("file:corpus/a.txt", "file:corpus/*.txt", "file:corpus/**/*.txt"):
        exp, _ = load_spec(write("s.toml", f'name = "s"\n[data]\nsource = "{source}"\n'))
        assert exp.data.source == source


# ---------------------------------------------------------------------- unknown keys, kinds


def test_unknown_keys_with_and_without_a_suggestion():
    """A typo gets the closest known key; a key like nothing known gets none."""
    got = report("s.toml", 'name = "s"\nsed = 1\n[train]\nmax_iter = 10\nfrobnicate = true\n[wandb]\nproject = \"x\"\n')
    assert got == lines(
        """
        s.toml: 4 problems
          train.max_iter: unknown key (did you mean 'max_iters'?)
          train.frobnicate: unknown key
          sed: unknown key (did you mean 'seed'?)
          wandb: unknown key
        """
    )


def test_unknown_kind_lists_the_known_ones():
    """An unknown kind lists every registered kind of that table, and a typo'd key still gets its suggestion."""
    got = report("s.toml", 'name = "s"\n[schedule]\nkind = "cosin"\nwarmup_iter = 10\n')
    assert got == lines(
        """
        s.toml: 2 problems
          schedule.kind: unknown kind 'cosin' (known: constant, cosine, linear, wsd)
          schedule.warmup_iter: unknown key (did you mean 'warmup_iters'?)
        """
    )


def test_keys_of_another_kind_are_unknown():
    """A field of SGD in an AdamW table is an unknown key (kinds do not share fields by accident)."""
    assert report("s.toml", 'name = "s"\n[optimizer]\nmomentum = 0.9\n') == lines(
        """
        s.toml: 1 problem
          optimizer.momentum: unknown key
        """
    )


# ---------------------------------------------------------------------------- cross-field rules


def test_warmup_longer_than_decay():
    """Warmup must end before the decay does."""
    got = report("s.toml", 'name = "s"\n[schedule]\nwarmup_iters = 3000\ndecay_iters = 2000\n')
    assert got == lines(
        """
        s.toml: 1 problem
          schedule.warmup_iters: 3000 must not exceed schedule.decay_iters (2000)
        """
    )


def test_warmup_longer_than_a_default_decay():
    """The rule holds against a default value as well as a stated one (linear kind)."""
    got = report("s.toml", 'name = "s"\n[schedule]\nkind = "linear"\nwarmup_iters = 700000\n')
    assert got == lines(
        """
        s.toml: 1 problem
          schedule.warmup_iters: 700000 must not exceed schedule.decay_iters (600000)
        """
    )


def test_min_lr_above_lr():
    """The decay's floor cannot be above the peak it decays from."""
    got = report("s.toml", 'name = "s"\n[optimizer]\nlr = 1e-4\n[schedule]\nmin_lr = 1e-3\n')
    assert got == lines(
        """
        s.toml: 1 problem
          schedule.min_lr: 0.001 must not exceed optimizer.lr (0.0001)
        """
    )


def test_wsd_warmup_into_cooldown():
    """A WSD warmup must finish before the cooldown (the last cooldown_fraction of decay_iters) starts."""
    got = report(
        "s.toml", 'name = "s"\n[schedule]\nkind = "wsd"\nwarmup_iters = 900\ndecay_iters = 1000\ncooldown_fraction = 0.2\n'
    )
    assert got == lines(
        """
        s.toml: 1 problem
          schedule.warmup_iters: 900 must not run into the cooldown, which starts at iteration 800 (schedule.decay_iters * schedule.cooldown_fraction)
        """
    )


def test_nesterov_needs_momentum():
    """Nesterov momentum with no momentum is a contradiction."""
    got = report("s.toml", 'name = "s"\n[optimizer]\nkind = "sgd"\nmomentum = 0\nnesterov = true\n')
    assert got == lines(
        """
        s.toml: 1 problem
          optimizer.nesterov: needs optimizer.momentum above 0 (got 0.0)
        """
    )


def test_zero_iterations_only_for_eval():
    """max_iters = 0 trains nothing, which only an eval-only run means."""
    assert report("s.toml", 'name = "s"\n[train]\nmax_iters = 0\n') == lines(
        """
        s.toml: 1 problem
          train.max_iters: must be at least 1 unless train.eval_only is true (got 0)
        """
    )
    exp, _ = load_spec(write("e.toml", 'name = "e"\n[train]\nmax_iters = 0\neval_only = true\n'))
    assert exp.train.max_iters == 0


def test_sha256_pin_needs_a_url_or_file_source():
    """A source_sha256 with nothing to pin is refused."""
    got = report("s.toml", f'name = "s"\n[data]\nsource = "hf:openwebtext"\nsource_sha256 = "{"ab" * 32}"\n')
    assert got == lines(
        """
        s.toml: 1 problem
          data.source_sha256: only applies to a url: or file: source
        """
    )


def test_cross_field_rule_reported_with_problems_elsewhere():
    """A table's cross-field rule is reported even when another table has a problem of its own."""
    got = report("s.toml", 'name = "s"\n[model]\nn_embd = 100\n[schedule]\nwarmup_iters = 5\ndecay_iters = 1\n[train]\nbatch_size = 0\n')
    assert got == lines(
        """
        s.toml: 3 problems
          model.n_embd: 100 must be divisible by model.n_head (12)
          schedule.warmup_iters: 5 must not exceed schedule.decay_iters (1)
          train.batch_size: must be >= 1 (got 0)
        """
    )


# ---------------------------------------------------------------------------- pretrained models


def test_block_size_above_the_pretrained_models():
    """GPT-2's position table has 1024 rows; a spec cannot ask for more."""
    got = report("s.toml", 'name = "s"\n[model]\ninit_from = "gpt2"\nblock_size = 2048\n')
    assert got == lines(
        """
        s.toml: 1 problem
          model.block_size: 2048 must not exceed the pretrained model's (1024)
        """
    )


def test_stated_architecture_contradicting_the_pretrained_model():
    """A stated architecture field must equal the checkpoint's; dropout and a smaller block_size may differ."""
    got = report(
        "s.toml",
        'name = "s"\n[model]\ninit_from = "gpt2-medium"\nn_layer = 12\nbias = false\nblock_size = 256\ndropout = 0.1\n',
    )
    assert got == lines(
        """
        s.toml: 2 problems
          model.n_layer: 12 must equal the pretrained model's (24), or be left out
          model.bias: false must equal the pretrained model's (true), or be left out
        """
    )


def test_pretrained_disagreement_reported_with_problems_elsewhere():
    """A disagreement with the checkpoint does not hide the spec's other problems."""
    got = report("s.toml", 'name = "s"\n[model]\ninit_from = "gpt2"\nblock_size = 4096\n[train]\neval_iters = 0\n')
    assert got == lines(
        """
        s.toml: 2 problems
          model.block_size: 4096 must not exceed the pretrained model's (1024)
          train.eval_iters: must be >= 1 (got 0)
        """
    )


def test_pretrained_architecture_fills_what_the_spec_leaves_out():
    """Left-out architecture fields come from the checkpoint, stated ones that agree are kept."""
    exp, origin = load_spec(write("s.toml", 'name = "s"\n[model]\ninit_from = "gpt2-xl"\nn_head = 25\nblock_size = 512\n'))
    m = exp.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.vocab_size, m.bias) == (48, 25, 1600, 512, 50257, True)
    assert origin.source_of("model.n_layer") == "pretrained gpt2-xl"
    assert origin.source_of("model.n_head") == "s.toml"


def test_architecture_options_stated_against_weights_that_lack_them():
    """GPT-2's weights compute learned positions, LayerNorm, GELU and uncapped logits: a spec that states
    otherwise for them is refused, not built as plain GPT-2 with its options dropped."""
    got = report(
        "s.toml",
        'name = "s"\n[model]\ninit_from = "gpt2"\nposition = "rope"\nnorm = "rmsnorm"\nmlp = "relu2"\n'
        "qk_norm = true\nlogit_softcap = 30.0\nzero_init_residual = true\n",
    )
    assert got == lines(
        """
        s.toml: 5 problems
          model.position: 'rope' must equal the pretrained model's ('learned'), or be left out
          model.norm: 'rmsnorm' must equal the pretrained model's ('layernorm'), or be left out
          model.qk_norm: true must equal the pretrained model's (false), or be left out
          model.mlp: 'relu2' must equal the pretrained model's ('gelu'), or be left out
          model.logit_softcap: 30.0 must equal the pretrained model's (unset), or be left out
        """
    )  # zero_init_residual is how weights start, and these start from GPT-2's: nothing to disagree with


def test_architecture_options_come_from_a_run_that_has_them(tmp_path, monkeypatch):
    """A run's recorded options fill a spec that leaves them out, and a stated default disagrees."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "m" / "1"
    run.mkdir(parents=True)
    model = {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "bias": False,
             "position": "rope", "rope_theta": 500.0, "norm": "rmsnorm", "qk_norm": True, "mlp": "swiglu",
             "logit_softcap": 15.0}
    (run / "manifest.json").write_text(json.dumps({"spec": {"model": model}, "model": {"vocab_size": 65}}), encoding="utf-8")
    exp, origin = load_spec(write("s.toml", f'name = "s"\n[model]\ninit_from = "{run}"\n'))
    m = exp.model
    assert (m.position, m.rope_theta, m.norm, m.qk_norm, m.mlp, m.logit_softcap) == ("rope", 500.0, "rmsnorm", True, "swiglu", 15.0)
    assert origin.source_of("model.position") == f"pretrained {run}"
    got = report("t.toml", f'name = "t"\n[model]\ninit_from = "{run}"\nposition = "learned"\n')
    assert "model.position: 'learned' must equal the pretrained model's ('rope'), or be left out" in got


def test_init_from_a_missing_path():
    """An init_from that is neither a known name nor an existing path says what it accepts."""
    got = report("s.toml", 'name = "s"\n[model]\ninit_from = "checkpoints/none.pt"\n')
    assert got == lines(
        """
        s.toml: 1 problem
          model.init_from: no such file or directory 'checkpoints/none.pt' (or one of 'scratch', 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
        """
    )


def test_init_from_a_missing_path_is_not_checked_when_files_are_not():
    """With check_files=False (resuming a run elsewhere) a missing init_from is not an error."""
    exp, _ = load_spec(write("s.toml", 'name = "s"\n[model]\ninit_from = "gone/model"\n'), check_files=False)
    assert exp.model.init_from == "gone/model"


def hf_config(folder: str, **fields) -> str:
    config = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128, "vocab_size": 300}
    config.update(fields)
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_local_hf_model_dir_fills_the_architecture():
    """A Hugging Face GPT-2 directory's config.json supplies the architecture."""
    hf_config("tiny-gpt2")
    exp, origin = load_spec(write("s.toml", 'name = "s"\n[model]\ninit_from = "tiny-gpt2"\n'))
    m = exp.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.vocab_size) == (2, 2, 64, 128, 300)
    assert origin.source_of("model.vocab_size") == "pretrained tiny-gpt2"


def test_local_hf_model_dir_contradicted():
    """Stated fields are checked against a local config.json as against GPT-2's published sizes."""
    hf_config("tiny-gpt2")
    got = report("s.toml", 'name = "s"\n[model]\ninit_from = "tiny-gpt2"\nn_embd = 128\nblock_size = 256\n')
    assert got == lines(
        """
        s.toml: 2 problems
          model.n_embd: 128 must equal the pretrained model's (64), or be left out
          model.block_size: 256 must not exceed the pretrained model's (128)
        """
    )


def test_local_dir_that_is_not_gpt2():
    """A config.json of another architecture, one lacking a field, or no config at all is named precisely."""
    hf_config("llama", model_type="llama")
    assert report("a.toml", 'name = "a"\n[model]\ninit_from = "llama"\n') == (
        "a.toml: 1 problem\n  model.init_from: 'llama' holds a 'llama' model, not GPT-2 (model.kind = \"llama\" takes it)"
    )
    Path("partial").mkdir()
    Path("partial/config.json").write_text('{"n_layer": 2}', encoding="utf-8")
    assert report("b.toml", 'name = "b"\n[model]\ninit_from = "partial"\n') == (
        "b.toml: 1 problem\n  model.init_from: 'partial/config.json' lacks 'n_head'"
    )
    Path("empty").mkdir()
    assert report("c.toml", 'name = "c"\n[model]\ninit_from = "empty"\n') == (
        "c.toml: 1 problem\n  model.init_from: directory 'empty' holds neither a Hugging Face model "
        "(config.json) nor a run (manifest.json)"
    )


def test_init_from_a_file_that_is_not_a_checkpoint():
    """A file that is not a torch.save zip is refused without torch ever being imported."""
    write("notes.pt", "just text")
    got = report("s.toml", 'name = "s"\n[model]\ninit_from = "notes.pt"\n')
    assert got == "s.toml: 1 problem\n  model.init_from: 'notes.pt' is not a readable checkpoint (File is not a zip file)"


# ------------------------------------------------------------------------------------ files


def test_file_that_is_not_toml_gives_the_line():
    """A TOML syntax error names the file and the parser's line and column."""
    got = report("bad.toml", 'name = "bad"\n[model]\nn_layer = = 3\n')
    assert got == "bad.toml: not valid TOML: Invalid value (at line 3, column 11)"


def test_empty_file():
    """An empty file (or one of comments only) is no spec."""
    assert report("empty.toml", "") == "empty.toml: is empty: a spec needs at least `name`"
    assert report("comments.toml", "# nothing yet\n") == "comments.toml: is empty: a spec needs at least `name`"


def test_missing_file_directory_and_undecodable_file():
    """A spec that is not there, a folder, or not UTF-8 is reported in one line each."""
    assert report("nowhere.toml") == "nowhere.toml: file not found"
    Path("folder.toml").mkdir()
    assert report("folder.toml") == "folder.toml: cannot be read: it is a directory, not a regular file"
    Path("latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    assert report("latin1.toml").startswith("latin1.toml: cannot be read: 'utf-8' codec can't decode byte 0xe9")


# ---------------------------------------------------------------------------------- extends


def test_extends_a_missing_file():
    """A missing base is named relative to where the user can find it."""
    got = report("exp/s.toml", 'name = "s"\nextends = "base/gone.toml"\n')
    assert got == lines(
        """
        exp/s.toml: 1 problem
          extends: exp/base/gone.toml: file not found
        """
    )


def test_extends_cycle_of_two():
    """a -> b -> a is reported as a cycle, naming the chain."""
    write("b.toml", 'extends = "a.toml"\n')
    got = report("a.toml", 'name = "a"\nextends = "b.toml"\n')
    assert got == lines(
        """
        a.toml: 1 problem
          extends: b.toml: cycle: a.toml -> b.toml -> a.toml
        """
    )


def test_extends_itself():
    """A file that extends itself is a cycle of one."""
    assert report("a.toml", 'name = "a"\nextends = "a.toml"\n') == lines(
        """
        a.toml: 1 problem
          extends: cycle: a.toml -> a.toml
        """
    )


def test_extends_of_the_wrong_type():
    """extends is a path or an array of paths."""
    assert report("a.toml", 'name = "a"\nextends = 3\n') == lines(
        """
        a.toml: 1 problem
          extends: must be a path or an array of paths (got 3)
        """
    )


def test_base_that_is_not_toml():
    """A syntax error in a base names that base, with its line."""
    write("base.toml", "[model\n")
    got = report("a.toml", 'name = "a"\nextends = "base.toml"\n')
    assert got == "a.toml: base.toml: not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)"


def test_extends_list_merges_in_order():
    """Bases merge left to right, the file itself last; tables merge key by key, arrays replace."""
    write("base/one.toml", '[model]\nn_layer = 1\nn_head = 1\n[optimizer]\nbetas = [0.1, 0.2]\nlr = 0.1\n')
    write("base/two.toml", '[model]\nn_layer = 2\n[optimizer]\nbetas = [0.3, 0.4]\n')
    exp, origin = load_spec(write("s.toml", 'name = "s"\nextends = ["base/one.toml", "base/two.toml"]\n[model]\nn_embd = 8\n'))
    assert (exp.model.n_layer, exp.model.n_head, exp.model.n_embd) == (2, 1, 8)
    assert exp.optimizer.betas == (0.3, 0.4) and exp.optimizer.lr == 0.1
    assert origin.files == ("s.toml", "base/one.toml", "base/two.toml")
    assert origin.source_of("model.n_layer") == "base/two.toml"
    assert origin.source_of("model.n_head") == "base/one.toml"
    assert origin.source_of("model.n_embd") == "s.toml"


def test_extends_resolves_relative_to_each_file():
    """A base's own extends is relative to the base, not to the spec or the working directory."""
    write("lib/deep/root.toml", "seed = 7\n")
    write("lib/mid.toml", 'extends = "deep/root.toml"\n')
    exp, origin = load_spec(write("exp/s.toml", 'name = "s"\nextends = "../lib/mid.toml"\n'))
    assert exp.seed == 7
    assert origin.files == ("exp/s.toml", "lib/mid.toml", "lib/deep/root.toml")


def test_kind_change_replaces_the_table():
    """Changing a component's kind drops the base's fields of the old kind instead of reporting them."""
    write("base.toml", '[optimizer]\nkind = "sgd"\nmomentum = 0.5\nnesterov = true\nlr = 0.3\n')
    exp, _ = load_spec(write("s.toml", 'name = "s"\nextends = "base.toml"\n[optimizer]\nkind = "adamw"\n'))
    assert exp.optimizer.kind == "adamw" and exp.optimizer.lr == 6e-4
    exp, _ = load_spec(write("t.toml", 'name = "t"\nextends = "base.toml"\n[optimizer]\nlr = 0.2\n'))
    assert (exp.optimizer.kind, exp.optimizer.momentum, exp.optimizer.lr) == ("sgd", 0.5, 0.2)


def test_value_from_a_base_names_the_base():
    """A bad value set in a base file says where it was set."""
    write("base/b.toml", '[model]\nn_layer = 0\n[optimizer]\nbetas = [0.9, 2.0]\nbetaz = 1\n[logging]\nbogus = true\n')
    got = report("s.toml", 'name = "s"\nextends = "base/b.toml"\n')
    assert got == lines(
        """
        s.toml: 4 problems
          model.n_layer: must be >= 1 (got 0) (set in base/b.toml)
          optimizer.betas[1]: must be < 1.0 (got 2.0) (set in base/b.toml)
          optimizer.betaz: unknown key (did you mean 'betas'?) (set in base/b.toml)
          logging.bogus: unknown key (set in base/b.toml)
        """
    )


def test_cross_field_rule_across_files_names_the_base():
    """A cross-field problem whose value comes from a base says so."""
    write("base.toml", '[schedule]\nmin_lr = 0.5\n')
    got = report("s.toml", 'name = "s"\nextends = "base.toml"\n[optimizer]\nlr = 0.1\n')
    assert got == lines(
        """
        s.toml: 1 problem
          schedule.min_lr: 0.5 must not exceed optimizer.lr (0.1) (set in base.toml)
        """
    )


def test_text_specs_cannot_extend():
    """A spec given as text has no folder to resolve extends against."""
    with pytest.raises(SpecError) as e:
        loads_spec('name = "x"\nextends = "base.toml"\n', source="manifest.json")
    assert e.value.report() == "manifest.json: 1 problem\n  extends: is not allowed in a spec given as text"


# -------------------------------------------------------------------------------- overrides


def test_override_of_an_unknown_key():
    """A typo in an override is reported like one in the file, and says it came from the override."""
    got = report("s.toml", 'name = "s"\n', overrides=("train.max_iter=100",))
    assert got == lines(
        """
        s.toml: 1 problem
          train.max_iter: unknown key (did you mean 'max_iters'?) (override train.max_iter=100)
        """
    )


def test_override_of_an_unknown_table():
    """An override that invents a table is reported at that table, naming the override."""
    got = report("s.toml", 'name = "s"\n', overrides=("trian.max_iters=100",))
    assert got == lines(
        """
        s.toml: 1 problem
          trian: unknown key (did you mean 'train'?) (override trian.max_iters=100)
        """
    )


def test_override_with_a_value_of_the_wrong_type():
    """A value that is not TOML is a string, and a string is no integer."""
    got = report("s.toml", 'name = "s"\n', overrides=("train.max_iters=lots", "optimizer.betas=[0.9,x]"))
    assert got == lines(
        """
        s.toml: 2 problems
          optimizer.betas: must be an array (got '[0.9,x]') (override optimizer.betas=[0.9,x])
          train.max_iters: must be an integer (got 'lots') (override train.max_iters=lots)
        """
    )


def test_override_into_a_value():
    """An override cannot reach inside a value that is not a table."""
    got = report("s.toml", 'name = "s"\n', overrides=("name.first=x",))
    assert got == lines(
        """
        s.toml: 1 problem
          name.first: override 'name.first=x': name is not a table
        """
    )


def test_override_replacing_a_table_with_a_value():
    """A table cannot be overridden by a plain value."""
    got = report("s.toml", 'name = "s"\n[model]\nn_layer = 2\n', overrides=("model=3",))
    assert got == lines(
        """
        s.toml: 1 problem
          model: override 'model=3': model is a table, not a value
        """
    )


def test_override_that_is_not_key_value():
    """A word without a proper dotted key before '=' is refused as such."""
    for word in ("=3", "a..b=1", ".x=1"):
        assert report("s.toml", 'name = "s"\n', overrides=(word,)) == f"s.toml: override {word!r} must be dotted.key=value"


def test_override_problem_in_a_cross_field_rule():
    """A cross-field problem caused by an override names that override."""
    got = report("s.toml", 'name = "s"\n', overrides=("schedule.warmup_iters=700000",))
    assert got == lines(
        """
        s.toml: 1 problem
          schedule.warmup_iters: 700000 must not exceed schedule.decay_iters (600000) (override schedule.warmup_iters=700000)
        """
    )


def fake_checkpoint(path: str, header: dict) -> str:
    """A file laid out like torch.save's zip (`<name>/data.pkl`) holding plain data: no torch needed."""
    import pickle
    import zipfile

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ckpt/data.pkl", pickle.dumps(header, protocol=2))
    return path


def test_init_from_a_nanogpt_checkpoint_reads_model_args():
    """A nanoGPT checkpoint's model_args supply the architecture, read without unpickling weights."""
    args = {"n_layer": 3, "n_head": 2, "n_embd": 32, "block_size": 64, "vocab_size": 65, "bias": False}
    fake_checkpoint("out/ckpt.pt", {"model_args": args, "iter_num": 5})
    exp, origin = load_spec(write("s.toml", 'name = "s"\n[model]\ninit_from = "out/ckpt.pt"\n'))
    m = exp.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.vocab_size, m.bias) == (3, 2, 32, 64, 65, False)
    assert origin.source_of("model.bias") == "pretrained out/ckpt.pt"


def test_init_from_a_checkpoint_with_code_in_it_is_refused():
    """A checkpoint whose pickle names anything but plain data and torch is refused, not executed."""
    import os

    fake_checkpoint("evil.pt", {"model_args": {"n_layer": 1}, "payload": os.system})
    got = report("s.toml", 'name = "s"\n[model]\ninit_from = "evil.pt"\n')
    assert got == (
        "s.toml: 1 problem\n  model.init_from: refuses to unpickle posix.system: "
        "only weights and plain data may be in a checkpoint"
    )


def test_init_from_a_run_dir_reads_its_manifest():
    """A run directory (or a checkpoint inside it) takes its architecture from the run's manifest."""
    Path("runs/r/1/checkpoints").mkdir(parents=True)
    manifest = {"spec": {"model": {"kind": "gpt", "n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32}},
                "model": {"vocab_size": 65}}
    Path("runs/r/1/manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    Path("runs/r/1/checkpoints/ckpt_000010.pt").write_bytes(b"not read at all")
    for init_from in ("runs/r/1", "runs/r/1/checkpoints/ckpt_000010.pt"):
        exp, _ = load_spec(write("s.toml", f'name = "s"\n[model]\ninit_from = "{init_from}"\n'))
        assert (exp.model.n_layer, exp.model.n_head, exp.model.block_size, exp.model.vocab_size) == (2, 4, 32, 65)
    got = report("t.toml", 'name = "t"\n[model]\ninit_from = "runs/r/1"\nblock_size = 64\n')
    assert got == "t.toml: 1 problem\n  model.block_size: 64 must not exceed the pretrained model's (32)"


def test_random_split_of_the_embedded_stream():
    """The embedded corpus is one stream, so a random document split is refused at check time."""
    got = report(
        "emb.toml",
        """
        name = "emb"
        [data]
        source = "embedded:shakespeare"
        split = "random"
        """,
    )
    assert got == lines(
        """
        emb.toml: 1 problem
          data.split: 'random' shuffles documents, but 'embedded:shakespeare' is one stream of text: use split = "contiguous"
        """
    )
